"""The watch list kept in the config file: saved after every change the UI makes to it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from kline_tui.config import save_watch
from kline_tui.model import StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.ui import format as fmt

__all__ = ["WatchListFile"]


class WatchListFile:
    """Writes `watched()` to the config at `path`, keeping the user's comments and other keys.

    Saves run in a thread, one at a time, and each writes the list as it is when its turn comes,
    so two quick changes cannot land in the wrong order. A failure is one line in the event log;
    the next change tries again.
    """

    def __init__(
        self, path: Path, watched: Callable[[], list[StreamKey]], events: EventLog
    ) -> None:
        self.path = path
        self.watched = watched
        self.events = events
        self._lock = asyncio.Lock()

    async def save(self) -> None:
        async with self._lock:
            keys = self.watched()
            try:
                await asyncio.to_thread(save_watch, self.path, keys)
            except OSError as exc:
                self.events.error(
                    f"could not save the watch list to {self.path}: {exc}; "
                    "it will be tried again at the next change"
                )
                return
        self.events.debug(
            f"saved the watch list ({len(keys)} streams) to {fmt.short_path(self.path)}"
        )
