"""`kline-tui import`: data.binance.vision kline archives into the dataset (store/archive.py).

The module is `import_` because `import` is a Python keyword; the command is `kline-tui import`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from kline_tui.cli.command import command_parser, run, tool_dataset
from kline_tui.model import Interval, Kind, Market
from kline_tui.runtime import EXIT_OK
from kline_tui.store.archive import ArchiveError, ImportResult, import_archives

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The parser of `kline-tui import`."""
    command = command_parser(
        "import",
        "Import data.binance.vision kline archives (zip or CSV, daily or monthly) into the "
        "dataset, skipping candles already held. A .CHECKSUM beside an archive is verified.",
    )
    command.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="archive files or folders of them"
    )
    command.add_argument("--market", help="spot, usdm or coinm, when the path does not say")
    command.add_argument("--symbol", help="the symbol, when the file name does not say")
    command.add_argument(
        "--interval", help="the interval (1m, 1h, 1mo...), when the file name does not say"
    )
    command.add_argument(
        "--kind",
        help="trade, mark, index or premium, when the path does not say (markPriceKlines/, "
        "indexPriceKlines/, premiumIndexKlines/ do); trade by default",
    )
    return command


def main(argv: list[str]) -> int:
    """`kline-tui import PATH [PATH ...] [--market M] [--symbol S] [--interval I] [--kind K]`:
    exit code 0
    when every archive was imported; a bad name or checksum stops it before anything is written."""
    return run(parser(), argv, _import, errors=(ArchiveError,))


def _import(args: argparse.Namespace, err: Console) -> int:
    market = Market.parse(args.market) if args.market else None
    interval = Interval.parse(args.interval) if args.interval else None
    kind = Kind.parse(args.kind) if args.kind else None
    _, dataset = tool_dataset(args)
    results = import_archives(
        dataset, args.paths, market, args.symbol, interval, on_done=_print_done, kind=kind
    )
    rows = sum(r.rows for r in results)
    new = sum(r.written for r in results)
    print(
        f"imported {len(results)} archive(s): {rows} candles, {new} new, {rows - new} already held"
    )
    return EXIT_OK


def _print_done(r: ImportResult) -> None:
    print(f"{r.archive.path.name}: {r.archive.key}, {r.rows} candles, {r.written} new")
