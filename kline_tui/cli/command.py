"""What every command shares: the common options, the settings they build, the errors a user can
cause, and how a command reports them and exits.

A command's `main(argv)` is `run(parser, argv, body)`: the arguments are parsed, `body` does the
work and returns the exit code, and whatever a user can cause (a bad option, stream, config,
path or symbol, an unreachable exchange) ends as one line on stderr, `<prog>: <what went
wrong>`, and exit code 2, never a traceback; Ctrl-C ends with 130. The exit codes are the
runtime's, so a headless run, the UI and the dataset tools mean the same by each.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from kline_tui.binance.rest import RestError
from kline_tui.config import (
    DEFAULT_WATCH,
    ConfigError,
    Settings,
    default_config_path,
    default_data_dir,
    load_settings,
)
from kline_tui.model import SpecError, StreamKey
from kline_tui.recorder.pipeline import StreamRefused
from kline_tui.runtime import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from kline_tui.store.dataset import Dataset, DatasetError, open_dataset
from kline_tui.store.folder import ParquetFolder
from kline_tui.store.layout import is_dataset
from kline_tui.store.lock import DataDirError

__all__ = [
    "MAX_DEMO_SPEED",
    "USER_ERRORS",
    "CommandParser",
    "UsageError",
    "command_parser",
    "dataset_dir",
    "dataset_settings",
    "recorder_options",
    "recorder_settings",
    "run",
    "shard_settings",
    "stream_keys",
    "tool_dataset",
]


# Above this the simulator's clock would outrun its own REST answers' usefulness (a year a minute).
MAX_DEMO_SPEED = 100_000.0


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


USER_ERRORS: tuple[type[Exception], ...] = (
    UsageError,
    ConfigError,
    SpecError,
    StreamRefused,
    DataDirError,
    DatasetError,
    RestError,
)
"""Errors a user can cause or fix, for every command; a command adds those of its own tool."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are reported like every other error: one line."""

    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage and exit from inside parse_args; raising keeps
        # one way to report, and lets a caller of main() get the exit code back.
        raise UsageError(f"{message} (see {self.prog} --help)")


def command_parser(
    command: str | None,
    description: str,
    *,
    parents: Iterable[argparse.ArgumentParser] = (),
    **extra: Any,
) -> CommandParser:
    """The parser of `kline-tui COMMAND` (of the UI when `command` is None), with the options
    every command takes (`--config`, `--data-dir`), those of `parents`, and `extra` keywords of
    ArgumentParser."""
    return CommandParser(
        prog="kline-tui" if command is None else f"kline-tui {command}",
        description=description,
        parents=[_config_options(), *parents],
        **extra,
    )


def _config_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="config file (default: the platform's config folder)",
    )
    options.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the dataset's folder, where Parquet files go (default: the config's data_dir)",
    )
    return options


def recorder_options() -> argparse.ArgumentParser:
    """The options of the commands that record: the UI and `record`."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "streams",
        nargs="*",
        metavar="STREAM",
        help="streams to watch besides the config's, as market:SYMBOL:interval "
        "(e.g. usdm:BTCUSDT:1m)",
    )
    options.add_argument(
        "--demo",
        action="store_true",
        help="run against the built-in Binance simulator (no network; own config and data folder)",
    )
    options.add_argument(
        "--demo-speed",
        type=float,
        default=1.0,
        metavar="X",
        help="with --demo: how fast the simulator's clock runs (default 1 = real time)",
    )
    return options


# --- reporting and exit ---------------------------------------------------------------------


def run(
    parser: argparse.ArgumentParser,
    argv: list[str],
    body: Callable[[argparse.Namespace, Console], int],
    *,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """Parse `argv`, run `body(args, stderr)` and return its exit code; a user's mistake (one of
    USER_ERRORS or `errors`, or an OSError) is one line on stderr and EXIT_USAGE."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    prog = parser.prog
    try:
        args = _parse(parser, argv)
        return EXIT_OK if args is None else body(args, err)
    except (*USER_ERRORS, *errors) as exc:
        return _report(err, prog, str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _report(err, prog, where + (exc.strerror or str(exc)))
    except KeyboardInterrupt:
        err.print(f"{prog}: interrupted")
        return EXIT_INTERRUPTED


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    """The parsed arguments, or None when `--help` has printed the usage."""
    try:
        return parser.parse_args(argv)
    except SystemExit:  # only --help exits: mistakes raise UsageError (CommandParser)
        return None


def _report(err: Console, prog: str, message: str) -> int:
    err.print(f"[bold red]{prog}:[/] {escape(message)}")
    return EXIT_USAGE


# --- settings -------------------------------------------------------------------------------


def _data_dir_option(args: argparse.Namespace) -> str | None:
    if args.data_dir is None:
        return None
    if not str(args.data_dir).strip():
        raise UsageError("--data-dir must name a folder or an object-store URL")
    return str(args.data_dir)


def stream_keys(specs: Iterable[str]) -> list[StreamKey]:
    """Streams named on the command line, in order, each once; SpecError names a bad one."""
    return list(dict.fromkeys(StreamKey.parse(spec) for spec in specs))


def recorder_settings(args: argparse.Namespace, *, headless: bool) -> Settings:
    """The settings of a recording (the UI, or `record` when `headless`): the config's (the
    demo's own, with `--demo`), `--data-dir`, and the streams named added to its watch list."""
    keys = stream_keys(args.streams)
    if not math.isfinite(args.demo_speed) or not 0 < args.demo_speed <= MAX_DEMO_SPEED:
        raise UsageError(f"--demo-speed must be a number above 0 and at most {MAX_DEMO_SPEED:g}")
    data_dir = _data_dir_option(args)
    settings = _demo_settings(args.config) if args.demo else load_settings(args.config)
    if not settings.watch and not keys and (args.demo or not headless):
        # The demo, and a first run of the UI, start with the majors of the three markets.
        keys = stream_keys(DEFAULT_WATCH)
    if data_dir is not None:
        settings = settings.with_data_dir(data_dir)
    open_dataset(settings.storage)  # a refused format or URL ends here, before any socket
    settings = settings.with_streams(keys)
    if not settings.watch:
        raise UsageError(
            f"nothing to record: name streams (e.g. kline-tui record usdm:BTCUSDT:1m) "
            f"or list them under watch = [...] in {settings.config_path}"
        )
    return settings


_SHARD = re.compile(r"\A\s*(\d{1,4})\s*/\s*(\d{1,4})\s*\Z")
MAX_SHARDS = 1024


def shard_settings(settings: Settings, text: str) -> Settings:
    """The settings with only the streams of shard `I/N` (`--shard`) in the watch list.
    UsageError for a malformed shard, or one that holds none of the streams."""
    match = _SHARD.match(text)
    if match is None:
        raise UsageError(f"--shard {text!r}: write I/N, e.g. 2/3 for the second of three")
    index, count = int(match[1]), int(match[2])
    if not 1 <= count <= MAX_SHARDS or not 1 <= index <= count:
        raise UsageError(f"--shard {text}: I must be from 1 to N, N from 1 to {MAX_SHARDS}")
    mine = tuple(key for key in settings.watch if key.shard(count) == index)
    if not mine:
        raise UsageError(
            f"shard {index}/{count} holds none of the {len(settings.watch)} streams watched"
        )
    return replace(settings, watch=mine)


def _demo_settings(config: Path | None) -> Settings:
    if config is None:
        # The demo never touches the real config: it keeps its own beside it.
        config = default_config_path().with_name("demo.toml")
        settings = load_settings(config) if config.exists() else Settings(config, False)
    else:
        settings = load_settings(config)
    # Simulated candles never go where real ones live, whatever the config says: the demo has
    # its own folder unless --data-dir names one (and its rows say `sim`).
    return replace(settings, data_dir=default_data_dir().with_name("demo-data"))


def dataset_settings(args: argparse.Namespace) -> tuple[Settings, Path]:
    """The settings of a tool and the data directory it works on: `--data-dir`, else the
    config's (for an object-store URL, the local folder of its bookkeeping: see `Settings`)."""
    settings = _tool_settings(args)
    return settings, settings.data_dir


def tool_dataset(args: argparse.Namespace) -> tuple[Settings, Dataset]:
    """The settings of a dataset tool and the dataset it works on: at `--data-dir`, else the
    config's `data_dir`, in the config's format (a Parquet folder or a Delta table)."""
    settings = _tool_settings(args)
    return settings, open_dataset(settings.storage)


def _tool_settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    where = _data_dir_option(args)
    return settings if where is None else settings.with_data_dir(where)


def dataset_dir(dataset: Dataset) -> Dataset:
    """The dataset, if a recorder wrote it (tools never write into another folder or table)."""
    if not isinstance(dataset, ParquetFolder):
        if not dataset.exists():
            raise UsageError(
                f"no kline-tui dataset at {dataset.describe()}: pass --data-dir or set data_dir "
                "in the config"
            )
        return dataset
    data_dir = dataset.data_dir
    if not data_dir.is_dir():
        raise UsageError(
            f"no data directory at {data_dir}: pass --data-dir or set data_dir in the config"
        )
    if not is_dataset(data_dir):
        what = "not a kline-tui dataset (no market=... folders)"
        if not any(data_dir.iterdir()):
            what = "empty"
        raise UsageError(f"{data_dir} is {what}: pass the folder a recorder writes with --data-dir")
    return dataset
