"""`kline-tui verify`: what the dataset holds per stream, and `--repair` (store/verify.py)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kline_tui.binance.rest import RestClient
from kline_tui.cli.command import (
    command_parser,
    dataset_dir,
    run,
    stream_keys,
    tool_dataset,
)
from kline_tui.config import Settings
from kline_tui.model import StreamKey
from kline_tui.runtime import EXIT_FAILED, EXIT_OK
from kline_tui.store.compact import CompactionError
from kline_tui.store.dataset import Dataset
from kline_tui.store.verify import VerifyReport, render

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The parser of `kline-tui verify`."""
    command = command_parser(
        "verify",
        "Report, per stream, the first and last candle, the candle count, gaps and duplicates, "
        "and any unreadable file. Exit code 0 only when all is clean.",
    )
    command.add_argument(
        "streams",
        nargs="*",
        metavar="STREAM",
        help="streams to check, as market:SYMBOL:interval[:kind] (default: every stream on disk, "
        "every kind)",
    )
    command.add_argument(
        "--repair",
        action="store_true",
        help="quarantine unreadable and foreign files, fetch gaps from REST, remove duplicates",
    )
    return command


def main(argv: list[str]) -> int:
    """`kline-tui verify [STREAM ...] [--repair]`: exit code 0 only when the dataset is clean
    (after the repair, with `--repair`), 1 when problems are left."""
    # Repair compacts the buckets that hold duplicates, so a compaction's error can end it.
    return run(parser(), argv, _verify, errors=(CompactionError,))


def _verify(args: argparse.Namespace, err: Console) -> int:
    keys = stream_keys(args.streams) or None
    settings, dataset = tool_dataset(args)
    dataset_dir(dataset)
    report = dataset.verify(keys)
    data_dir = Path(dataset.location)
    if not report.streams and not report.unreadable and not report.foreign:
        err.print(f"kline-tui verify: {escape(dataset.describe())} holds no candles yet")
        return EXIT_FAILED
    _print(report, data_dir)
    if args.repair and not report.clean:
        print("repairing...")
        report = asyncio.run(_repair(dataset, report, settings, keys, err))
        _print(report, data_dir)
    print(
        "clean"
        if report.clean
        else "problems found" + ("" if args.repair else "; --repair fixes them")
    )
    return EXIT_OK if report.clean else EXIT_FAILED


def _print(report: VerifyReport, data_dir: Path) -> None:
    for line in render(report, data_dir):
        print(line)


async def _repair(
    dataset: Dataset,
    report: VerifyReport,
    settings: Settings,
    keys: list[StreamKey] | None,
    err: Console,
) -> VerifyReport:
    rest = RestClient(settings.endpoints, warn=lambda text: err.print(escape(text)))
    try:
        return await dataset.repair(report, rest, keys, say=print)
    finally:
        await rest.close()
