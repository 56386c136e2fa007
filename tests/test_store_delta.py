"""The storage interface and its Delta table, on a local folder: exactly once, resume, verify,
compaction, the lease, scan, and the folder behind the same interface as before."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from kline_tui.model import Interval, Market, StreamKey
from kline_tui.store import scan
from kline_tui.store.compact import Compactor
from kline_tui.store.dataset import (
    DatasetError,
    StorageSpec,
    as_dataset,
    is_url,
    open_dataset,
    redact,
)
from kline_tui.store.delta import DELTA_SCHEMA, DeltaDataset
from kline_tui.store.folder import ParquetFolder
from kline_tui.store.parts import write_parts
from kline_tui.store.schema import PARQUET_SCHEMA

from .datasets import DAY, MINUTE, canonical, day_ms, synthetic_rows

USDM, M1, H1 = Market.USDM, Interval.M1, Interval.H1
D1 = day_ms("2025-03-01")


def delta(tmp_path: Path) -> DeltaDataset:
    ds = open_dataset(StorageSpec(str(tmp_path / "table"), "delta"))
    assert isinstance(ds, DeltaDataset)
    ds.acquire()
    return ds


def table_rows(ds: DeltaDataset) -> pl.DataFrame:
    """What a plain Delta reader sees, in the folder's column types."""
    df = pl.read_delta(ds.location)
    return df.with_columns(pl.col("open_time", "close_time").cast(pl.Datetime("ms", "UTC")))


def test_a_batch_is_stored_once_however_often_it_is_written(tmp_path):
    ds = delta(tmp_path)
    rows = synthetic_rows(["BTCUSDT", "ETHUSDT"], M1, D1, 30)
    assert ds.write_rows(USDM, M1, "2025-03-01", rows) == 60
    assert ds.write_rows(USDM, M1, "2025-03-01", rows) == 0
    more = synthetic_rows(["BTCUSDT", "ETHUSDT"], M1, D1 + 20 * MINUTE, 20)
    assert ds.write_rows(USDM, M1, "2025-03-01", more) == 20  # 10 new per symbol
    df = table_rows(ds)
    assert df.height == 80
    assert df.select("symbol", "open_time").is_duplicated().sum() == 0
    assert df.schema["open_time"] == pl.Datetime("ms", "UTC")
    # the table keeps microsecond UTC timestamps holding whole milliseconds
    raw = pl.read_delta(ds.location)
    assert raw.schema["open_time"] == pl.Datetime("us", "UTC")
    assert (raw["open_time"].dt.epoch("us") % 1000 == 0).all()
    assert sorted(DeltaTable(ds.location).metadata().partition_columns) == sorted(
        ["market", "interval", "date"]
    )


def test_a_held_row_is_never_rewritten_and_a_batch_keeps_its_best_copy(tmp_path):
    ds = delta(tmp_path)
    live = synthetic_rows(["BTCUSDT"], M1, D1, 5, source="ws")
    ds.write_rows(USDM, M1, "2025-03-01", live)
    rest = synthetic_rows(["BTCUSDT"], M1, D1, 10, source="rest", salt=1.0)
    assert ds.write_rows(USDM, M1, "2025-03-01", rest) == 5
    df = table_rows(ds).sort("open_time")
    assert df["source"].to_list() == ["ws"] * 5 + ["rest"] * 5
    # within one batch two copies of a candle: the live one is kept
    both = pl.concat(
        [
            synthetic_rows(["ETHUSDT"], M1, D1, 3, source="rest", salt=2.0),
            synthetic_rows(["ETHUSDT"], M1, D1, 3, source="ws"),
        ]
    )
    assert ds.write_rows(USDM, M1, "2025-03-01", both) == 3
    eth = table_rows(ds).filter(pl.col("symbol") == "ETHUSDT")
    assert eth["source"].to_list() == ["ws"] * 3


def test_writers_racing_on_one_partition_store_each_candle_once(tmp_path):
    delta(tmp_path)  # the table exists before they start, as after any recorder's start
    writers = [DeltaDataset(str(tmp_path / "table")) for _ in range(3)]
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    errors: list[BaseException] = []

    def write(ds: DeltaDataset, offset: int) -> None:
        try:
            for step in range(6):
                # overlapping windows: each writer holds candles the others hold too
                first = D1 + (step * 10 + offset) * MINUTE
                ds.write_rows(USDM, M1, "2025-03-01", synthetic_rows(symbols, M1, first, 15))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, i * 3)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    df = table_rows(writers[0])
    assert df.select("symbol", "open_time").is_duplicated().sum() == 0
    want = synthetic_rows(symbols, M1, D1, 71)
    assert canonical(df.select(list(PARQUET_SCHEMA))).equals(canonical(want))
    assert sum(w.stats.commits for w in writers) >= 18


def test_a_frame_of_many_buckets_goes_to_each_and_homeless_rows_aside(tmp_path):
    ds = delta(tmp_path)
    frame = synthetic_rows(["BTCUSDT"], M1, D1 - 10 * MINUTE, 20)
    assert ds.write_frame(USDM, M1, frame) == (20, 2)
    dates = table_rows(ds)["date"].unique().sort().to_list()
    assert [d.isoformat() for d in dates] == ["2025-02-28", "2025-03-01"]
    bogus = synthetic_rows(["BTCUSDT"], M1, -5 * MINUTE, 1)
    assert ds.write_frame(USDM, M1, bogus) == (0, 0)
    letters = list((Path(ds.location) / ".kline-tui" / "dead-letters").iterdir())
    assert letters and "date=?" in letters[0].read_text()


def test_held_gives_the_last_candle_and_the_holes_including_the_start(tmp_path):
    ds = delta(tmp_path)
    key = StreamKey(USDM, "BTCUSDT", M1)
    rows = synthetic_rows(["BTCUSDT"], M1, D1, 30)
    ds.write_rows(USDM, M1, "2025-03-01", rows.filter(pl.col("open_time").dt.minute() != 7))
    other = StreamKey(USDM, "ETHUSDT", M1)
    ds.write_starts({key: D1 - 5 * MINUTE})
    ds.write_starts({other: D1})  # merged, not replaced: another writer's starts stay
    starts = ds.read_starts()
    assert starts == {key: D1 - 5 * MINUTE, other: D1}
    held = ds.held([key, other], starts=starts)
    assert set(held) == {key}
    assert held[key].last == D1 + 29 * MINUTE
    assert held[key].holes == [(D1 - 5 * MINUTE, D1 - MINUTE), (D1 + 7 * MINUTE, D1 + 7 * MINUTE)]
    assert ds.open_times(USDM, "BTCUSDT", M1, D1 + 5 * MINUTE, D1 + 9 * MINUTE) == [
        D1 + m * MINUTE for m in (5, 6, 8, 9)
    ]


def test_verify_finds_gaps_and_duplicates_and_compaction_removes_them(tmp_path):
    ds = delta(tmp_path)
    rows = synthetic_rows(["BTCUSDT"], M1, D1, 30).filter(pl.col("open_time").dt.minute() != 3)
    ds.write_rows(USDM, M1, "2025-03-01", rows)
    # a blind append (what kline-tui never does) leaves duplicates for verify to find
    dup = synthetic_rows(["BTCUSDT"], M1, D1 + 10 * MINUTE, 4, source="rest", salt=1.0)
    write_deltalake(
        ds.location,
        dup.with_columns(
            pl.col("open_time", "close_time").cast(pl.Datetime("us", "UTC")),
            market=pl.lit("usdm"),
            interval=pl.lit("1m"),
            date=pl.lit(pl.Series([day_ms("2025-03-01")]).cast(pl.Datetime("ms")).dt.date()[0]),
        ).select(list(DELTA_SCHEMA)),
        mode="append",
    )
    key = StreamKey(USDM, "BTCUSDT", M1)
    report = ds.verify()
    stream = report.streams[key]
    assert stream.gaps == [(D1 + 3 * MINUTE, D1 + 3 * MINUTE)]
    assert stream.duplicates == 4 and not report.clean
    result = ds.compactor().run(None, only=stream.dup_buckets, force=True)
    assert result.duplicates == 4 and result.buckets == 1
    after = ds.verify().streams[key]
    assert after.duplicates == 0 and after.candles == 29
    # the live copies were kept
    assert set(table_rows(ds)["source"]) == {"ws"}


def test_compaction_rewrites_closed_buckets_sorted_and_leaves_open_ones(tmp_path):
    ds = delta(tmp_path)
    for part in range(3):
        for day in (D1, D1 + DAY):
            first = day + part * 10 * MINUTE
            frame = synthetic_rows(["SOLUSDT", "BTCUSDT"], M1, first, 10)
            ds.write_frame(USDM, M1, frame)
    before = table_rows(ds)
    now = D1 + DAY + 12 * 3_600_000  # the first day has closed, the second has not
    result = ds.compactor().run(now)
    assert result.buckets == 1 and result.files_in == 3 and result.duplicates == 0
    buckets = {b.label: ds.files_in(b) for b in ds.partitions()}
    assert buckets == {"2025-03-01": 1, "2025-03-02": 3}
    assert canonical(table_rows(ds).select(list(PARQUET_SCHEMA))).equals(
        canonical(before.select(list(PARQUET_SCHEMA)))
    )
    first_day = pl.read_delta(ds.location).filter(pl.col("date") == pl.date(2025, 3, 1))
    assert first_day.select("symbol", "open_time").equals(
        first_day.select("symbol", "open_time").sort("symbol", "open_time")
    )


def test_one_compactor_at_a_time_and_a_dead_ones_lease_expires(tmp_path, monkeypatch):
    ds = delta(tmp_path)
    ds.write_frame(USDM, M1, synthetic_rows(["BTCUSDT"], M1, D1, 5))
    ds.write_frame(USDM, M1, synthetic_rows(["BTCUSDT"], M1, D1 + 5 * MINUTE, 5))
    first, second = ds.compactor(), DeltaDataset(ds.location).compactor()
    assert first._take_lease()
    busy = second.run(None, wait=False)
    assert busy.busy and busy.buckets == 0
    import kline_tui.store.delta_compact as delta_module

    monkeypatch.setattr(delta_module, "LEASE_S", -1)  # every lease written from now is expired
    assert first._take_lease()  # renewed, already expired: a dead compactor's
    done = second.run(None, wait=False)
    assert not done.busy and done.buckets == 1
    assert not (Path(ds.location) / "_kline_tui" / "compact.lease").exists()


def test_vacuum_keeps_files_within_the_retention_and_the_bookkeeping(tmp_path):
    ds = delta(tmp_path)
    ds.write_starts({StreamKey(USDM, "BTCUSDT", M1): D1})
    for k in range(2):
        ds.write_frame(USDM, M1, synthetic_rows(["BTCUSDT"], M1, D1 + k * 5 * MINUTE, 5))
    ds.compactor().run(None)
    folder = Path(ds.location) / "market=usdm" / "interval=1m" / "date=2025-03-01"
    assert len(list(folder.glob("*.parquet"))) == 3  # replaced files kept for readers
    ds.vacuum_retention_h = 0
    result = ds.compactor().run(None)
    assert result.vacuumed == 2 and "vacuum deleted 2 file(s)" in result.summary()
    assert len(list(folder.glob("*.parquet"))) == 1
    assert ds.read_starts()  # `_kline_tui/` is not the table's: vacuum leaves it
    assert table_rows(ds).height == 10


def test_scan_reads_a_delta_table_as_it_reads_a_folder(tmp_path):
    ds = delta(tmp_path)
    folder = tmp_path / "folder"
    frame = synthetic_rows(["BTCUSDT", "ETHUSDT"], H1, day_ms("2025-01-31"), 48)
    ds.write_frame(USDM, H1, frame)
    write_parts(folder, USDM, H1, frame)
    for kwargs in (
        {},
        {"symbol": "ETHUSDT"},
        {"market": "usdm", "interval": "1h", "start": "2025-02-01", "end": "2025-02-01T06:00"},
        {"market": "spot"},
    ):
        got = scan(ds.location, **kwargs).collect()
        want = scan(folder, **kwargs).collect()
        assert got.schema == want.schema
        assert got.sort("symbol", "open_time").equals(want.sort("symbol", "open_time")), kwargs
    assert isinstance(as_dataset(ds.location), DeltaDataset)  # found by its _delta_log
    assert isinstance(as_dataset(folder), ParquetFolder)


def test_a_folder_behind_the_interface_reads_resumes_and_compacts_as_before(tmp_path):
    """A folder as today's main writes it (parts published by parts.write_parts)."""
    data = tmp_path / "old"
    key = StreamKey(USDM, "BTCUSDT", M1)
    frame = synthetic_rows(["BTCUSDT"], M1, D1, 20).filter(pl.col("open_time").dt.minute() != 4)
    write_parts(data, USDM, M1, frame.head(10))
    write_parts(data, USDM, M1, frame.tail(9))
    write_parts(data, USDM, M1, frame.tail(3))  # a duplicate part
    ds = open_dataset(data)
    assert isinstance(ds, ParquetFolder) and ds.exists()
    held = ds.held([key])
    assert held[key].last == D1 + 19 * MINUTE and held[key].holes == [(D1 + 4 * MINUTE,) * 2]
    assert ds.scan(symbol="BTCUSDT").collect().height == 22
    result = ds.compactor().run(None)
    assert isinstance(ds.compactor(), Compactor)
    assert result.buckets == 1 and result.duplicates == 3
    assert ds.verify().streams[key].duplicates == 0
    assert not list(data.rglob("_delta_log"))


def test_what_the_store_refuses_is_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match='needs format = "delta"'):
        open_dataset(StorageSpec("s3://bucket/klines", "parquet"))
    with pytest.raises(DatasetError, match="not an object store"):
        open_dataset("ftp://host/klines")
    with pytest.raises(DatasetError, match="unknown storage format"):
        open_dataset(StorageSpec(str(tmp_path), "orc"))
    monkeypatch.setitem(sys.modules, "deltalake", None)
    with pytest.raises(DatasetError, match=r'pip install "kline-tui\[delta\]"'):
        open_dataset("s3://bucket/klines")
    assert is_url("s3://b/k") and not is_url("file:///tmp/x") and not is_url("/tmp/x")


def test_secrets_are_redacted_from_messages():
    options = {"aws_secret_access_key": "s3cr3t-value", "aws_region": "us-east-1"}
    assert redact("denied for s3cr3t-value in us-east-1", options) == (
        "denied for *** in us-east-1"
    )
    ds = DeltaDataset("s3://user:pw@bucket/klines", options)
    assert ds.describe() == "s3://bucket/klines"


def test_held_on_month_and_week_streams_and_one_with_no_hole(tmp_path):
    """The month and the week have no fixed step (or another origin): found the long way."""
    ds = delta(tmp_path)
    months = [day_ms(f"2024-{m:02d}-01") for m in (1, 2, 3, 5, 6)]
    frame = synthetic_rows(["BTCUSDT"], H1, 0, 1).clear()
    rows = [
        (
            "BTCUSDT",
            t,
            t + 1,
            1.0,
            2.0,
            0.5,
            1.5,
            1.0,
            1.0,
            1.0,
            1.0,
            1,
            "rest",
        )
        for t in months
    ]
    ds.write_frame(
        Market.SPOT,
        Interval.MO1,
        pl.concat([frame, pl.DataFrame(rows, schema=PARQUET_SCHEMA, orient="row")]),
    )
    week = StreamKey(Market.SPOT, "ETHUSDT", Interval.W1)
    weeks = [day_ms("2024-01-01") + k * 7 * DAY for k in (0, 1, 3)]  # Mondays
    ds.write_frame(
        Market.SPOT,
        Interval.W1,
        pl.DataFrame(
            [
                ("ETHUSDT", t, t + 1, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0, 1.0, 1.0, 1, "rest")
                for t in weeks
            ],
            schema=PARQUET_SCHEMA,
            orient="row",
        ),
    )
    ds.write_frame(USDM, M1, synthetic_rows(["SOLUSDT"], M1, D1, 10))
    month = StreamKey(Market.SPOT, "BTCUSDT", Interval.MO1)
    sol = StreamKey(USDM, "SOLUSDT", M1)
    held = ds.held([month, week, sol])
    assert held[month].last == months[-1]
    assert held[month].holes == [(day_ms("2024-04-01"), day_ms("2024-04-01"))]
    assert held[week].holes == [(weeks[1] + 7 * DAY, weeks[1] + 7 * DAY)]
    assert held[sol].last == D1 + 9 * MINUTE and held[sol].holes == []


def test_compaction_beside_writers_of_the_same_bucket_loses_and_doubles_nothing(tmp_path):
    """Late candles keep arriving in a closed bucket while it is compacted again and again: a
    compaction that loses the race leaves the bucket for later, a writer that loses retries."""
    ds = delta(tmp_path)
    symbols = ["BTCUSDT", "ETHUSDT"]
    ds.write_frame(USDM, M1, synthetic_rows(symbols, M1, D1, 10))
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        writer = DeltaDataset(ds.location)
        try:
            for k in range(1, 15):
                frame = synthetic_rows(symbols, M1, D1 + k * 10 * MINUTE, 10)
                writer.write_frame(USDM, M1, frame)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    compactor = DeltaDataset(ds.location).compactor()
    runs = []
    while not done.is_set():
        runs.append(compactor.run(None, wait=True))
    thread.join(60)
    runs.append(compactor.run(None))
    assert not errors
    assert not [f for r in runs for f in r.failed]  # a lost race is yielded, never a failure
    assert sum(r.buckets for r in runs) >= 1
    df = table_rows(ds)
    assert canonical(df.select(list(PARQUET_SCHEMA))).equals(
        canonical(synthetic_rows(symbols, M1, D1, 150))
    )
    assert ds.files_in(ds.partitions()[0]) == 1


async def test_verify_repair_on_a_delta_table_fetches_gaps_and_drops_duplicates(sim, tmp_path):
    """`kline-tui verify --repair` on a local Delta table: the gap fetched from the simulator's
    REST through the MERGE, the duplicates a blind append left rewritten away."""
    import asyncio

    from kline_tui.cli.verify import main as verify_main

    from .checks import assert_matches_simulator, contiguous
    from .datasets import expected_frame
    from .support import write_config

    ds = delta(tmp_path)
    key = StreamKey.parse("usdm:ETHUSDT:5m")
    first = Interval.D1.open_time_at(sim.clock.now_ms()) - 2 * DAY
    opens = [first + i * 300_000 for i in range(288)]
    held = [t for i, t in enumerate(opens) if not 40 <= i < 45]
    ds.write_frame(key.market, key.interval, expected_frame(key, held, "ws"))
    write_deltalake(  # a blind append: 10 candles twice
        ds.location,
        expected_frame(key, opens[100:110], "rest")
        .with_columns(
            pl.col("open_time", "close_time").cast(pl.Datetime("us", "UTC")),
            market=pl.lit("usdm"),
            interval=pl.lit("5m"),
            date=pl.col("open_time").dt.date(),
        )
        .select(list(DELTA_SCHEMA)),
        mode="append",
    )
    cfg = write_config(tmp_path / "c.toml", sim.endpoints)
    args = ["--data-dir", ds.location, "--config", str(cfg)]
    assert await asyncio.to_thread(verify_main, args) == 1
    assert await asyncio.to_thread(verify_main, ["--repair", *args]) == 0
    df = table_rows(ds).with_columns(pl.col("date").cast(pl.Date))
    got = assert_matches_simulator(df, key)
    assert got == opens and contiguous(key.interval, got)
    assert ds.verify().clean
