"""A run's platform: the record of what decides its bits (the processor, the instruction set oneDNN
dispatched to, TensorFlow's settings and the library versions), which every run's summary keeps.

TensorFlow's CPU kernels (oneDNN's, and Eigen's) choose their instructions and their blocking from the
processor they run on, so the order of floating-point sums, and with it the last bit of a gradient, depends
on the CPU; a training trajectory then amplifies that bit. Two runs of the same parameters and seed are
expected to be bit-identical only when their :func:`current` platform records agree on every field of
:data:`BITS_FIELDS`. :func:`differences` says which fields disagree, and treats a field that a run did not
record (runs made before this module existed record the CPU's model name, the versions and the thread counts
only) as unknown rather than equal.

No TensorFlow is imported here: the instruction set is read from oneDNN's own verbose report, in a
subprocess, once per machine and setting, and cached (:func:`onednn_isa`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

from clipstudy.fileio import atomic_target

#: CPU flags that change which kernels oneDNN and Eigen can use.
ISA_FLAGS = (
    "sse4_1",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

#: Environment variables that change TensorFlow's CPU kernels (unset: its defaults). Not OMP_NUM_THREADS:
#: TensorFlow's oneDNN runs on TensorFlow's own thread pools (its report says ``runtime:threadpool``), and Dask
#: workers set that variable, so runs made by a sweep would look like another platform than a verify's.
SETTINGS_ENV = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TF_DETERMINISTIC_OPS")

#: The fields two runs must share to be expected bit-identical.
BITS_FIELDS = (
    "cpu_vendor",
    "cpu_model_name",
    "cpu_family",
    "cpu_model",
    "cpu_flags",
    "cpu_caches",
    "onednn",
    "onednn_isa",
    "settings",
    "intra_op_threads",
    "inter_op_threads",
    "python",
    "tensorflow",
    "keras",
    "numpy",
    "machine",
    "system",
)


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of ``/proc/cpuinfo`` (empty off Linux)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _caches() -> str:
    """Cache sizes by level and type, as the kernel reports them (Eigen sizes its blocks from them)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    found = []
    for index in sorted(root.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        found.append(f"L{level}{kind[0].lower()} {size}")
    return ", ".join(found)


def cpu() -> dict[str, str]:
    """The processor: vendor, model name, family and model numbers, the ISA flags it has, its caches."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "cpu_vendor": info.get("vendor_id", platform.processor() or "unknown"),
        "cpu_model_name": info.get("model name", platform.processor() or platform.machine()),
        "cpu_family": info.get("cpu family", ""),
        "cpu_model": info.get("model", ""),
        "cpu_flags": " ".join(f for f in ISA_FLAGS if f in flags),
        "cpu_caches": _caches(),
    }


def settings() -> dict[str, str]:
    """The environment variables of :data:`SETTINGS_ENV` that are set, with their values."""
    return {k: os.environ[k] for k in SETTINGS_ENV if k in os.environ}


def onednn_enabled() -> bool:
    """Whether TensorFlow uses its oneDNN kernels: on by default on x86-64 Linux, off with TF_ENABLE_ONEDNN_OPTS=0."""
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if value is not None:
        return value.strip().lower() in ("1", "true")
    return platform.machine() in ("x86_64", "AMD64") and platform.system() == "Linux"


_ISA_NAMES = (  # oneDNN's verbose description -> its short ISA name; the first that matches wins
    (r"AMX.*float16|float16.*AMX", "avx512_core_amx_fp16"),
    (r"AMX", "avx512_core_amx"),
    (r"AVX-512.*bfloat16", "avx512_core_bf16"),
    (r"AVX-512.*DL Boost", "avx512_core_vnni"),
    (r"AVX-512", "avx512_core"),
    (r"AVX2.*DL Boost", "avx2_vnni"),
    (r"AVX2", "avx2"),
    (r"AVX", "avx"),
    (r"SSE4\.1", "sse41"),
)


def isa_name(description: str) -> str:
    """oneDNN's verbose ISA description (``isa:Intel AVX2``) as its short name (``avx2``)."""
    for pattern, name in _ISA_NAMES:
        if re.search(pattern, description):
            return name
    return description.strip() or "unknown"


_PROBE = """
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
x = tf.ones((1, 8, 8, 2))
k = tf.ones((3, 3, 2, 4))
tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))(x, k).numpy()
"""


def _probe_onednn() -> str:
    """Ask oneDNN itself which ISA it dispatches to: a tiny convolution with ONEDNN_VERBOSE=1 in a subprocess."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({type(exc).__name__})"
    match = re.search(r"onednn_verbose,.*?info,cpu,isa:(.*)", out) or re.search(r"dnnl_verbose,info,cpu,isa:(.*)", out)
    return isa_name(match.group(1)) if match else "unknown (no oneDNN report)"


def _cache_dirs() -> list[Path]:
    """Where the measured ISA is kept: the user's cache folder, then (when that cannot be written) a folder of
    this user's in the system's temporary directory."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipstudy"
    return [base, Path(tempfile.gettempdir()) / f"clipstudy-{os.getuid() if hasattr(os, 'getuid') else 'user'}"]


def _cache_file(key: str) -> Path:
    return _cache_dirs()[0] / f"onednn-isa-{key}.json"


#: The ISA names a cache file may hold (``isa_name``'s results).
KNOWN_ISAS = frozenset(name for _, name in _ISA_NAMES)


def _read_cached(path: Path) -> str | None:
    """The ISA a cache file holds, or None when there is none; a file that is not what this module writes (not
    JSON, not an object, an unknown ISA) is named in a warning and measured again."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        isa = json.loads(text).get("onednn_isa")
    except (ValueError, AttributeError):
        isa = None
    if isinstance(isa, str) and isa in KNOWN_ISAS:
        return isa
    warnings.warn(f"{path}: not a oneDNN ISA record ({text[:60]!r}); measuring the ISA again", stacklevel=3)
    return None


def _write_cached(key: str, isa: str) -> None:
    for folder in _cache_dirs():
        cache = folder / f"onednn-isa-{key}.json"
        try:
            with atomic_target(cache) as tmp:
                tmp.write_text(json.dumps({"onednn_isa": isa}))
            return
        except OSError as exc:
            warnings.warn(
                f"cannot keep the measured oneDNN ISA in {folder} ({exc.strerror or exc}); "
                + ("trying the temporary directory" if folder == _cache_dirs()[0] else "it is measured on every run"),
                stacklevel=3,
            )


def onednn_isa() -> str:
    """The instruction set oneDNN dispatches to on this machine with the current settings (``"off"`` when
    TensorFlow's oneDNN kernels are disabled). Measured once per CPU, setting and TensorFlow version, then
    read from a small cache file (validated on read; kept in the temporary directory when the cache folder
    cannot be written)."""
    if not onednn_enabled():
        return "off"
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = "?"
    key = hashlib.sha256(json.dumps([cpu(), settings(), tf_version], sort_keys=True).encode()).hexdigest()[:16]
    for folder in _cache_dirs():
        isa = _read_cached(folder / f"onednn-isa-{key}.json")
        if isa is not None:
            return isa
    isa = _probe_onednn()
    if not isa.startswith("unknown"):
        _write_cached(key, isa)
    return isa


def current(versions: dict | None = None, threads: dict | None = None) -> dict[str, str]:
    """Everything that decides a run's bits on this machine. ``versions`` (python, tensorflow, keras,
    numpy, machine, system) and ``threads`` (intra_op, inter_op) come from the caller, which has
    TensorFlow imported; the rest is read here."""
    versions = versions or {}
    threads = threads or {}
    fp = {
        **cpu(),
        "onednn": "on" if onednn_enabled() else "off",
        "onednn_isa": onednn_isa(),
        "settings": json.dumps(settings(), sort_keys=True),
    }
    for k in ("python", "tensorflow", "keras", "numpy", "machine", "system"):
        if k in versions:
            fp[k] = str(versions[k])
    if "intra_op" in threads:
        fp["intra_op_threads"] = str(threads["intra_op"])
    if "inter_op" in threads:
        fp["inter_op_threads"] = str(threads["inter_op"])
    return fp


def recorded(summary: dict) -> dict[str, str]:
    """The platform a run's summary records: its ``platform`` block, or for runs made before it existed,
    what their ``versions`` and ``threads`` say (model name, versions, thread counts)."""
    if summary.get("platform"):
        return dict(summary["platform"])
    versions = summary.get("versions") or {}
    threads = summary.get("threads") or {}
    fp = {"cpu_model_name": versions.get("cpu")}
    for k in ("python", "tensorflow", "keras", "numpy", "machine", "system"):
        fp[k] = versions.get(k)
    fp["intra_op_threads"] = str(threads["intra_op"]) if "intra_op" in threads else None
    fp["inter_op_threads"] = str(threads["inter_op"]) if "inter_op" in threads else None
    return {k: str(v) for k, v in fp.items() if v is not None}


def differences(recorded_fp: dict, other: dict) -> tuple[list[str], list[str]]:
    """``(differ, unknown)``: the fields of :data:`BITS_FIELDS` whose values differ (``field: a != b``),
    and those that either side did not record."""
    differ, unknown = [], []
    for field in BITS_FIELDS:
        if field not in recorded_fp or field not in other:
            unknown.append(field)
            continue
        a, b = str(recorded_fp[field]), str(other[field])
        if field == "settings":  # only the variables that change kernels (records may hold others)
            a, b = _kernel_settings(a), _kernel_settings(b)
        if a != b:
            differ.append(f"{field}: {recorded_fp[field]!r} != {other[field]!r}")
    return differ, unknown


def _kernel_settings(text: str) -> str:
    try:
        values = json.loads(text)
    except ValueError:
        return text
    return json.dumps({k: v for k, v in values.items() if k in SETTINGS_ENV}, sort_keys=True)


def describe(fp: dict) -> str:
    """One line naming a platform: CPU, its oneDNN ISA, threads."""
    name = fp.get("cpu_model_name", "?")
    isa = fp.get("onednn_isa")
    threads = fp.get("intra_op_threads")
    return name + (f", oneDNN {isa}" if isa else "") + (f", {threads} thread(s)" if threads else "")


if __name__ == "__main__":  # python -m clipstudy.platforms: this machine's platform
    print(
        json.dumps(
            current({"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()}),
            indent=1,
        )
    )
