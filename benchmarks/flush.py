"""4. Flush cost as the dataset grows: time of one ParquetSink flush of 1,000 rows (1,000 usdm 1m
symbols, one minute) with 0, 100k, 1M and 10M rows already stored in the data directory.

The stored rows are generated with polars in kline-tui's layout as part files of 10,000 rows (one
flush of 1,000 symbols every 10 minutes, uncompacted), so 10M rows are 1,000 files over a week of
day partitions; the measured flushes land in the newest partition, beside the most files. Each
flush goes through the real sink (executor hop, DataFrame, sort, zstd Parquet, fsync, rename,
directory fsync). Median of `repeat` flushes per level.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from benchmarks.common import Row, temp_dir, verdict

SYMBOLS = 1000
ROWS_PER_FILE = 10_000
LEVELS = (0, 100_000, 1_000_000, 10_000_000)
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MINUTE = 60_000
TARGET_MS = 5.0
WARMUP = 3


def _template():
    import polars as pl

    from benchmarks.common import synthetic_frame

    minutes = ROWS_PER_FILE // SYMBOLS
    sym = pl.Series("symbol", [f"S{i:04d}USDT" for i in range(1, SYMBOLS + 1)] * minutes)
    m = pl.int_range(0, ROWS_PER_FILE, eager=True) // SYMBOLS
    return synthetic_frame(sym, m, T0).sort("symbol", "open_time")


def _grow(data: Path, template, have: int, want: int) -> int:
    """Add part files until `want` rows are stored; returns the minutes they cover."""
    import polars as pl

    from kline_tui.model import Interval, Market
    from kline_tui.store import layout

    minutes_per_file = ROWS_PER_FILE // SYMBOLS
    for f in range(have // ROWS_PER_FILE, want // ROWS_PER_FILE):
        shift = f * minutes_per_file * MINUTE
        start = T0 + shift
        day = time.strftime("%Y-%m-%d", time.gmtime(start / 1000))
        folder = layout.partition_dir(data, Market.USDM, Interval.M1, day)
        folder.mkdir(parents=True, exist_ok=True)
        part = template.with_columns(
            pl.col("open_time") + pl.duration(milliseconds=shift),
            pl.col("close_time") + pl.duration(milliseconds=shift),
        )
        part.write_parquet(folder / layout.part_name(f), compression="zstd", statistics=True)
    return want // SYMBOLS


async def _flushes(data: Path, first_minute: int, repeat: int) -> list[float]:
    from kline_tui.model import Candle, Interval, Market, StreamKey
    from kline_tui.recorder.events import EventLog
    from kline_tui.recorder.sink import ParquetSink

    keys = [
        StreamKey(Market.USDM, f"S{SYMBOLS + i:04d}USDT", Interval.M1)
        for i in range(1, SYMBOLS + 1)
    ]
    sink = ParquetSink(data, EventLog(), flush_rows=10**9, flush_age_s=10**6)
    times = []
    for r in range(repeat + WARMUP):  # the first flushes warm the writer thread and polars up
        t = T0 + (first_minute + r) * MINUTE
        for i, key in enumerate(keys):
            p = 100.0 + i % 97
            sink.add(
                key,
                Candle(t, t + MINUTE - 1, p, p + 1, p - 1, p + 0.5, 10.0, 1000.0, 5.0, 500.0, 42),
            )
        started = time.perf_counter()
        assert await sink.flush()
        if r >= WARMUP:
            times.append((time.perf_counter() - started) * 1000)
    await sink.close()
    return times


def run(quick: bool) -> list[Row]:
    repeat = 10 if quick else 30
    medians: dict[int, tuple[float, float]] = {}
    gen_s = 0.0
    with temp_dir("flush") as root:
        data = root / "data"
        data.mkdir()
        template = _template()
        # Imports, thread pool, page cache: not counted.
        asyncio.run(_flushes(root / "warmup", 0, 5))
        have = 0
        for level in LEVELS:
            started = time.perf_counter()
            _grow(data, template, have, level)
            gen_s += time.perf_counter() - started
            have = level
            # Right after the stored minutes (the newest partition), with symbols of their own so no
            # (symbol, open time) is ever stored twice.
            times = asyncio.run(_flushes(data, level // SYMBOLS, repeat))
            medians[level] = (statistics.median(times), sorted(times)[int(0.9 * (len(times) - 1))])
        files = len(list(data.rglob("*.parquet")))
    worst = max(m for m, _ in medians.values())
    flat = worst / max(min(m for m, _ in medians.values()), 1e-9)
    rows = []
    for level, (med, p90) in medians.items():
        rows.append(
            Row(
                f"4 flush 1k rows, {level:,} stored",
                f"{med:.1f} ms (p90 {p90:.1f})",
                "<= 5 ms",
                verdict(med <= TARGET_MS, f"{med / TARGET_MS:.2f}x of budget"),
            )
        )
    rows.append(
        Row(
            "4 flush cost flatness",
            f"max/min median {flat:.2f}",
            "flat (<= 1.5)",
            verdict(flat <= 1.5),
            [
                f"flush: {repeat} flushes of 1,000 rows per level; "
                f"dataset generated in {gen_s:.1f} s "
                f"({files} part files of {ROWS_PER_FILE:,} rows at 10M); "
                "includes fsync of file and folder"
            ],
        )
    )
    return rows


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(row)
