"""store.read.scan: the same rows as a plain hive read, with folders pruned before any file is
read."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from kline_tui.model import Interval, Market, SpecError
from kline_tui.store import layout
from kline_tui.store.compact import Compactor
from kline_tui.store.read import READ_ERRORS, READ_SCHEMA, buckets, scan
from kline_tui.store.schema import PARQUET_SCHEMA

from .datasets import DAY, day_ms, read_dataset, synthetic_rows, write_raw_part

COLS = list(READ_SCHEMA)


@pytest.fixture
def dataset(tmp_path):
    data = tmp_path / "data"
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for i in range(3):  # 1m, 3 day buckets, two parts each
        first = day_ms("2026-01-01") + i * DAY
        write_raw_part(
            data, Market.USDM, Interval.M1, synthetic_rows(syms, Interval.M1, first, 720)
        )
        write_raw_part(
            data,
            Market.USDM,
            Interval.M1,
            synthetic_rows(syms, Interval.M1, first + 720 * 60_000, 720),
        )
    write_raw_part(
        data,
        Market.SPOT,
        Interval.H1,
        synthetic_rows(syms[:2], Interval.H1, day_ms("2025-12-20"), 24 * 30),
    )
    write_raw_part(
        data,
        Market.COINM,
        Interval.D1,
        synthetic_rows(["BTCUSD_PERP"], Interval.D1, day_ms("2025-12-01"), 60),
    )
    month = synthetic_rows(["BTCUSDT"], Interval.H1, day_ms("2025-11-01"), 1).with_columns(
        close_time=pl.lit(day_ms("2025-12-01") - 1).cast(PARQUET_SCHEMA["close_time"])
    )
    write_raw_part(data, Market.SPOT, Interval.MO1, month)
    return data


def plain(data) -> pl.DataFrame:
    return read_dataset(data).with_columns(pl.col("interval").cast(pl.String()))


def same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    return a.select(COLS).sort(COLS).equals(b.select(COLS).sort(COLS))


def test_scan_returns_the_plain_read(dataset):
    everything = scan(dataset).collect()
    assert everything.columns == COLS and everything.schema == pl.Schema(READ_SCHEMA)
    assert everything.height == 3 * 1440 * 3 + 2 * 720 + 60 + 1
    assert same(everything, plain(dataset))


@pytest.mark.parametrize(
    "kwargs, where",
    [
        (dict(market="usdm"), pl.col("market") == "usdm"),
        (dict(symbol="ETHUSDT"), pl.col("symbol") == "ETHUSDT"),
        (
            dict(symbol=["ETHUSDT", "SOLUSDT"], interval="1m"),
            pl.col("symbol").is_in(["ETHUSDT", "SOLUSDT"]) & (pl.col("interval") == "1m"),
        ),
        (dict(interval="1M"), pl.col("interval") == "1mo"),
        (dict(interval="1mo", market=Market.SPOT), pl.col("interval") == "1mo"),
        (
            dict(
                market="usdm",
                symbol="BTCUSDT",
                interval="1m",
                start="2026-01-02",
                end=date(2026, 1, 3),
            ),
            (pl.col("market") == "usdm")
            & (pl.col("symbol") == "BTCUSDT")
            & (pl.col("interval") == "1m")
            & (pl.col("open_time") >= datetime(2026, 1, 2, tzinfo=UTC))
            & (pl.col("open_time") < datetime(2026, 1, 3, tzinfo=UTC)),
        ),
        (
            dict(start=datetime(2026, 1, 2, 12, 30), end=day_ms("2026-01-02") + 13 * 3_600_000),
            (pl.col("open_time") >= datetime(2026, 1, 2, 12, 30, tzinfo=UTC))
            & (pl.col("open_time") < datetime(2026, 1, 2, 13, tzinfo=UTC)),
        ),
    ],
)
def test_scan_filters_match_plain_polars(dataset, kwargs, where):
    got = scan(dataset, **kwargs).collect()
    want = plain(dataset).filter(where)
    assert want.height > 0
    assert same(got, want)


def test_scan_prunes_folders_before_reading(dataset):
    # Damaged files everywhere but in the one bucket asked for: a plain read fails, scan never
    # opens them.
    for bucket in buckets(dataset):
        if not (bucket.market is Market.USDM and bucket.label == "2026-01-02"):
            (bucket.path / layout.part_name(999)).write_bytes(b"not parquet at all")
    with pytest.raises(READ_ERRORS):
        read_dataset(dataset)
    one_day = scan(
        dataset,
        market="usdm",
        interval="1m",
        symbol="SOLUSDT",
        start="2026-01-02",
        end="2026-01-03",
    ).collect()
    assert one_day.height == 1440
    assert one_day["open_time"].min() == datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(READ_ERRORS):  # the damaged day next to it is read when asked for
        scan(dataset, market="usdm", start="2026-01-02", end="2026-01-03T00:01").collect()


def test_scan_of_nothing_and_bad_arguments(tmp_path, dataset):
    empty = scan(tmp_path / "nowhere").collect()
    assert empty.height == 0 and empty.schema == pl.Schema(READ_SCHEMA)
    assert scan(dataset, market="coinm", interval="1m").collect().height == 0
    with pytest.raises(SpecError):
        scan(dataset, market="futures")
    with pytest.raises(SpecError):
        scan(dataset, interval="2m")
    with pytest.raises(ValueError):
        scan(dataset, start="yesterday")


def test_duckdb_and_polars_read_the_compacted_dataset(dataset):
    duckdb = pytest.importorskip("duckdb")
    before = scan(dataset).collect()
    Compactor(dataset).run(None)
    # one file per bucket
    assert len(list(dataset.rglob("*.parquet"))) == len(buckets(dataset)) == 8
    assert same(scan(dataset).collect(), before)
    rows = duckdb.sql(
        "SELECT epoch_ms(open_time), close "
        f"FROM read_parquet('{dataset}/**/*.parquet', hive_partitioning = true) "
        "WHERE market = 'usdm' AND interval = '1m' AND symbol = 'ETHUSDT' ORDER BY open_time"
    ).fetchall()
    want = before.filter((pl.col("market") == "usdm") & (pl.col("symbol") == "ETHUSDT")).sort(
        "open_time"
    )
    assert len(rows) == want.height == 3 * 1440
    assert rows == list(
        zip(want["open_time"].dt.epoch("ms").to_list(), want["close"].to_list(), strict=True)
    )
