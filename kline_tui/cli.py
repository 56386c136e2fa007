"""Command line: `kline-tui record` (headless) and, with no command, the terminal UI.

Errors a user can cause (a bad stream, a bad config, an unknown symbol) end as one line on stderr
and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kline_tui.config import (
    ConfigError,
    Settings,
    default_config_path,
    default_data_dir,
    load_settings,
)
from kline_tui.model import SpecError, StreamKey
from kline_tui.recorder.events import Event, EventLog
from kline_tui.recorder.pipeline import StreamRefused
from kline_tui.runtime import EXIT_USAGE, Runtime, log_to
from kline_tui.store.lock import DataDirError

__all__ = ["main"]

# The demo's and a first run's watch list: the majors across the three markets.
DEMO_WATCH = (
    "spot:BTCUSDT:1m",
    "spot:ETHUSDT:1m",
    "spot:SOLUSDT:1s",
    "usdm:BTCUSDT:1m",
    "usdm:ETHUSDT:1m",
    "usdm:BNBUSDT:5m",
    "coinm:BTCUSD_PERP:1m",
    "coinm:ETHUSD_PERP:1m",
)

# Commands on the dataset, each with its own parser in kline_tui.store.commands.
_DATASET_COMMANDS = {
    "compact": "compact_main",
    "verify": "verify_main",
    "backfill": "backfill_main",
    "import": "import_main",
}


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


# Above this the simulator's clock would outrun its own REST answers' usefulness (a year a minute).
MAX_DEMO_SPEED = 100_000.0


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("streams", nargs="*", metavar="STREAM",
                        help="streams to watch besides the config's, as market:SYMBOL:interval (e.g. usdm:BTCUSDT:1m)")
    common.add_argument("--config", type=Path, metavar="FILE", help="config file (default: the platform's config folder)")
    common.add_argument("--data-dir", metavar="DIR", help="where Parquet files go (overrides the config)")
    common.add_argument("--demo", action="store_true",
                        help="run against the built-in Binance simulator (no network; own config and data folder)")
    common.add_argument("--demo-speed", type=float, default=1.0, metavar="X",
                        help="with --demo: how fast the simulator's clock runs (default 1 = real time)")
    return common


def _ui_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="kline-tui",
        parents=[_common()],
        description="Watch and record Binance candlesticks (spot, usdm, coinm) to Parquet.",
        epilog="Commands (each has --help): record (headless, for servers), compact, verify [--repair], "
        "backfill, import.",
    )


def _record_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kline-tui record",
        parents=[_common()],
        description="Record closed candles to Parquet, headless, until SIGINT or SIGTERM; then flush and exit 0.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log subscriptions too")
    parser.add_argument("--status-every", type=float, default=60.0, metavar="S",
                        help="log a status line every S seconds (default 60; 0: never)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _DATASET_COMMANDS:
        from kline_tui.store import commands

        return getattr(commands, _DATASET_COMMANDS[argv[0]])(argv[1:])
    record = bool(argv) and argv[0] == "record"
    args = (_record_parser() if record else _ui_parser()).parse_args(argv[1:] if record else argv)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        settings = _settings(args, headless=record)
        if record:
            return asyncio.run(_record(settings, args, console))
        from kline_tui.ui.app import run_app  # Textual is loaded only for the UI

        return run_app(settings, demo_speed=args.demo_speed if args.demo else None)
    except (UsageError, ConfigError, SpecError, StreamRefused, DataDirError) as exc:
        console.print(f"[bold red]kline-tui:[/] {escape(str(exc))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace, *, headless: bool) -> Settings:
    keys = [StreamKey.parse(spec) for spec in args.streams]
    if not math.isfinite(args.demo_speed) or not 0 < args.demo_speed <= MAX_DEMO_SPEED:
        raise UsageError(f"--demo-speed must be a number above 0 and at most {MAX_DEMO_SPEED:g}")
    if args.data_dir is not None and not str(args.data_dir).strip():
        raise UsageError("--data-dir must name a folder")
    config = args.config
    if args.demo and config is None:
        # The demo never touches the real config: it keeps its own beside it.
        config = default_config_path().with_name("demo.toml")
        settings = load_settings(config) if config.exists() else Settings(config, False)
    else:
        settings = load_settings(config)
    if args.demo:
        # Simulated candles never go where real ones live, whatever the config says: the demo
        # has its own folder unless --data-dir names one (and its rows say `sim`).
        settings = replace(settings, data_dir=default_data_dir().with_name("demo-data"))
    first_run = not settings.watch and not keys
    if first_run and (args.demo or not headless):
        # The demo, and a first run of the UI, start with the majors of the three markets.
        keys = [StreamKey.parse(s) for s in DEMO_WATCH]
    if args.data_dir is not None:
        settings = replace(settings, data_dir=Path(args.data_dir).expanduser())
    settings = settings.with_streams(keys)
    if not settings.watch:
        raise UsageError(
            f"nothing to record: name streams (e.g. kline-tui record usdm:BTCUSDT:1m) "
            f"or list them under watch = [...] in {settings.config_path}"
        )
    return settings


_LEVEL_STYLE = {
    logging.DEBUG: "dim",
    logging.INFO: "",
    logging.WARNING: "yellow",
    logging.ERROR: "bold red",
}


async def _record(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    events = EventLog()
    threshold = logging.DEBUG if args.verbose else logging.INFO

    def show(event: Event) -> None:
        if event.level >= threshold:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
            style = _LEVEL_STYLE.get(event.level, "")
            text = escape(event.message)
            console.print(f"[dim]{stamp}[/] [{style}]{text}[/]" if style else f"[dim]{stamp}[/] {text}")

    events.subscribe(show)
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
        while runtime.started and not runtime.stop_requested:
            try:
                timeout = args.status_every if args.status_every > 0 else None
                await asyncio.wait_for(runtime.wait_for_stop_request(), timeout)
            except asyncio.TimeoutError:
                events.info(f"status: {runtime.status_line()}")
        if runtime.started:
            events.info(f"stopping ({runtime.stop_reason}): writing what is buffered, "
                        "fetching what is missing")
    finally:
        await runtime.stop()
    for level, line in runtime.summary():
        events.emit(level, line)
    return runtime.exit_code


if __name__ == "__main__":
    sys.exit(main())
