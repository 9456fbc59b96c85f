"""Result files written so that a reader never sees half of one: write to a temporary name beside
the target, then rename; a failed write leaves whatever was there before."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_target(path: str | Path, mode: int = 0o644):
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(value):
    """``value`` with NumPy scalars made plain and non-finite floats made ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json_atomic(obj, path: str | Path) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=True))


def write_parquet_atomic(df, path: str | Path) -> None:
    with atomic_target(path) as tmp:
        df.to_parquet(tmp, index=False)


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """What identifies a file's contents without reading it: its resolved path, size and modification time
    (nanoseconds). The per-process caches of data files (``data.mnist``, ``data.tfds_builder``) key on it."""
    path = Path(path)
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


#: The errors of a full disk (or an exhausted quota): they end a sweep or a report build, naming the folder.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def naming_full_disk(what: str, where: Path):
    """Re-raise a full disk's ``OSError`` that names no file (a failed ``write``) with what was being written
    and the folder, so that the one line of error a command prints says where space ran out."""
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL and not exc.filename:
            raise OSError(exc.errno, f"{exc.strerror} while {what}", str(where)) from exc
        raise
