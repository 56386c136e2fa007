"""The Parquet sink: buffers closed candles and writes them in batches, off the event loop.

A batch is flushed when the buffer holds `flush_rows` rows or its oldest row is `flush_age_s`
old, when asked (`flush()`), and on close. Each flush writes one part file per partition
(market, interval, date bucket) holding every symbol of that partition, through a single writer
thread so the event loop never waits on the disk. A part appears under its final name only once
complete. A failed write (disk full, read-only folder) keeps its rows in the buffer and is retried
until the disk takes them: nothing is lost below `max_buffer_rows`. Above that bound, new rows
are dropped, counted and reported (a restart finds the holes on disk and fetches them again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kline_tui.model import PARQUET_SCHEMA, Interval, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.store import layout
from kline_tui.store.compact import publishing

__all__ = ["ParquetSink", "SinkStats", "DEFAULT_FLUSH_ROWS", "DEFAULT_FLUSH_AGE_S"]

log = logging.getLogger(__name__)

# 50,000 rows is about 2 MB of Parquet: 2,000 1m streams fill it in 25 minutes, so the age bound
# is what flushes in practice. A minute keeps a 5-stream desk at one small file per partition per
# minute (compaction merges them) and bounds what a crash can lose to a minute, refetched on restart.
DEFAULT_FLUSH_ROWS = 50_000
DEFAULT_FLUSH_AGE_S = 60.0
# About 250 MB of buffered rows: four hours of 2,000 1m streams waiting for a disk to come back.
DEFAULT_MAX_BUFFER_ROWS = 500_000

Partition = tuple[Market, Interval, str]


@dataclass(slots=True)
class SinkStats:
    """What the sink has done, for status displays."""

    rows_buffered: int = 0
    rows_written: int = 0
    files_written: int = 0
    flushes: int = 0
    last_flush_at: float | None = None  # local wall time
    last_flush_ms: float | None = None  # how long the last flush took
    errors: int = 0
    last_error: str | None = None
    failing: bool = False  # the last write failed: rows are held in memory, retried
    dropped: int = 0  # rows refused because the buffer was at its bound


class ParquetSink:
    """Buffers closed candles by partition and publishes them as Parquet part files."""

    def __init__(
        self,
        data_dir: Path,
        events: EventLog,
        *,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_age_s: float = DEFAULT_FLUSH_AGE_S,
        max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.events = events
        self.flush_rows = flush_rows
        self.flush_age_s = flush_age_s
        self.max_buffer_rows = max_buffer_rows
        self.stats = SinkStats()
        self._dropped_logged_at = 0.0
        self._buffer: dict[Partition, list[tuple]] = defaultdict(list)
        self._buckets: dict[tuple[Interval, int], str] = {}
        self._oldest: float | None = None  # monotonic time of the oldest buffered row
        self._seq = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def add(self, key: StreamKey, candle, source: str = "ws") -> bool:
        """Buffer one closed candle (anything with `as_row()`) and where it came from; never blocks.

        False when the buffer is at its bound (the disk has been refusing writes): the row is
        dropped and counted.
        """
        if self.stats.rows_buffered >= self.max_buffer_rows:
            self.stats.dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged_at >= 10.0:
                self._dropped_logged_at = now
                self.events.error(
                    f"buffer full ({self.max_buffer_rows} rows) while {self.data_dir} refuses writes: "
                    f"{self.stats.dropped} rows dropped so far"
                )
            return False
        day = candle.open_time // 86_400_000
        bucket = self._buckets.get((key.interval, day))
        if bucket is None:  # one datetime per interval and day, not one per row
            if len(self._buckets) > 4096:
                self._buckets.clear()
            bucket = self._buckets[(key.interval, day)] = layout.bucket_of(key.interval, candle.open_time)
        self._buffer[(key.market, key.interval, bucket)].append((key.symbol, *candle.as_row(), source))
        self.stats.rows_buffered += 1
        if self._oldest is None:
            self._oldest = time.monotonic()
        if self.stats.rows_buffered >= self.flush_rows:
            self._wake.set()
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sink")

    async def _run(self) -> None:
        while True:
            timeout = self.flush_age_s
            if self._oldest is not None:
                timeout = max(0.0, self._oldest + self.flush_age_s - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if self._oldest is None:
                continue
            due = time.monotonic() - self._oldest >= self.flush_age_s
            if due or self.stats.rows_buffered >= self.flush_rows:
                ok = await self.flush()
                if not ok:
                    # The disk refused: wait a while before the next try rather than spin.
                    await asyncio.sleep(min(self.flush_age_s, 5.0))

    async def flush(self) -> bool:
        """Write everything buffered now. True when the buffer was emptied."""
        async with self._lock:
            if not self._buffer:
                return True
            batch, self._buffer = self._buffer, defaultdict(list)
            rows = sum(len(r) for r in batch.values())
            self.stats.rows_buffered -= rows
            self._oldest = None
            started = time.perf_counter()
            seq0 = self._seq
            self._seq += len(batch)
            write = asyncio.get_running_loop().run_in_executor(
                self._writer, self._write_batch, batch, seq0
            )
            try:
                failed = await asyncio.shield(write)
            except asyncio.CancelledError:
                # The thread writes on regardless: account for what it wrote, or the rows would
                # be requeued and written twice.
                self._account(batch, await write, started)
                raise
            return self._account(batch, failed, started)

    def _account(
        self, batch: dict[Partition, list[tuple]], failed: dict[Partition, str], started: float
    ) -> bool:
        """Book a finished write; requeue what failed. True when everything was written."""
        elapsed_ms = (time.perf_counter() - started) * 1000
        written = {p: r for p, r in batch.items() if p not in failed}
        n_written = sum(len(r) for r in written.values())
        self.stats.rows_written += n_written
        self.stats.files_written += len(written)
        self.stats.flushes += 1
        self.stats.last_flush_at = time.time()
        self.stats.last_flush_ms = elapsed_ms
        if written:
            self.events.info(
                f"flushed {n_written} rows to {len(written)} files in {elapsed_ms:.0f} ms"
            )
        self.stats.failing = bool(failed)
        if failed:
            self._requeue({p: batch[p] for p in failed})
            reason = next(iter(failed.values()))
            self.stats.errors += 1
            self.stats.last_error = reason
            self.events.error(
                f"could not write {sum(len(batch[p]) for p in failed)} rows to {self.data_dir}: "
                f"{reason}; they stay buffered and will be retried"
            )
            return False
        return True

    def _requeue(self, batch: dict[Partition, list[tuple]]) -> None:
        for partition, rows in batch.items():
            self._buffer[partition][:0] = rows
            self.stats.rows_buffered += len(rows)
        if self._oldest is None:
            self._oldest = time.monotonic()

    def _write_batch(self, batch: dict[Partition, list[tuple]], seq0: int) -> dict[Partition, str]:
        """Runs in the writer thread. Returns the partitions that failed, with why."""
        failed: dict[Partition, str] = {}
        for i, (partition, rows) in enumerate(sorted(batch.items())):
            try:
                self._write_part(partition, rows, seq0 + i)
            except Exception as exc:  # noqa: BLE001 - any write failure is reported, rows kept
                failed[partition] = f"{type(exc).__name__}: {exc}"
        return failed

    def _write_part(self, partition: Partition, rows: list[tuple], seq: int) -> None:
        market, interval, bucket = partition
        frame = pl.DataFrame(rows, schema=PARQUET_SCHEMA, orient="row").sort("symbol", "open_time")
        staging = layout.staging_dir(self.data_dir)
        staging.mkdir(parents=True, exist_ok=True)
        name = layout.part_name(seq)
        tmp = staging / (name + ".tmp")
        try:
            frame.write_parquet(tmp, compression="zstd", statistics=True)
            with publishing(self.data_dir):  # never inside a compaction's folder exchange
                layout.publish(tmp, layout.partition_dir(self.data_dir, market, interval, bucket) / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def close(self) -> None:
        """Stop the timer and write everything still buffered."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
        self._writer.shutdown(wait=True)
