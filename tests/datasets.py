"""Datasets for tests: building them (synthetic rows, parts written straight into place, the
simulator's candles as rows) and reading them back."""

from __future__ import annotations

import calendar
from pathlib import Path

import polars as pl

from kline_tui.model import Interval, Market, StreamKey
from kline_tui.store import layout
from kline_tui.store.schema import PARQUET_SCHEMA

DAY = 86_400_000
MINUTE = 60_000
RANK = {"ws": 0, "rest": 1, "archive": 2}


def day_ms(text: str) -> int:
    y, m, d = (int(x) for x in text.split("-"))
    return calendar.timegm((y, m, d, 0, 0, 0)) * 1000


def synthetic_rows(
    symbols: list[str],
    interval: Interval,
    first_open: int,
    count: int,
    source: str = "ws",
    salt: float = 0.0,
) -> pl.DataFrame:
    """`count` candles per symbol in the dataset's schema; `salt` shifts the prices, so copies
    of a candle from different sources can be told apart."""
    step = interval.ms
    assert step is not None
    opens = pl.int_range(0, count, eager=True) * step + first_open
    frames = []
    for symbol in symbols:
        base = 10.0 * sum(symbol.encode()) + salt  # the same candle in every part that holds it
        frames.append(
            pl.DataFrame({"t": opens}).select(
                symbol=pl.lit(symbol),
                open_time=pl.col("t"),
                close_time=pl.col("t") + step - 1,
                open=base + pl.col("t") % 977,
                high=base + pl.col("t") % 977 + 1.5,
                low=base + pl.col("t") % 977 - 1.5,
                close=base + pl.col("t") % 991,
                volume=pl.col("t") % 113 + 0.5,
                quote_volume=pl.col("t") % 131 + 0.25,
                taker_buy_volume=pl.col("t") % 17 + 0.0,
                taker_buy_quote_volume=pl.col("t") % 19 + 0.0,
                trades=pl.col("t") % 1000,
                source=pl.lit(source),
            )
        )
    return pl.concat(frames).cast(PARQUET_SCHEMA)


_seq = [0]


def write_raw_part(
    data_dir: Path, market: Market, interval: Interval, frame: pl.DataFrame
) -> list[Path]:
    """Write a part per bucket straight into place (fixtures only: no staging, no fsync)."""
    written = []
    fmt = {"day": "%Y-%m-%d", "month": "%Y-%m-01", "year": "%Y-01-01"}[
        layout.BUCKET_OF_INTERVAL[interval]
    ]
    labelled = frame.with_columns(_b=pl.col("open_time").dt.strftime(fmt))
    for (bucket,), part in labelled.partition_by("_b", as_dict=True).items():
        _seq[0] += 1
        folder = layout.partition_dir(data_dir, market, interval, str(bucket))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / layout.part_name(_seq[0])
        part.drop("_b").sort("symbol", "open_time").write_parquet(path, statistics=True)
        written.append(path)
    return written


def read_dataset(data_dir: Path) -> pl.DataFrame:
    """The dataset as any reader sees it: every `.parquet` under the folder, hive columns too."""
    files = list(Path(data_dir).rglob("*.parquet"))
    if not files:
        return pl.DataFrame(
            schema={
                **PARQUET_SCHEMA,
                "market": pl.String(),
                "interval": pl.String(),
                "date": pl.Date(),
            }
        )
    return pl.scan_parquet(f"{data_dir}/**/*.parquet", hive_partitioning=True).collect()


def stream_rows(df: pl.DataFrame, key: StreamKey) -> pl.DataFrame:
    """The rows of one stream."""
    return df.filter(
        (pl.col("market") == key.partition)
        & (pl.col("interval") == key.interval.path_label)
        & (pl.col("symbol") == key.symbol)
    )


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in one order, so two multisets of rows compare with `equals`."""
    cols = list(PARQUET_SCHEMA)
    return frame.select(cols).sort(cols)


def dedup(frame: pl.DataFrame) -> pl.DataFrame:
    """What compaction must keep: per (symbol, open_time) the ws copy, else rest, else archive.
    Written independently of the code under test (a group-by, not a sort + unique)."""
    ranked = frame.with_columns(
        _r=pl.col("source").replace_strict(RANK, default=9, return_dtype=pl.Int8())
    )
    best = ranked.group_by("symbol", "open_time").agg(pl.col("_r").min())
    kept = ranked.join(best, on=["symbol", "open_time", "_r"], how="semi")
    return kept.unique(maintain_order=False).drop("_r")


def expected_frame(key: StreamKey, opens: list[int], source: str) -> pl.DataFrame:
    """The simulator's candles of `key` at `opens` as dataset rows."""
    from kline_tui.sim import expected_candle

    rows = [
        (key.symbol, *expected_candle(key.market, key.symbol, key.interval, t).as_row(), source)
        for t in opens
    ]
    return pl.DataFrame(rows, schema=PARQUET_SCHEMA, orient="row")
