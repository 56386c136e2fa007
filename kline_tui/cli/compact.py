"""`kline-tui compact`: merge each closed bucket's parts into one sorted file (store/compact.py)."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.markup import escape

from kline_tui.cli.command import command_parser, dataset_dir, run, tool_dataset
from kline_tui.runtime import EXIT_FAILED, EXIT_OK
from kline_tui.store.compact import DEFAULT_GRACE_MS, CompactionError

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The parser of `kline-tui compact`."""
    command = command_parser(
        "compact",
        "Merge each closed bucket's part files into one file sorted by symbol and open time, "
        "duplicates removed. Safe while a recorder writes into the same folder, and to interrupt.",
    )
    command.add_argument(
        "--all",
        action="store_true",
        help="also buckets still open (by default only those that ended "
        f"{DEFAULT_GRACE_MS // 60_000} minutes ago or more, by the local clock)",
    )
    return command


def main(argv: list[str]) -> int:
    """`kline-tui compact [--all]`: exit code 0 when every bucket was merged, 1 when one failed."""
    return run(parser(), argv, _compact, errors=(CompactionError,))


def _compact(args: argparse.Namespace, err: Console) -> int:
    _, dataset = tool_dataset(args)
    compactor = dataset_dir(dataset).compactor()
    now = None if args.all else int(time.time() * 1000)
    result = compactor.run(now, wait=False)
    if result.busy:
        err.print("another compaction is running on this data directory; waiting for it")
        result = compactor.run(now, wait=True)
    print(result.summary())
    for failure in result.failed:
        err.print(f"kline-tui compact: {escape(failure)}")
    return EXIT_FAILED if result.failed else EXIT_OK
