"""One recorder per data directory: two writing the same folder would store candles twice."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from kline_tui.store import layout

__all__ = ["DataDirError", "DataDirLock"]


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


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
