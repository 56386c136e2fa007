"""Running the app in a real terminal: its log file, what the signals mean to it, its exit code.

SIGTERM asks the runtime to stop, which the app answers as it answers `q` (flush, then exit with
the runtime's code); a second one ends the process at once (the runtime's rule). SIGHUP means the
terminal is gone: what is buffered is written and the process ends without touching the screen.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING

import platformdirs

from kline_tui.runtime import log_to

if TYPE_CHECKING:
    from kline_tui.ui.app import KlineApp

__all__ = ["run_in_terminal"]


def run_in_terminal(app: KlineApp) -> int:
    """Run `app` until it exits; returns the exit code (0, or 1 when rows could not be written
    or a task kept failing)."""
    log_to(platformdirs.user_log_path("kline-tui") / "kline-tui.log")

    async def hang_up() -> None:
        # Restoring a terminal that is gone would block Textual's writer forever (and keep the
        # data folder locked): write what is buffered, then leave without touching it.
        await app.shutdown_pipeline()
        os._exit(app.recorder.exit_code)

    hanging_up: list[asyncio.Task[None]] = []  # held, so the task is not collected midway

    def on_hang_up() -> None:
        hanging_up.append(asyncio.ensure_future(hang_up()))

    async def main() -> None:
        app.recorder.handle_signals(signals=(signal.SIGTERM,))
        app.recorder.handle_signals(on_hang_up, signals=(signal.SIGHUP,))
        try:
            await app.run_async()
        finally:
            await app.shutdown_pipeline()

    asyncio.run(main())
    code = app.return_code
    return app.recorder.exit_code if code is None else code
