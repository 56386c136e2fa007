"""`kline-tui record`: the recorder without a UI, for a server.

It runs the runtime's life cycle (start, supervision, the bounded stop, the exit summary) and
logs its events as lines on stderr; the exit code is the runtime's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from kline_tui.cli.command import (
    command_parser,
    recorder_options,
    recorder_settings,
    run,
)
from kline_tui.config import Settings
from kline_tui.recorder.events import Event, EventLog
from kline_tui.runtime import Runtime, log_to

__all__ = ["main", "parser"]

_LEVEL_STYLE = {
    logging.DEBUG: "dim",
    logging.INFO: "",
    logging.WARNING: "yellow",
    logging.ERROR: "bold red",
}


def parser() -> argparse.ArgumentParser:
    """The parser of `kline-tui record`."""
    command = command_parser(
        "record",
        "Record closed candles to Parquet, headless, until SIGINT or SIGTERM; then write what is "
        "buffered, fetch what is missing and exit (0 when everything received is on disk).",
        parents=[recorder_options()],
    )
    command.add_argument("-v", "--verbose", action="store_true", help="log subscriptions too")
    command.add_argument(
        "--status-every",
        type=float,
        default=60.0,
        metavar="S",
        help="log a status line every S seconds (default 60; 0: never)",
    )
    return command


def main(argv: list[str]) -> int:
    """`kline-tui record [STREAM ...] [options]`; `argv` is what follows the command word."""

    def body(args: argparse.Namespace, err: Console) -> int:
        settings = recorder_settings(args, headless=True)
        return asyncio.run(_record(settings, args, err))

    return run(parser(), argv, body)


def _event_printer(console: Console, verbose: bool) -> Callable[[Event], None]:
    """Prints each event at or above the chosen level as one time-stamped line."""
    threshold = logging.DEBUG if verbose else logging.INFO

    def show(event: Event) -> None:
        if event.level >= threshold:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
            style = _LEVEL_STYLE.get(event.level, "")
            text = escape(event.message)
            console.print(
                f"[dim]{stamp}[/] [{style}]{text}[/]" if style else f"[dim]{stamp}[/] {text}"
            )

    return show


async def _record(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    events = EventLog()
    events.subscribe(_event_printer(console, args.verbose))
    log_to(None)  # tracebacks of failed tasks go to stderr, beside the event lines
    runtime = Runtime(
        settings,
        events=events,
        demo_speed=args.demo_speed if args.demo else None,
        keep_closed=0,  # nothing shows sparklines headless
    )
    runtime.handle_signals()
    try:
        await runtime.start()  # validates first: a refused stream ends here, nothing written
        await _until_stop_requested(runtime, events, args.status_every)
    finally:
        await runtime.stop()
    for level, line in runtime.summary():
        events.emit(level, line)
    return runtime.exit_code


async def _until_stop_requested(runtime: Runtime, events: EventLog, status_every: float) -> None:
    """Wait for a signal (or a task the supervisor gave up on), logging the status meanwhile."""
    timeout = status_every if status_every > 0 else None
    while runtime.started and not runtime.stop_requested:
        try:
            await asyncio.wait_for(runtime.wait_for_stop_request(), timeout)
        except TimeoutError:
            events.info(f"status: {runtime.status_line()}")
    if runtime.started:
        events.info(
            f"stopping ({runtime.stop_reason}): writing what is buffered, fetching what is missing"
        )
