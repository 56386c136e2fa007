"""The dataset's commands: `kline-tui compact`, `verify`, `backfill` and `import`.

Each `*_main(argv)` takes the arguments after the command word and returns the exit code: 0 when
done (for verify: when the dataset is clean), 1 when the data has problems left, 2 for a mistake
a user can fix (a bad stream, date, path, config or checksum, an unknown symbol, an unreachable
exchange), reported as one line on stderr, never a traceback; 130 on Ctrl-C.
The data directory is `--data-dir`, else the config's (`--config FILE`, else the default config).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kline_tui.binance.rest import RestClient, RestError
from kline_tui.config import ConfigError, Settings, load_settings
from kline_tui.model import Interval, Market, SpecError, StreamKey
from kline_tui.store.archive import ArchiveError, ImportResult, import_archives
from kline_tui.store.compact import DEFAULT_GRACE_MS, CompactionError, Compactor
from kline_tui.store.history import BackfillResult, backfill
from kline_tui.store.layout import is_dataset
from kline_tui.store.read import parse_time
from kline_tui.store.verify import format_time, render, repair, verify_dataset

__all__ = ["compact_main", "verify_main", "backfill_main", "import_main"]

EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


_USER_ERRORS = (UsageError, ConfigError, SpecError, RestError, ArchiveError, CompactionError)


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"kline-tui {command}", description=description)
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="the dataset's folder (default: the config's)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="config file (default: the platform's config folder)")
    return parser


def _settings(args: argparse.Namespace) -> tuple[Settings, Path]:
    settings = load_settings(args.config)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else settings.data_dir
    return settings, data_dir


def _existing(data_dir: Path) -> Path:
    if not data_dir.is_dir():
        raise UsageError(f"no data directory at {data_dir}: pass --data-dir or set data_dir in the config")
    return data_dir


def _dataset(data_dir: Path) -> Path:
    """The data directory, if it is one a recorder wrote (tools never write into another folder)."""
    _existing(data_dir)
    if not is_dataset(data_dir):
        empty = not any(data_dir.iterdir())
        raise UsageError(
            f"{data_dir} is {'empty' if empty else 'not a kline-tui dataset (no market=... folders)'}: "
            "pass the folder a recorder writes with --data-dir"
        )
    return data_dir


def _run(command: str, body: Callable[[Console], int]) -> int:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return body(err)
    except _USER_ERRORS as exc:
        err.print(f"[bold red]kline-tui {command}:[/] {escape(str(exc))}")
        return EXIT_USAGE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"[bold red]kline-tui {command}:[/] {escape(where + (exc.strerror or str(exc)))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print(f"kline-tui {command}: interrupted")
        return EXIT_INTERRUPTED


def _time(text: str, flag: str) -> int:
    try:
        return parse_time(text)  # type: ignore[return-value]
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _streams(specs: list[str]) -> list[StreamKey]:
    return list(dict.fromkeys(StreamKey.parse(s) for s in specs))


# --- compact --------------------------------------------------------------------------------

def compact_main(argv: list[str]) -> int:
    """`kline-tui compact [--all] [--data-dir DIR] [--config FILE]`."""
    parser = _parser(
        "compact",
        "Merge each closed bucket's part files into one file sorted by symbol and open time, "
        "duplicates removed. Safe while a recorder writes into the same folder, and to interrupt.",
    )
    parser.add_argument(
        "--all", action="store_true",
        help=f"also buckets still open (by default only those that ended {DEFAULT_GRACE_MS // 60_000}"
             " minutes ago or more, by the local clock)",
    )
    args = parser.parse_args(argv)

    def body(err: Console) -> int:
        _, data_dir = _settings(args)
        compactor = Compactor(_dataset(data_dir))
        now = None if args.all else int(time.time() * 1000)
        result = compactor.run(now, wait=False)
        if result.busy:
            err.print("another compaction is running on this data directory; waiting for it")
            result = compactor.run(now, wait=True)
        print(result.summary())
        for failure in result.failed:
            err.print(f"kline-tui compact: {escape(failure)}")
        return EXIT_PROBLEMS if result.failed else 0

    return _run("compact", body)


# --- verify ---------------------------------------------------------------------------------

def verify_main(argv: list[str]) -> int:
    """`kline-tui verify [STREAM ...] [--repair] [--data-dir DIR] [--config FILE]`."""
    parser = _parser(
        "verify",
        "Report, per stream, the first and last candle, the candle count, gaps and duplicates, "
        "and any unreadable file. Exit code 0 only when all is clean.",
    )
    parser.add_argument("streams", nargs="*", metavar="STREAM",
                        help="streams to check, as market:SYMBOL:interval (default: every stream on disk)")
    parser.add_argument("--repair", action="store_true",
                        help="quarantine unreadable and foreign files, fetch gaps from REST, remove duplicates")
    args = parser.parse_args(argv)

    def body(err: Console) -> int:
        keys = _streams(args.streams) or None
        settings, data_dir = _settings(args)
        _dataset(data_dir)
        report = verify_dataset(data_dir, keys)
        if not report.streams and not report.unreadable and not report.foreign:
            err.print(f"kline-tui verify: {escape(str(data_dir))} holds no candles yet")
            return EXIT_PROBLEMS
        for line in render(report, data_dir):
            print(line)
        if args.repair and not report.clean:
            print("repairing...")
            report = asyncio.run(_repair(data_dir, report, settings, keys, err))
            for line in render(report, data_dir):
                print(line)
        print("clean" if report.clean else "problems found" + ("" if args.repair else "; --repair fixes them"))
        return 0 if report.clean else EXIT_PROBLEMS

    return _run("verify", body)


async def _repair(data_dir, report, settings: Settings, keys, err: Console):
    rest = RestClient(settings.endpoints, warn=lambda text: err.print(escape(text)))
    try:
        return await repair(data_dir, report, rest, keys, say=print)
    finally:
        await rest.close()


# --- backfill -------------------------------------------------------------------------------

def backfill_main(argv: list[str]) -> int:
    """`kline-tui backfill STREAM [STREAM ...] --from DATE [--to DATE] [--data-dir] [--config]`."""
    parser = _parser(
        "backfill",
        "Download a stream's history from REST into the dataset, within the weight budget. "
        "Resumable: run it again after an interruption and it fetches only what is missing.",
    )
    parser.add_argument("streams", nargs="+", metavar="STREAM", help="as market:SYMBOL:interval")
    parser.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="first day (UTC), 2025-01-01, or a time, 2025-01-01T12:00")
    parser.add_argument("--to", dest="end", metavar="DATE",
                        help="last day included (UTC), or a time (default: the last closed candle)")
    args = parser.parse_args(argv)

    def body(err: Console) -> int:
        keys = _streams(args.streams)
        start = _time(args.start, "--from")
        end = _end_of(args.end)
        if end is not None and start > end:
            raise UsageError(f"--from {args.start} is after --to {args.end}")
        settings, data_dir = _settings(args)
        results = asyncio.run(_backfill(data_dir, settings, keys, start, end, err))
        for r in results:
            print(
                f"{r.key}: {r.held_before + r.missing} candles {format_time(r.first)} to "
                f"{format_time(r.last)}: {r.held_before} held, {r.written} fetched"
                + (f", {r.unavailable} not available from the exchange" if r.unavailable else "")
            )
        return 0

    return _run("backfill", body)


def _end_of(text: str | None) -> int | None:
    """`--to`: a date means its whole day; a time means up to that instant."""
    if text is None:
        return None
    ms = _time(text, "--to")
    if "T" not in text and " " not in text.strip():
        ms += 86_400_000 - 1
    return ms


async def _backfill(
    data_dir: Path, settings: Settings, keys: list[StreamKey], start: int, end: int | None, err: Console
) -> list[BackfillResult]:
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=False,
    )
    rest = RestClient(settings.endpoints, warn=lambda text: progress.console.print(escape(text)))
    results = []
    try:
        for market in dict.fromkeys(k.market for k in keys):
            listed = await rest.exchange_info(market)
            for key in keys:
                if key.market is market and key.symbol not in listed:
                    raise UsageError(f"{market.value} has no symbol {key.symbol}")
        with progress:
            for key in keys:
                task = progress.add_task(str(key), total=None)
                last = None if end is None else key.interval.open_time_at(end)
                result = await backfill(
                    data_dir, key, rest, start, last,
                    on_plan=lambda r, t=task: progress.update(t, total=r.missing),
                    on_progress=lambda n, t=task: progress.advance(t, n),
                )
                progress.update(task, completed=result.missing)
                results.append(result)
    finally:
        await rest.close()
    return results


# --- import ---------------------------------------------------------------------------------

def import_main(argv: list[str]) -> int:
    """`kline-tui import PATH [PATH ...] [--market M] [--symbol S] [--interval I] [--data-dir] [--config]`."""
    parser = _parser(
        "import",
        "Import data.binance.vision kline archives (zip or CSV, daily or monthly) into the "
        "dataset, skipping candles already held. A .CHECKSUM beside an archive is verified.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="archive files or folders of them")
    parser.add_argument("--market", help="spot, usdm or coinm, when the path does not say")
    parser.add_argument("--symbol", help="the symbol, when the file name does not say")
    parser.add_argument("--interval", help="the interval (1m, 1h, 1mo...), when the file name does not say")
    args = parser.parse_args(argv)

    def body(err: Console) -> int:
        market = Market.parse(args.market) if args.market else None
        interval = Interval.parse(args.interval) if args.interval else None
        _, data_dir = _settings(args)

        def done(r: ImportResult) -> None:
            print(f"{r.archive.path.name}: {r.archive.key}, {r.rows} candles, {r.written} new")

        results = import_archives(data_dir, args.paths, market, args.symbol, interval, on_done=done)
        rows = sum(r.rows for r in results)
        new = sum(r.written for r in results)
        print(f"imported {len(results)} archive(s): {rows} candles, {new} new, {rows - new} already held")
        return 0

    return _run("import", body)
