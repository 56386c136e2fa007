"""One recorder per data directory: two writing the same folder would store candles twice."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from kline_tui.store import layout

__all__ = ["DataDirError", "DataDirLock", "lock_holder"]


class DataDirError(Exception):
    """The data directory cannot be used; the message says why and what to do."""


class DataDirLock:
    """An exclusive lock on `<data_dir>/.kline-tui/.lock`, held while recording.

    Taking it also clears what killed writers left half-written in staging (never the files of
    a `backfill`, `import` or `verify --repair` running beside: see `layout.staged`), and moves
    an earlier version's bookkeeping (`.lock`, `.staging/`, `.quarantine/`) into `.kline-tui/`.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """This process holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (unless held already), or raise DataDirError saying who holds it or why
        the folder is unusable."""
        if self._fd is not None:
            return
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = layout.lock_fd(self.data_dir, "lock")
        except OSError as exc:
            raise DataDirError(
                f"cannot use data directory {self.data_dir}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirError(
                f"another kline-tui (pid {owner}) is recording into {self.data_dir}; "
                "stop it or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        try:
            self._migrate()
            layout.clear_staging(self.data_dir)
        except DataDirError:
            self.release()
            raise
        except OSError as exc:
            self.release()
            raise DataDirError(
                f"cannot use data directory {self.data_dir}: {exc.strerror or exc}"
            ) from None

    def _migrate(self) -> None:
        """Move an earlier version's bookkeeping out of the way of `pl.scan_parquet(data_dir)`."""
        old_lock = self.data_dir / layout.LEGACY_LOCK
        if old_lock.is_file():
            fd = os.open(old_lock, os.O_RDWR)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
                    raise DataDirError(
                        f"an earlier kline-tui (pid {owner}) is recording into {self.data_dir}; "
                        "stop it first"
                    ) from None
                old_lock.unlink()
            finally:
                os.close(fd)
        old_staging = self.data_dir / layout.LEGACY_STAGING
        if old_staging.is_dir():
            for entry in old_staging.iterdir():
                if entry.name.endswith((".tmp", ".lock")):
                    entry.unlink(missing_ok=True)
                elif entry.name.startswith("probe-") and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
            # `compacting/` may hold an interrupted compaction: the next compaction finishes it.
            _remove_if_empty(old_staging)
        old_quarantine = self.data_dir / layout.LEGACY_QUARANTINE
        if old_quarantine.is_dir():
            target = layout.quarantine_dir(self.data_dir)
            target.mkdir(parents=True, exist_ok=True)
            for entry in old_quarantine.iterdir():
                name = entry.name if entry.name.startswith(".") else "." + entry.name
                os.replace(entry, target / name)
            _remove_if_empty(old_quarantine)

    def release(self) -> None:
        """Let another recorder use the data directory."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def lock_holder(data_dir: Path) -> int | None:
    """The pid of the process holding `data_dir`'s recorder lock, or None when none does.

    Read-only on Linux: the flock on the lock file's inode is looked up in /proc/locks, so a
    recorder starting at that instant is never refused because of the look. Where there is no
    /proc/locks, a shared lock is tried and dropped at once, and the pid is the one the holder
    wrote into the file.
    """
    path = layout.bookkeeping_dir(Path(data_dir)) / ".lock"
    try:
        st = path.stat()
    except OSError:
        return None
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            table = fh.read(8 << 20)
    except OSError:
        return _probe(path)
    device = (os.major(st.st_dev), os.minor(st.st_dev))
    by_inode = None  # a match on the inode alone (overlay filesystems report other devices)
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 2563 fe:01:1835100 0 EOF" (waiters have "->" after "1:")
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if int(inode) != st.st_ino:
                continue
            if (int(major, 16), int(minor, 16)) == device:
                return int(fields[4])
            by_inode = int(fields[4])
        except ValueError:
            continue
    return by_inode


def _probe(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            return int(owner) if owner.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
