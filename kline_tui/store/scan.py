"""Reading the dataset back: what the recorder needs to resume where it stopped."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from kline_tui.model import Interval, Market, StreamKey
from kline_tui.store.layout import partition_root

__all__ = ["last_open_times"]


def last_open_times(data_dir: Path, keys: Iterable[StreamKey]) -> dict[StreamKey, int]:
    """The newest open time (ms) on disk of each stream that has any rows.

    Reads only the `symbol` and `open_time` columns of the streams' (market, interval) folders.
    Unreadable files are skipped here; `kline-tui verify` reports them.
    """
    by_folder: dict[tuple[Market, Interval], set[str]] = defaultdict(set)
    for key in keys:
        by_folder[(key.market, key.interval)].add(key.symbol)
    out: dict[StreamKey, int] = {}
    for (market, interval), symbols in by_folder.items():
        root = partition_root(Path(data_dir), market, interval)
        files = [p for p in root.glob("date=*/*.parquet") if p.is_file()] if root.is_dir() else []
        if not files:
            continue
        frames = []
        for path in files:
            try:
                frames.append(
                    pl.scan_parquet(path)
                    .select("symbol", pl.col("open_time").dt.epoch("ms"))
                    .filter(pl.col("symbol").is_in(list(symbols)))
                    .group_by("symbol")
                    .agg(pl.col("open_time").max())
                    .collect()
                )
            except (pl.exceptions.PolarsError, OSError):
                continue
        if not frames:
            continue
        latest = pl.concat(frames).group_by("symbol").agg(pl.col("open_time").max())
        for symbol, open_time in latest.iter_rows():
            out[StreamKey(market, symbol, interval)] = int(open_time)
    return out
