"""One writer per output folder: an exclusive, advisory lock on ``OUTDIR/.lock``.

    with OutdirLock(outdir, argv):    # ValueError naming the holder when another run has it
        ...write into outdir...

The lock is ``flock(2)`` on the lock file, so the kernel drops it when its holder dies (kill -9,
a crashed node's NFS client lease): a stale lock never blocks the rerun, and no pid guessing is
needed. The holder writes who it is (host, pid, start time, command) into the file, so a refused
run can name it. On release the file is removed; a process that opened the old file just before
(and so locked a removed inode) sees that the path no longer is its file and tries again.
Under torchrun rank 0 alone takes it, for the whole job (``main.py``).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"


class OutdirLock:
    def __init__(self, outdir: str | os.PathLike, argv: list[str]):
        self.path = Path(outdir) / LOCK_FILE
        self.argv = list(argv)
        self.fd: int | None = None

    def acquire(self) -> None:
        """Create the folder if needed and take the lock; ValueError when another live run holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create --outdir {self.path.parent} ({err.strerror}); "
                             "pass a folder you can write to") from err
        for _ in range(100):  # only a release racing with us makes a second round
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise ValueError(f"cannot write to --outdir {self.path.parent} ({err.strerror}); "
                                 "pass a folder you can write to") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ValueError(f"{self.path.parent} is being written by another run ({self.holder()}); "
                                 "one run per output folder: wait for it to finish or use another --outdir") from None
            if self._is_current(fd):
                self.fd = fd
                self._write_holder()
                return
            os.close(fd)  # we locked a file its holder removed on release; lock the new one
        raise RuntimeError(f"could not lock {self.path}: it was replaced 100 times in a row")

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _write_holder(self) -> None:
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": self.argv}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(record) + "\n").encode(), 0)

    def holder(self) -> str:
        """Who holds the lock, in words (from the lock file)."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            return (f"pid {record['pid']} on {record['host']}, started {record['started']}: "
                    f"main.py {' '.join(record['argv'])}")
        except (OSError, ValueError, KeyError, TypeError):
            return "holder not yet recorded"

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: nobody can have locked the path's file
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "OutdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
