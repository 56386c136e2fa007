"""The Parquet sink: layout, atomic parts, schema, and nothing lost when the disk refuses."""

import asyncio
import errno
import logging

import polars as pl

from kline_tui.model import Candle, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.sink import ParquetSink
from kline_tui.store import parts
from kline_tui.store.schema import PARQUET_SCHEMA

T0 = 1_764_028_800_000  # 2025-11-25 00:00 UTC


def candle(t, price=100.0, step=60_000):
    return Candle(
        t, t + step - 1, price, price + 1, price - 1, price + 0.5, 2.0, 200.0, 1.0, 100.0, 7
    )


def scan(data_dir):
    return pl.scan_parquet(f"{data_dir}/**/*.parquet", hive_partitioning=True).collect()


async def test_flush_writes_hive_partitions_with_the_contract_schema(tmp_path):
    sink = ParquetSink(tmp_path, EventLog(), flush_rows=10_000, flush_age_s=60)
    btc, eth = StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("usdm:ETHUSDT:1m")
    day = StreamKey.parse("spot:BTCUSDT:1d")
    for i in range(5):
        sink.add(btc, candle(T0 + i * 60_000, 90_000.0))
        sink.add(eth, candle(T0 + i * 60_000, 3_000.0))
    sink.add(day, candle(T0, 90_000.0, 86_400_000))
    assert await sink.flush()
    await sink.close()

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert len(files) == 2
    assert files[0].startswith("market=spot/interval=1d/date=2025-01-01/part-")
    assert files[1].startswith("market=usdm/interval=1m/date=2025-11-25/part-")
    # Nothing else in the partitions: only hidden lock files in the bookkeeping folder, and no
    # half-written files.
    others = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert all(
        p.parent.name == ".kline-tui" and p.name.startswith(".") and p.suffix == ".lock"
        for p in others
    ), others

    df = scan(tmp_path)
    assert set(df.columns) == set(PARQUET_SCHEMA) | {"market", "interval", "date"}
    assert df["source"].unique().to_list() == ["ws"]
    assert df.schema["open_time"] == pl.Datetime("ms", "UTC")
    assert df.schema["trades"] == pl.Int64
    usdm = df.filter(pl.col("market") == "usdm")
    assert usdm.height == 10
    assert usdm.filter(pl.col("symbol") == "ETHUSDT")["open"].to_list() == [3000.0] * 5
    assert sink.stats.rows_written == 11 and sink.stats.files_written == 2


async def test_full_disk_keeps_rows_and_retries(tmp_path, monkeypatch):
    events = EventLog()
    sink = ParquetSink(tmp_path, events, flush_rows=10_000, flush_age_s=60)
    key = StreamKey.parse("spot:BTCUSDT:1m")
    for i in range(3):
        sink.add(key, candle(T0 + i * 60_000))

    real_write = pl.DataFrame.write_parquet

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    assert not await sink.flush()
    assert sink.stats.rows_buffered == 3 and sink.stats.errors == 1
    assert "No space left" in events.recent[-1].message and "\n" not in events.recent[-1].message
    assert not list(tmp_path.rglob("*.parquet"))

    sink.add(key, candle(T0 + 3 * 60_000))  # still accepts rows meanwhile
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real_write)
    await sink.close()
    df = scan(tmp_path)
    assert df["open_time"].dt.epoch("ms").to_list() == [T0 + i * 60_000 for i in range(4)]


async def test_flush_by_row_count(tmp_path):
    sink = ParquetSink(tmp_path, EventLog(), flush_rows=50, flush_age_s=3600)
    sink.start()
    key = StreamKey.parse("spot:ETHUSDT:1s")
    for i in range(120):
        sink.add(key, candle(T0 + i * 1000, step=1000))
    import asyncio

    for _ in range(100):
        await asyncio.sleep(0.02)
        if sink.stats.rows_written >= 100:
            break
    assert sink.stats.rows_written >= 100
    await sink.close()
    assert scan(tmp_path).height == 120


async def test_cancelled_flush_is_not_written_twice(tmp_path, monkeypatch):
    """Closing while a flush is in the writer thread must not requeue rows it is writing."""
    import asyncio
    import time

    sink = ParquetSink(tmp_path, EventLog(), flush_rows=10_000, flush_age_s=60)
    key = StreamKey.parse("spot:BTCUSDT:1m")
    for i in range(5):
        sink.add(key, candle(T0 + i * 60_000))
    real = parts.write_part

    def slow(*args):
        time.sleep(0.3)
        return real(*args)

    monkeypatch.setattr(parts, "write_part", slow)
    flushing = asyncio.create_task(sink.flush())
    await asyncio.sleep(0.1)
    flushing.cancel()
    await asyncio.gather(flushing, return_exceptions=True)
    await sink.close()
    df = scan(tmp_path)
    assert df.height == 5 and df["open_time"].n_unique() == 5


async def test_stored_series_finds_the_holes_a_crash_leaves(tmp_path):
    """Newer candles on disk than some that were lost: the holes are found on restart."""
    from kline_tui.store.series import stored_series

    sink = ParquetSink(tmp_path, EventLog(), flush_rows=10_000, flush_age_s=60)
    btc, eth = StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("usdm:ETHUSDT:1m")
    for i in (0, 1, 2, 6, 7, 9):
        sink.add(btc, candle(T0 + i * 60_000))
    sink.add(eth, candle(T0))
    await sink.close()
    found = stored_series(tmp_path, [btc, eth, StreamKey.parse("spot:BTCUSDT:1m")])
    assert found[btc].last == T0 + 9 * 60_000
    assert found[btc].holes == [
        (T0 + 3 * 60_000, T0 + 5 * 60_000),
        (T0 + 8 * 60_000, T0 + 8 * 60_000),
    ]
    assert found[eth].holes == [] and len(found) == 2


async def test_disk_full_keeps_rows_up_to_the_bound_and_counts_the_rest(tmp_path, monkeypatch):
    events = EventLog()
    sink = ParquetSink(tmp_path, events, flush_rows=10_000, flush_age_s=60, max_buffer_rows=10)
    key = StreamKey.parse("usdm:BTCUSDT:1m")
    real_write = pl.DataFrame.write_parquet

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    accepted = [sink.add(key, candle(T0 + i * 60_000)) for i in range(6)]
    assert not await sink.flush() and sink.stats.failing
    accepted += [sink.add(key, candle(T0 + i * 60_000)) for i in range(6, 15)]
    assert accepted == [True] * 10 + [False] * 5
    assert sink.stats.dropped == 5 and sink.stats.rows_buffered == 10
    assert any(
        "buffer full" in e.message and "5 rows dropped" not in e.message for e in events.recent
    )
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real_write)
    await sink.close()
    assert not sink.stats.failing
    assert scan(tmp_path)["open_time"].dt.epoch("ms").to_list() == [
        T0 + i * 60_000 for i in range(10)
    ]


async def test_the_batch_being_written_counts_against_the_bound(tmp_path, monkeypatch):
    """While a flush writes (or retries) a batch, its rows are in memory too: the bound holds
    buffered and in-flight rows together, so a refusing disk never makes it twice as large."""
    import threading

    events = EventLog()
    sink = ParquetSink(tmp_path, events, flush_rows=10_000, flush_age_s=60, max_buffer_rows=10)
    key = StreamKey.parse("usdm:BTCUSDT:1m")
    release, writing = threading.Event(), threading.Event()
    real_write = pl.DataFrame.write_parquet

    def slow(self, *args, **kwargs):
        writing.set()
        release.wait(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", slow)
    for i in range(8):
        assert sink.add(key, candle(T0 + i * 60_000))
    flush = asyncio.ensure_future(sink.flush())
    while not writing.is_set():
        await asyncio.sleep(0.01)
    assert sink.stats.rows_buffered == 0 and not sink.refusing
    accepted = [sink.add(key, candle(T0 + i * 60_000)) for i in range(8, 12)]
    assert accepted == [True, True, False, False] and sink.refusing
    release.set()
    assert not await flush  # refused: the batch is back in the buffer, within the bound
    assert sink.stats.rows_buffered == 10 and sink.refusing
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real_write)
    await sink.close()
    assert not sink.refusing and sink.stats.rows_written == 10


def dead_letters(data_dir):
    """The rows set aside, from the dead-letter files (wherever in the data folder they are)."""
    import json

    rows = []
    for path in sorted(data_dir.rglob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def opens_on_disk(data_dir, symbol=None):
    df = scan(data_dir)
    if symbol is not None:
        df = df.filter(pl.col("symbol") == symbol)
    return sorted(df["open_time"].dt.epoch("ms").to_list())


async def test_a_row_that_cannot_be_written_is_set_aside_and_the_rest_is_written(tmp_path):
    """One bad row (a trade count no Int64 holds) among good ones: the good rows are written, the
    bad one goes to the dead-letter file, is counted and reported, and later flushes work."""
    events = EventLog()
    sink = ParquetSink(tmp_path, events, flush_rows=10_000, flush_age_s=60)
    btc, eth = StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("usdm:ETHUSDT:1m")
    bad = Candle(
        T0 + 7 * 60_000, T0 + 8 * 60_000 - 1, 1.0, 2.0, 0.5, 1.5, 2.0, 200.0, 1.0, 100.0, 2**70
    )
    for i in range(20):
        sink.add(btc, bad if i == 7 else candle(T0 + i * 60_000))
        sink.add(eth, candle(T0 + i * 60_000, 3_000.0))

    assert await sink.flush()

    assert opens_on_disk(tmp_path, "BTCUSDT") == [T0 + i * 60_000 for i in range(20) if i != 7]
    assert opens_on_disk(tmp_path, "ETHUSDT") == [T0 + i * 60_000 for i in range(20)]
    assert sink.stats.dead_letters == 1 and sink.stats.rows_buffered == 0 and not sink.stats.failing
    [letter] = dead_letters(tmp_path)
    assert letter["row"]["symbol"] == "BTCUSDT" and letter["row"]["open_time"] == T0 + 7 * 60_000
    assert letter["row"]["trades"] == 2**70 and "market=usdm/interval=1m" in letter["where"]
    assert [
        e for e in events.recent if e.level >= logging.ERROR and "could not be stored" in e.message
    ]
    # Not a blocked sink: the next flush writes its rows.
    sink.add(btc, candle(T0 + 30 * 60_000))
    assert await sink.flush()
    await sink.close()
    assert T0 + 30 * 60_000 in opens_on_disk(tmp_path, "BTCUSDT")


async def test_an_open_time_with_no_bucket_is_set_aside_not_raised(tmp_path):
    """Open times no `date=` folder can hold (after 9999, before 1970) never crash the sink and
    are never stored; the rows beside them are."""
    sink = ParquetSink(tmp_path, EventLog(), flush_rows=10_000, flush_age_s=60)
    key = StreamKey.parse("usdm:BTCUSDT:1m")
    crashed = []
    for t in (T0, 10**16, -60_000, T0 + 60_000, 2**63 - 1):
        try:
            assert sink.add(key, candle(t))
        except Exception as exc:
            crashed.append(f"{t}: {type(exc).__name__}: {exc}")
    assert crashed == []
    assert await sink.flush()
    await sink.close()
    assert opens_on_disk(tmp_path) == [T0, T0 + 60_000]
    assert sorted(r["row"]["open_time"] for r in dead_letters(tmp_path)) == [
        -60_000,
        10**16,
        2**63 - 1,
    ]
    assert sink.stats.dead_letters == 3


async def test_a_full_disk_is_reported_once_per_episode_in_plain_words(tmp_path, monkeypatch):
    """The disk refuses at fsync (where a full disk shows up with delayed allocation) three flushes
    in a row: one error saying so with the rows held, not one per retry; one line when it ends."""
    import os

    events = EventLog()
    sink = ParquetSink(tmp_path, events, flush_rows=10_000, flush_age_s=60)
    key = StreamKey.parse("usdm:BTCUSDT:1m")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    for i in range(3):
        sink.add(key, candle(T0 + i * 60_000))
    monkeypatch.setattr(os, "fsync", full)
    for _ in range(3):
        assert not await sink.flush()
    monkeypatch.setattr(os, "fsync", real_fsync)
    errors = [e.message for e in events.recent if e.level >= logging.ERROR]
    assert len(errors) == 1, errors
    assert errors[0].startswith("disk full: 3 rows held") and "No space left" in errors[0]
    assert sink.stats.rows_buffered == 3 and sink.stats.failing and sink.stats.dead_letters == 0

    assert await sink.flush()
    assert [
        e.message for e in events.recent if e.message.startswith("disk takes writes again")
    ] == [f"disk takes writes again: 3 rows written to {tmp_path}"]
    await sink.close()
    assert opens_on_disk(tmp_path) == [T0 + i * 60_000 for i in range(3)]


async def test_a_full_disk_in_polars_words_is_not_taken_for_bad_rows(tmp_path, monkeypatch):
    """Polars can word a full disk as a ComputeError ("Invalid thrift"): with no room on the disk
    the rows are held as for any full disk, never split up and set aside as bad rows."""
    import shutil

    events = EventLog()
    sink = ParquetSink(tmp_path, events, flush_rows=10_000, flush_age_s=60)
    key = StreamKey.parse("usdm:BTCUSDT:1m")
    for i in range(4):
        sink.add(key, candle(T0 + i * 60_000))
    real_write, real_usage = pl.DataFrame.write_parquet, shutil.disk_usage

    def thrift(self, *args, **kwargs):
        raise pl.exceptions.ComputeError("parquet: Invalid thrift: unexpected EOF")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", thrift)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0)
    )
    assert not await sink.flush()
    assert not await sink.flush()
    errors = [e.message for e in events.recent if e.level >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("disk full: 4 rows held"), errors
    assert (
        sink.stats.rows_buffered == 4
        and sink.stats.dead_letters == 0
        and dead_letters(tmp_path) == []
    )

    monkeypatch.setattr(pl.DataFrame, "write_parquet", real_write)
    monkeypatch.setattr(shutil, "disk_usage", real_usage)
    await sink.close()
    assert opens_on_disk(tmp_path) == [T0 + i * 60_000 for i in range(4)]
