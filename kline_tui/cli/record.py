"""`kline-tui record`: the recorder without a UI, for a server.

It runs the runtime's life cycle (start, supervision, the bounded stop, the exit summary) and
logs its events as lines on stderr; the exit code is the runtime's.

With `--listen` (or `[service] listen`) it is a service: the API (health, metrics, state, events,
control) answers from the start, the UI attaches to it (`kline-tui attach`), and under systemd
it says READY once the config is good, the data folder taken and the API listening, whatever the
exchange does; an unreachable exchange is then waited for (retried with backoff) rather than an
exit, and a stream the exchange refuses is left out with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from rich.console import Console
from rich.markup import escape

from kline_tui.cli.command import (
    UsageError,
    command_parser,
    recorder_options,
    recorder_settings,
    run,
    shard_settings,
)
from kline_tui.config import Settings, parse_listen
from kline_tui.recorder.events import Event, EventLog
from kline_tui.recorder.hub import SPARK_LENGTH
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
        "--listen",
        metavar="[HOST:]PORT",
        help="serve the API (health, metrics, state, control; `kline-tui attach`) there; HOST "
        "defaults to 127.0.0.1 (default: the config's [service] listen, else off)",
    )
    command.add_argument(
        "--shard",
        metavar="I/N",
        help="record only shard I of N of the watch list (1-based; a stream's shard is the "
        "crc32 of its spec modulo N, plus one): N recorders with one watch list fill one table",
    )
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
        if args.shard is not None:
            settings = shard_settings(settings, args.shard)
        if args.listen is not None:
            try:
                settings = replace(settings, listen=parse_listen(args.listen.strip()))
            except ValueError as exc:
                raise UsageError(f"--listen: {exc}") from None
        return asyncio.run(_record(settings, args, err))

    from kline_tui.service.auth import ServiceError

    return run(parser(), argv, body, errors=(ServiceError,))


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
        # Nothing shows sparklines headless, unless a UI may attach and show them.
        keep_closed=SPARK_LENGTH if settings.listen else 0,
        seed_history=settings.listen is not None,
    )
    if settings.listen is None:
        runtime.handle_signals()
        try:
            await runtime.start()  # validates first: a refused stream ends here, nothing written
            await _until_stop_requested(runtime, events, args.status_every)
        finally:
            await runtime.stop()
    else:
        await _serve(runtime, settings.listen, args.status_every)
    for level, line in runtime.summary():
        events.emit(level, line)
    return runtime.exit_code


async def _serve(runtime: Runtime, listen: tuple[str, int], status_every: float) -> None:
    """Record as a service: the API first, READY once the data folder is taken, the watchdog
    while the runtime is sound; then the same bounded stop, the API closed last."""
    from kline_tui.service.api import Service
    from kline_tui.service.auth import resolve_token
    from kline_tui.service.systemd import Notifier

    token = resolve_token(runtime.settings)
    service = Service(runtime, *listen, token=token)  # ServiceError: refused as configured
    await service.start()
    notifier = Notifier()
    watchdog: asyncio.Task[None] | None = None
    runtime.handle_signals()

    def ready() -> None:
        nonlocal watchdog
        notifier.ready(f"listening on {service.url}")
        watchdog = asyncio.ensure_future(
            notifier.keep_watchdog(lambda: runtime.supervisor.fatal is None)
        )

    try:
        await runtime.start(leave_out_refused=True, on_locked=ready)
        await _until_stop_requested(runtime, runtime.events, status_every, notifier.status)
    finally:
        notifier.stopping(f"stopping ({runtime.stop_reason or 'start failed'})")
        try:
            await runtime.stop()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await service.stop()
            notifier.close()


async def _until_stop_requested(
    runtime: Runtime,
    events: EventLog,
    status_every: float,
    also: Callable[[str], object] | None = None,
) -> None:
    """Wait for a signal (or a task the supervisor gave up on), logging the status meanwhile
    (and handing it to `also`: systemd's STATUS)."""
    timeout = status_every if status_every > 0 else None
    while runtime.started and not runtime.stop_requested:
        try:
            await asyncio.wait_for(runtime.wait_for_stop_request(), timeout)
        except TimeoutError:
            line = runtime.status_line()
            events.info(f"status: {line}")
            if also is not None:
                also(line)
    if runtime.started:
        events.info(
            f"stopping ({runtime.stop_reason}): writing what is buffered, fetching what is missing"
        )
