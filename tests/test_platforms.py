"""A run's platform record: what decides a run's bits, read on this machine and compared field by field."""

import pytest

from clipstudy import platforms


def test_the_instruction_set_is_what_onednn_itself_reports_and_follows_its_cap(tmp_path, monkeypatch):
    """The ISA is read from oneDNN's own verbose report; capping it with ONEDNN_MAX_CPU_ISA=AVX (which
    every AVX2 machine can run) must make oneDNN report AVX, whatever this CPU is."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX")
    assert platforms.onednn_isa() == "avx"
    assert len(list((tmp_path / "clipstudy").iterdir())) == 1  # measured once, then cached
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert platforms.onednn_isa() == "off"


@pytest.mark.parametrize(
    "description, name",
    [
        ("Intel AVX2", "avx2"),
        ("Intel AVX", "avx"),
        ("Intel AVX2 with Intel DL Boost", "avx2_vnni"),
        ("Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions", "avx512_core"),
        ("Intel AVX-512 with Intel DL Boost", "avx512_core_vnni"),
        ("Intel AVX-512 with Intel DL Boost and bfloat16 support", "avx512_core_bf16"),
        (
            "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit "
            "integer support",
            "avx512_core_amx_fp16",
        ),
    ],
)
def test_onednn_descriptions_map_to_its_isa_names(description, name):
    # the descriptions oneDNN 3.x prints (src/cpu/x64/cpu_isa_traits.hpp), by hand
    assert platforms.isa_name(description) == name


def test_the_platform_record_names_this_cpu_and_settings(monkeypatch):
    for name in platforms.SETTINGS_ENV:  # e.g. TF_DETERMINISTIC_OPS, which enabling op determinism sets
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    fp = platforms.current({"tensorflow": "2.21.0"}, {"intra_op": 1, "inter_op": 1})
    line = next(x for x in open("/proc/cpuinfo") if x.startswith("flags"))
    assert fp["cpu_flags"].split() == [f for f in platforms.ISA_FLAGS if f in line.split(":", 1)[1].split()]
    assert "avx2" in fp["cpu_flags"].split()
    assert fp["settings"] == '{"ONEDNN_MAX_CPU_ISA": "AVX2"}'
    assert fp["intra_op_threads"] == "1" and fp["tensorflow"] == "2.21.0"


def test_platforms_differ_by_field_and_an_old_record_leaves_fields_unknown():
    here = {f: "x" for f in platforms.BITS_FIELDS}
    assert platforms.differences(dict(here), here) == ([], [])
    there = {**here, "onednn_isa": "avx512_core", "intra_op_threads": "2"}
    differ, unknown = platforms.differences(there, here)
    assert differ == ["onednn_isa: 'avx512_core' != 'x'", "intra_op_threads: '2' != 'x'"] and unknown == []
    # a summary written before the platform block: model name, versions, threads only
    old = {
        "versions": {
            "cpu": "x",
            "python": "x",
            "tensorflow": "x",
            "keras": "x",
            "numpy": "x",
            "machine": "x",
            "system": "x",
        },
        "threads": {"intra_op": "x", "inter_op": "x"},
    }
    differ, unknown = platforms.differences(platforms.recorded(old), here)
    assert differ == [] and set(unknown) == {
        "cpu_vendor",
        "cpu_family",
        "cpu_model",
        "cpu_flags",
        "cpu_caches",
        "onednn",
        "onednn_isa",
        "settings",
    }
    assert platforms.recorded({"platform": there}) == there


def test_a_run_records_its_platform(mnist_splits):
    from clipstudy import tasks
    from clipstudy.training import RunConfig, train

    config = RunConfig.for_task("classifier", method="none", epochs=1, train_subset=256, test_subset=100, seed=0)
    task = tasks.for_config(config)
    result = train(config, task, mnist_splits, progress=False)
    fp = result.summary["platform"]
    assert set(platforms.BITS_FIELDS) <= set(fp)
    assert fp["onednn_isa"] == platforms.onednn_isa() and fp["cpu_model_name"] == platforms.cpu()["cpu_model_name"]
    assert fp["tensorflow"] == result.summary["versions"]["tensorflow"]


def test_variables_that_do_not_change_kernels_do_not_make_another_platform():
    here = {f: "x" for f in platforms.BITS_FIELDS}
    recorded = {**here, "settings": '{"OMP_NUM_THREADS": "1"}'}  # what a run made by a Dask worker recorded
    assert platforms.differences(recorded, {**here, "settings": "{}"}) == ([], [])
    other = {**here, "settings": '{"ONEDNN_MAX_CPU_ISA": "AVX"}'}
    assert platforms.differences(other, {**here, "settings": "{}"})[0][0].startswith("settings:")


def _one_cache(tmp_path, monkeypatch):
    """A cache folder of its own, the oneDNN probe replaced by a counter (the real one starts TensorFlow)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(platforms.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    probes = []
    monkeypatch.setattr(platforms, "_probe_onednn", lambda: probes.append(1) or "avx2")
    return probes


@pytest.mark.parametrize("content", ["[1, 2]", "not json", '{"onednn_isa": "avx9000"}', '{"onednn_isa": 3}'])
def test_a_malformed_isa_cache_is_named_measured_again_and_rewritten(tmp_path, monkeypatch, content):
    """Valid JSON that is not an object used to fail every run after training without naming the file, and a
    wrong value was trusted; now the file is named, the ISA measured again and the file rewritten."""
    probes = _one_cache(tmp_path, monkeypatch)
    assert platforms.onednn_isa() == "avx2" and len(probes) == 1
    (cache,) = (tmp_path / "cache" / "clipstudy").iterdir()
    cache.write_text(content)
    with pytest.warns(UserWarning, match=rf"{cache.name}: not a oneDNN ISA record .* measuring the ISA again"):
        assert platforms.onednn_isa() == "avx2"
    assert len(probes) == 2 and platforms.onednn_isa() == "avx2" and len(probes) == 2  # rewritten, then read


def test_an_unwritable_cache_folder_falls_back_to_the_temporary_directory_with_one_warning(tmp_path, monkeypatch):
    """An unwritable cache location re-probed on every run (+6 s a run); now the ISA is kept in a folder of
    the temporary directory, with one warning, and read from there."""
    probes = _one_cache(tmp_path, monkeypatch)
    (tmp_path / "cache").write_text("a file where the folder should be")  # mkdir fails, whoever runs the test
    with pytest.warns(UserWarning, match="cannot keep the measured oneDNN ISA in .* trying the temporary directory"):
        assert platforms.onednn_isa() == "avx2"
    assert platforms.onednn_isa() == "avx2" and len(probes) == 1
    assert len(list((tmp_path / "tmp").iterdir())) == 1
