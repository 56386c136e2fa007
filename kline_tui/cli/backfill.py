"""`kline-tui backfill`: a stream's history from REST into the dataset (store/history.py)."""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from kline_tui.binance.rest import RestClient
from kline_tui.cli.command import (
    UsageError,
    command_parser,
    run,
    stream_keys,
    tool_dataset,
)
from kline_tui.config import Settings
from kline_tui.model import StreamKey
from kline_tui.recorder.symbols import key_problem
from kline_tui.runtime import EXIT_OK
from kline_tui.store.dataset import Dataset
from kline_tui.store.history import BackfillResult, backfill
from kline_tui.store.read import parse_time
from kline_tui.store.verify import format_time

__all__ = ["main", "parser"]

_DAY_MS = 86_400_000


def parser() -> argparse.ArgumentParser:
    """The parser of `kline-tui backfill`."""
    command = command_parser(
        "backfill",
        "Download a stream's history from REST into the dataset, within the weight budget. "
        "Resumable: run it again after an interruption and it fetches only what is missing.",
    )
    command.add_argument(
        "streams", nargs="+", metavar="STREAM", help="as market:SYMBOL:interval[:kind]"
    )
    command.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="DATE",
        help="first day (UTC), 2025-01-01, or a time, 2025-01-01T12:00",
    )
    command.add_argument(
        "--to",
        dest="end",
        metavar="DATE",
        help="last day included (UTC), or a time (default: the last closed candle)",
    )
    return command


def main(argv: list[str]) -> int:
    """`kline-tui backfill STREAM [STREAM ...] --from DATE [--to DATE]`: exit code 0 when done."""
    return run(parser(), argv, _backfill)


def _backfill(args: argparse.Namespace, err: Console) -> int:
    keys = stream_keys(args.streams)
    start = _time(args.start, "--from")
    end = _end_of(args.end)
    if end is not None and start > end:
        raise UsageError(f"--from {args.start} is after --to {args.end}")
    settings, dataset = tool_dataset(args)
    for r in asyncio.run(_fetch(dataset, settings, keys, start, end, err)):
        print(
            f"{r.key}: {r.held_before + r.missing} candles {format_time(r.first)} to "
            f"{format_time(r.last)}: {r.held_before} held, {r.written} fetched"
            + (f", {r.unavailable} not available from the exchange" if r.unavailable else "")
        )
    return EXIT_OK


def _time(text: str, flag: str) -> int:
    try:
        ms = parse_time(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    assert ms is not None  # parse_time answers None only to None
    return ms


def _end_of(text: str | None) -> int | None:
    """`--to`: a date means its whole day; a time means up to that instant."""
    if text is None:
        return None
    ms = _time(text, "--to")
    if "T" not in text and " " not in text.strip():
        ms += _DAY_MS - 1
    return ms


async def _fetch(
    data_dir: Dataset,
    settings: Settings,
    keys: list[StreamKey],
    start: int,
    end: int | None,
    err: Console,
) -> list[BackfillResult]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    rest = RestClient(settings.endpoints, warn=lambda text: progress.console.print(escape(text)))
    try:
        await _check_symbols(rest, keys)
        with progress:
            return [await _fetch_one(data_dir, key, rest, start, end, progress) for key in keys]
    finally:
        await rest.close()


async def _check_symbols(rest: RestClient, keys: list[StreamKey]) -> None:
    """Refuse, before anything is fetched, a symbol (or pair, or contract type) its market does
    not list; a symbol no longer trading still has its history."""
    for market in dict.fromkeys(k.market for k in keys):
        listed = await rest.exchange_info(market)
        for key in keys:
            if key.market is not market:
                continue
            if not key.kind.keyed_by_pair and key.symbol not in listed:
                raise UsageError(f"{market.value} has no symbol {key.symbol}")
            problem = key_problem(key, listed, trading=False)
            if problem is not None:
                raise UsageError(problem)


async def _fetch_one(
    data_dir: Dataset,
    key: StreamKey,
    rest: RestClient,
    start: int,
    end: int | None,
    progress: Progress,
) -> BackfillResult:
    task = progress.add_task(str(key), total=None)
    last = None if end is None else key.interval.open_time_at(end)
    result = await backfill(
        data_dir,
        key,
        rest,
        start,
        last,
        on_plan=lambda r: progress.update(task, total=r.missing),
        on_progress=lambda n: progress.advance(task, n),
    )
    progress.update(task, completed=result.missing)
    return result
