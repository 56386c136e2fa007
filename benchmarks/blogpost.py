"""2. Against the original blog post's approach: for each closed candle, a one-row pandas DataFrame,
then read the symbol's Parquet file, concat, and rewrite it; vs kline-tui's ParquetSink (add, and
flush in batches). Same closed-candle stream for both: `SYMBOLS` usdm 1m symbols round robin, open
times advancing a minute per round, each symbol with 100,000 rows already stored (as one file per
symbol for the blog approach, as day-partitioned parts in kline-tui's layout for the sink).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.common import Row, temp_dir, verdict

STORED = 100_000
T_START = 1_704_067_200_000  # 2024-01-01: 100,000 stored minutes end about 69 days later
MINUTE = 60_000
TARGET = 100.0


def _stored_frame(symbol: str):
    import polars as pl

    from benchmarks.common import synthetic_frame

    return synthetic_frame(
        pl.repeat(symbol, STORED, eager=True), pl.int_range(0, STORED, eager=True), T_START
    )


def _prepare(root: Path, symbols: list[str]) -> tuple[Path, Path]:
    """Both stores, 100,000 rows per symbol: per-symbol files (blog) and kline-tui's layout."""
    import polars as pl

    from kline_tui.model import Interval, Market
    from kline_tui.store import layout

    blog, data = root / "blog", root / "data"
    blog.mkdir()
    frames = []
    for symbol in symbols:
        df = _stored_frame(symbol)
        # As pandas writes it.
        df.drop("source").to_pandas().to_parquet(blog / f"{symbol}.parquet", index=False)
        frames.append(df)
    everything = pl.concat(frames).with_columns(
        pl.col("open_time").dt.strftime("%Y-%m-%d").alias("date")
    )
    for seq, ((day,), part) in enumerate(everything.partition_by("date", as_dict=True).items()):
        folder = layout.partition_dir(data, Market.USDM, Interval.M1, day)
        folder.mkdir(parents=True, exist_ok=True)
        part.drop("date").sort("symbol", "open_time").write_parquet(
            folder / layout.part_name(seq), compression="zstd"
        )
    return blog, data


def _stream(symbols: list[str], n: int):
    """The closed candles both approaches receive, in order."""
    from kline_tui.model import Candle

    out = []
    t = T_START + STORED * MINUTE
    while len(out) < n:
        for s in symbols:
            p = 100.0 + (t // MINUTE) % 97
            out.append(
                (
                    s,
                    Candle(
                        t, t + MINUTE - 1, p, p + 1, p - 1, p + 0.5, 10.0, 1000.0, 5.0, 500.0, 42
                    ),
                )
            )
        t += MINUTE
    return out[:n]


def _blog(blog: Path, stream, seconds: float) -> tuple[int, float]:
    """The blog post's loop: one DataFrame per candle, read, concat, rewrite."""
    import pandas as pd

    done = 0
    started = time.perf_counter()
    for symbol, c in stream:
        row = pd.DataFrame(
            [
                {
                    "symbol": symbol,
                    "open_time": pd.Timestamp(c.open_time, unit="ms", tz="UTC"),
                    "close_time": pd.Timestamp(c.close_time, unit="ms", tz="UTC"),
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                    "quote_volume": c.quote_volume,
                    "taker_buy_volume": c.taker_buy_volume,
                    "taker_buy_quote_volume": c.taker_buy_quote_volume,
                    "trades": c.trades,
                }
            ]
        )
        path = blog / f"{symbol}.parquet"
        old = pd.read_parquet(path)
        pd.concat([old, row], ignore_index=True).to_parquet(path, index=False)
        done += 1
        if time.perf_counter() - started >= seconds:
            break
    return done, time.perf_counter() - started


async def _sink(data: Path, stream, flush_rows: int) -> tuple[int, float, int]:
    from kline_tui.model import Interval, Market, StreamKey
    from kline_tui.recorder.events import EventLog
    from kline_tui.recorder.sink import ParquetSink

    keys = {s: StreamKey(Market.USDM, s, Interval.M1) for s, _ in stream[:1000]}
    sink = ParquetSink(
        data, EventLog(), flush_rows=flush_rows, flush_age_s=3600.0, max_buffer_rows=10**9
    )
    started = time.perf_counter()
    for symbol, candle in stream:
        sink.add(keys[symbol], candle, "ws")
        if sink.stats.rows_buffered >= flush_rows:
            assert await sink.flush()
    assert await sink.flush()
    elapsed = time.perf_counter() - started
    await sink.close()
    return len(stream), elapsed, sink.stats.files_written


def run(quick: bool) -> list[Row]:
    n_symbols = 10 if quick else 20
    blog_seconds = 10.0 if quick else 30.0
    sink_candles = 100_000 if quick else 300_000
    symbols = [f"S{i:04d}USDT" for i in range(1, n_symbols + 1)]
    with temp_dir("blog") as root:
        blog, data = _prepare(root, symbols)
        stream = _stream(symbols, sink_candles)
        n_blog, s_blog = _blog(blog, stream, blog_seconds)
        n_sink, s_sink, files = asyncio.run(_sink(data, stream, 50_000))
        n_small, s_small, files_small = asyncio.run(_sink(data, stream[:50_000], 1_000))
    blog_rate, sink_rate, small_rate = n_blog / s_blog, n_sink / s_sink, n_small / s_small
    ratio, ratio_small = sink_rate / blog_rate, small_rate / blog_rate
    return [
        Row(
            "2 blog post: pandas read+concat+rewrite",
            f"{blog_rate:,.1f} candles/s",
            "",
            verdict(None),
            [
                f"blog approach: {n_blog} candles in {s_blog:.1f} s over {n_symbols} symbols, "
                f"{STORED:,} rows stored per symbol ({1000 * s_blog / n_blog:.0f} ms a candle)"
            ],
        ),
        Row(
            "2 kline-tui sink, flush every 50k rows",
            f"{sink_rate:,.0f} candles/s",
            ">= 100x blog",
            verdict(ratio >= TARGET, f"{ratio:,.0f}x"),
            [
                f"sink: {n_sink:,} candles (add + {files} part files written) in {s_sink:.2f} s; "
                f"with a flush every 1,000 rows: {n_small:,} candles, {files_small} files, "
                f"{s_small:.2f} s"
            ],
        ),
        Row(
            "2 kline-tui sink, flush every 1k rows",
            f"{small_rate:,.0f} candles/s",
            ">= 100x blog",
            verdict(ratio_small >= TARGET, f"{ratio_small:,.0f}x"),
        ),
    ]


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(row)
