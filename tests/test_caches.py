"""Every cache a process keeps is one ``caches.ProcessCache``: named, bounded (oldest out first), listed, cleared."""

import threading

import pytest

from clipstudy import caches


def test_a_cache_keeps_at_most_its_entries_dropping_the_oldest_first():
    c = caches.ProcessCache("test fifo", 2, "numbers")
    for k in "abc":
        c.put(k, ord(k))
    assert c.keys() == ["b", "c"] and "a" not in c and c.get("c") == 99
    c.put("b", 0)  # put again: it is the newest now
    c.put("d", 1)
    assert c.keys() == ["b", "d"] and c.pop("b") == 0 and c.pop("b", "gone") == "gone"


def test_every_cache_of_the_study_is_listed_and_cleared_in_one_place():
    import clipstudy.data.mnist  # noqa: F401  (each module registers its cache when imported)
    import clipstudy.tasks.adding  # noqa: F401
    import clipstudy.tasks.detection.task  # noqa: F401
    import clipstudy.training.step  # noqa: F401

    names = {row["name"] for row in caches.listing()}
    assert {"mnist", "adding", "detector targets", "compiled steps"} <= names
    assert all(row["entries"] <= row["max_entries"] for row in caches.listing())
    caches.cache("adding").put((1, 2, 3), "x")
    caches.clear_all()
    assert all(row["entries"] == 0 for row in caches.listing())
    with pytest.raises(KeyError, match="no process cache 'nope'; there are: "):
        caches.cache("nope")


def test_threads_putting_at_once_never_exceed_the_bound():
    c = caches.ProcessCache("test threads", 5, "numbers")
    threads = [threading.Thread(target=lambda i=i: [c.put((i, j), j) for j in range(200)]) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(c) == 5
