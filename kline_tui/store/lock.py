"""One recorder per data directory: two writing the same folder would store candles twice."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kline_tui.store.layout import staging_dir

__all__ = ["DataDirLock", "DataDirError"]


class DataDirError(Exception):
    """The data directory cannot be used; the message says why and what to do."""


class DataDirLock:
    """An exclusive lock on `<data_dir>/.lock`, held while recording.

    Taking it also clears what a killed recorder left half-written in `.staging/`.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataDirError(f"cannot use data directory {self.data_dir}: {exc.strerror or exc}") from None
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
        staging = staging_dir(self.data_dir)
        if staging.is_dir():
            for leftover in staging.glob("*.tmp"):
                leftover.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
