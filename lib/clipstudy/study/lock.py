"""Advisory locks (``fcntl.flock``): one sweep per output folder, held for the whole sweep; one publisher at a
time per results bundle; one report build at a time per report folder."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = ".sweep.lock"


class FolderBusy(RuntimeError):
    """Another sweep holds the folder's lock."""


class LocksUnsupported(OSError):
    """The file system of the folder cannot lock files (some network file systems)."""


class SweepLock:
    """Hold ``folder/.sweep.lock`` while a sweep runs. A second sweep on the same folder refuses at once,
    naming the holder's process id, or (``wait=True``) waits for it. The lock dies with its process, so
    a killed sweep never leaves the folder locked."""

    def __init__(self, folder: Path, wait: bool = False, name: str = LOCK_NAME, holder: str = "sweep"):
        self.path = Path(folder) / name
        self.wait = wait
        self.holder = holder
        self.fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    holder = self.path.read_text().strip() or "unknown"
                    os.close(self.fd)
                    raise FolderBusy(
                        f"another {self.holder} (process {holder}) is running in {self.path.parent}; wait for "
                        "it to finish (or pass --wait), or stop that process"
                    ) from None
                time.sleep(1.0)
            except OSError as exc:
                os.close(self.fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise LocksUnsupported(
                        exc.errno,
                        f"cannot lock {self.path}: its file system does not support file locks "
                        f"({exc.strerror}); put the folder on a local disk (for a sweep: --reports PATH)",
                    ) from None
                raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        return False
