"""Every read the README names returns exactly the rows written, with all the bookkeeping a live
data directory holds around them: a recorder's lock, a backfill's file half-way to its bucket, a
quarantined file and a dead-letter file."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import polars as pl

from kline_tui.model import Candle, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.sink import ParquetSink
from kline_tui.store import layout, scan
from kline_tui.store.layout import quarantine
from kline_tui.store.lock import DataDirLock
from kline_tui.store.parts import write_parts

from .datasets import synthetic_rows

T0 = 1_764_028_800_000  # 2025-11-25 00:00 UTC
STREAMS = [
    StreamKey.parse(s)
    for s in ("usdm:BTCUSDT:1m", "usdm:ETHUSDT:1m", "spot:BTCUSDT:1h", "coinm:BTCUSD_PERP:1d")
]


def candle(key: StreamKey, i: int, trades: int = 7) -> Candle:
    step = key.interval.ms
    t = T0 + i * step
    price = 100.0 + i
    return Candle(
        t, t + step - 1, price, price + 1, price - 1, price + 0.5, 2.0, 200.0, 1.0, 100.0, trades
    )


# market, interval, symbol, open time (ms), close, source
Row = tuple[str, str, str, int, float, str]


def polars_rows(df: pl.DataFrame) -> list[Row]:
    return sorted(
        df.select(
            pl.col("market").cast(pl.String()),
            pl.col("interval").cast(pl.String()),
            "symbol",
            pl.col("open_time").dt.epoch("ms"),
            "close",
            "source",
        ).iter_rows()
    )


def readers(data: Path) -> dict[str, object]:
    """Each documented read, as its rows or the error it ended in."""
    calls = {
        "polars on the folder": lambda: polars_rows(
            pl.scan_parquet(data, hive_partitioning=True, hidden_file_prefix=".").collect()
        ),
        "polars on the glob": lambda: polars_rows(
            pl.scan_parquet(f"{data}/**/*.parquet", hive_partitioning=True).collect()
        ),
        "duckdb on the glob": lambda: sorted(
            duckdb.sql(
                "SELECT market, interval, symbol, epoch_ms(open_time), close, source "
                f"FROM read_parquet('{data}/**/*.parquet', hive_partitioning = true)"
            ).fetchall()
        ),
        "kline_tui.store.scan": lambda: polars_rows(scan(data).collect()),
    }
    out: dict[str, object] = {}
    for name, call in calls.items():
        try:
            out[name] = call()
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return out


async def test_every_documented_read_returns_exactly_the_rows_written(tmp_path, monkeypatch):
    data = tmp_path / "data"
    recorder = DataDirLock(data)
    recorder.acquire()  # a recorder is running: its lock is held
    try:
        sink = ParquetSink(data, EventLog(), flush_rows=10_000, flush_age_s=60)
        expected: list[Row] = []
        for flush in range(3):  # several parts per partition
            for key in STREAMS:
                for i in range(flush * 5, flush * 5 + 5):
                    sink.add(key, candle(key, i))
                    c = candle(key, i)
                    expected.append(
                        (
                            key.market.value,
                            key.interval.path_label,
                            key.symbol,
                            c.open_time,
                            c.close,
                            "ws",
                        )
                    )
            await sink.flush()
        # A row the disk cannot store: into the dead-letter file.
        sink.add(
            StreamKey.parse("usdm:BNBUSDT:5m"),
            candle(StreamKey.parse("usdm:BNBUSDT:5m"), 0, trades=2**70),
        )
        await sink.close()

        # A quarantined file: a damaged part moved aside.
        bucket = layout.partition_dir(
            data, STREAMS[0].market, STREAMS[0].interval, layout.bucket_of(STREAMS[0].interval, T0)
        )
        damaged = bucket / "part-damaged.parquet"
        damaged.write_bytes(b"PAR1 not really PAR1")
        quarantine(data, [damaged])

        # A backfill half-way: its file written in staging, not yet in its bucket.
        in_staging, go_on = threading.Event(), threading.Event()
        real_publish = layout.publish

        def paused_publish(tmp, final):
            in_staging.set()
            go_on.wait(30)
            real_publish(tmp, final)

        monkeypatch.setattr(layout, "publish", paused_publish)
        backfill = synthetic_rows(["SOLUSDT"], STREAMS[0].interval, T0, 4, source="rest")
        writer = threading.Thread(
            target=write_parts, args=(data, STREAMS[0].market, STREAMS[0].interval, backfill)
        )
        writer.start()
        try:
            assert in_staging.wait(30)
            bookkeeping = sorted(
                p.relative_to(data).as_posix()
                for p in data.rglob("*")
                if p.is_file() and not p.name.endswith(".parquet")
            )
            got = readers(data)
        finally:
            go_on.set()
            writer.join()
    finally:
        recorder.release()

    assert got == {name: sorted(expected) for name in got}
    # ...while all of it was there: the lock, the staging file, the quarantined file, dead letters.
    for looked_for in (".lock", ".tmp", ".corrupt", ".jsonl"):
        assert any(p.endswith(looked_for) for p in bookkeeping), (looked_for, bookkeeping)
