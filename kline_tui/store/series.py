"""Reading the dataset back: what the recorder needs to resume where it stopped."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kline_tui.model import Interval, Market, StreamKey
from kline_tui.store.layout import partition_root

__all__ = ["StoredSeries", "stored_series"]


@dataclass(slots=True)
class StoredSeries:
    """What the dataset holds of one stream: its newest open time and the holes before it."""

    last: int
    holes: list[tuple[int, int]] = field(default_factory=list)  # (first, last) open times missing


def stored_series(data_dir: Path, keys: Iterable[StreamKey]) -> dict[StreamKey, StoredSeries]:
    """The newest open time (ms) and the holes of each stream that has rows on disk.

    A recorder killed before a flush loses its buffer, and the buffer may hold candles older
    than some already on disk (a backfill finishing after newer live candles were written), so
    resuming from the newest candle alone would leave those holes forever: they are found here
    and fetched again. Reads only the `symbol` and `open_time` columns; unreadable files are
    skipped (`kline-tui verify` reports them).
    """
    by_folder: dict[tuple[Market, Interval], set[str]] = defaultdict(set)
    for key in keys:
        by_folder[(key.market, key.interval)].add(key.symbol)
    out: dict[StreamKey, StoredSeries] = {}
    for (market, interval), symbols in by_folder.items():
        times = _open_times(partition_root(Path(data_dir), market, interval), symbols)
        if times is None:
            continue
        for (symbol,), group in times.group_by(["symbol"]):
            opens = group["t"].unique().sort().to_list()
            out[StreamKey(market, symbol, interval)] = StoredSeries(
                opens[-1], _holes(interval, opens)
            )
    return out


def _open_times(root: Path, symbols: set[str]) -> pl.DataFrame | None:
    files = sorted(p for p in root.glob("date=*/*.parquet") if p.is_file()) if root.is_dir() else []
    if not files:
        return None

    def read(paths: list[Path]) -> pl.DataFrame:
        return (
            pl.scan_parquet(paths)
            .select("symbol", pl.col("open_time").dt.epoch("ms").alias("t"))
            .filter(pl.col("symbol").is_in(list(symbols)))
            .collect()
        )

    try:
        return read(files)
    except (pl.exceptions.PolarsError, OSError):
        frames = []
        for path in files:  # one bad file must not hide the good ones
            try:
                frames.append(read([path]))
            except (pl.exceptions.PolarsError, OSError):
                continue
        return pl.concat(frames) if frames else None


def _holes(interval: Interval, opens: list[int]) -> list[tuple[int, int]]:
    holes = []
    for a, b in zip(opens, opens[1:]):
        expected = interval.next_open(a)
        if b != expected:
            holes.append((expected, interval.prev_open(b)))
    return holes
