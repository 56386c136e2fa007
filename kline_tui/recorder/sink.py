"""The sink: buffers closed candles and writes them to the dataset in batches, off the event loop.

A batch is flushed when the buffer holds `flush_rows` rows or its oldest row is `flush_age_s`
old, when asked (`flush()`), and on close. Each flush writes one part file per partition
(market, interval, date bucket) holding every symbol of that partition, through a single writer
thread so the event loop never waits on the disk. A part appears under its final name only once
complete.

The dataset is any `kline_tui.store.dataset.Dataset`: a Parquet folder (one part file per
partition and flush) or a Delta table (one MERGE per partition and flush, one per source when
a flush mixes them, inserting only the candles the table lacks, so twins and restarts never store
a candle twice).

Two kinds of failure, told apart by where they happen. Rows are encoded to Parquet in memory,
then written with plain file calls (`kline_tui.store.parts.write_part`, as every writer does),
or committed to the table (whose refusals the Delta store raises as OSError), so the disk's
refusal (full, read-only) surfaces as an OSError: the rows stay in the buffer and
are retried until the disk takes them, nothing lost below `max_buffer_rows` (above it new rows
are dropped, counted and reported, and `add` says so: the pipeline's ledger then counts them as
missing, fetched again once the disk has taken the buffer, or by the next start).
It is reported once when it starts and once when it ends, not at every retry. Anything else is
the rows' fault (a value no column can hold): the partition's rows are split in halves,
recursively, until every row that can be written is, and each row that cannot go alone is
appended to a dead-letter file in the bookkeeping folder (`.kline-tui/dead-letters/`, JSON
lines), counted and reported, so one bad row never blocks the flushes after it. A row whose
open time has no date bucket (before 1970, after 9999) goes there too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import itertools
import logging
import operator
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kline_tui.config import RecorderConfig
from kline_tui.model import Candle, CandleLike, Interval, Kind, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.retry import Spawn, plain_spawn
from kline_tui.store import layout, parts
from kline_tui.store.compact import SOURCE_RANK
from kline_tui.store.dataset import Dataset, as_dataset
from kline_tui.store.parts import Row

__all__ = [
    "DEFAULT_FLUSH_AGE_S",
    "DEFAULT_FLUSH_ROWS",
    "ParquetSink",
    "SinkStats",
    "stored_by_source",
]

log = logging.getLogger(__name__)

# The config's defaults (config.RecorderConfig says why these sizes), for a sink built alone.
_RECORDER = RecorderConfig()
DEFAULT_FLUSH_ROWS = _RECORDER.flush_rows
DEFAULT_FLUSH_AGE_S = _RECORDER.flush_age_s
DEFAULT_MAX_BUFFER_ROWS = _RECORDER.max_buffer_rows
# Below this much free space a write that fails for a reason Polars words its own way is taken for
# a full disk, not for bad rows: holding rows is always safe, setting them aside is not.
_FULL_BELOW_BYTES = 16 << 20
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}

# (market, interval, bucket, kind); no bucket: the open time has no place on disk. The kind is
# part of the partition's folder (market=usdm-mark) and says which fields are NULL.
Partition = tuple[Market, Interval, str | None, Kind]
_source_of = operator.itemgetter(-1)  # a row's `source` column, its last


def _by_source(rows: Sequence[Row]) -> list[list[Row]]:
    """`rows` grouped by source, the best source first (SOURCE_RANK: live, fetched, archive)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(_source_of(row), []).append(row)
    ranked = sorted(groups, key=lambda source: (SOURCE_RANK.get(source, len(SOURCE_RANK)), source))
    return [groups[source] for source in ranked]


def stored_by_source(chunk: Sequence[Row], stored: int) -> collections.Counter[str]:
    """How many of `chunk`'s rows the dataset stored (`stored`, as its write said), by their
    `source` column. A Delta MERGE stores only the candles the table lacks: none when a twin
    wrote them first, some when it wrote part of them. Exact when all or none were stored or
    the rows share one source (the sink writes one source at a time to such a dataset);
    otherwise split in proportion to the sources offered (largest remainders), the total
    exact."""
    offered = collections.Counter(map(_source_of, chunk))
    if stored >= len(chunk):
        return offered
    if stored <= 0:
        return collections.Counter()
    if len(offered) == 1:
        return collections.Counter({source: stored for source in offered})
    shares = {source: n * stored / len(chunk) for source, n in offered.items()}
    out = collections.Counter({source: int(share) for source, share in shares.items()})
    by_remainder = sorted(shares, key=lambda source: shares[source] - out[source], reverse=True)
    for source in by_remainder[: stored - sum(out.values())]:
        out[source] += 1
    return +out  # no zero counts


@dataclass(slots=True)
class SinkStats:
    """What the sink has done, for status displays."""

    rows_buffered: int = 0
    rows_written: int = 0
    files_written: int = 0
    flushes: int = 0
    last_flush_at: float | None = None  # local wall time
    last_flush_ms: float | None = None  # how long the last flush took
    flush_seconds: float = 0.0  # all flushes together (their count is `flushes`)
    errors: int = 0
    last_error: str | None = None
    failing: bool = False  # the last write failed: rows are held in memory, retried
    dropped: int = 0  # rows refused because the buffer was at its bound
    dead_letters: int = 0  # rows that cannot be stored, kept in the dead-letter file
    last_dead_letter: str | None = None  # why the latest one could not be stored
    # Rows written by market and by the value of their `source` column, added per batch once
    # its parts are on disk: the dataset's rows, counted without reading it.
    written_by: dict[tuple[Market, str], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Outcome:
    """What the writer thread did with one batch."""

    written: int = 0
    files: int = 0
    written_by: collections.Counter[tuple[Market, str]] = field(default_factory=collections.Counter)
    held: dict[Partition, list[Row]] = field(default_factory=dict)  # the disk refused these
    held_reason: str = ""
    disk_full: bool = False
    dead: int = 0
    dead_reason: str = ""
    dead_file: str | None = None

    def hold(self, partition: Partition, rows: list[Row], reason: str, full: bool) -> None:
        """Keep rows the disk refused, to be put back in the buffer and retried."""
        self.held.setdefault(partition, []).extend(rows)
        self.held_reason = reason
        self.disk_full = self.disk_full or full


class ParquetSink:
    """Buffers closed candles by partition and publishes them as Parquet part files."""

    def __init__(
        self,
        data_dir: Dataset | Path,
        events: EventLog,
        *,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_age_s: float = DEFAULT_FLUSH_AGE_S,
        max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS,
        before_write: Callable[[], Callable[[], None] | None] | None = None,
    ) -> None:
        self.dataset = as_dataset(data_dir)
        # Where rows go, as logs and messages name it (a path, or a URL without secrets).
        self.where = self.dataset.describe()
        self.data_dir = Path(self.dataset.location) if self.dataset.format == "parquet" else None
        self.events = events
        self.flush_rows = flush_rows
        self.flush_age_s = flush_age_s
        self.max_buffer_rows = max_buffer_rows
        # Called on the loop at each flush; what it returns (if anything) runs in the writer
        # thread before the batch's parts: bookkeeping that must be on disk before the rows are
        # (the streams' starts). An OSError there holds the whole batch back, like a full disk.
        self.before_write = before_write
        self.stats = SinkStats()
        self._dropped_logged_at = 0.0
        self._buffer: dict[Partition, list[Row]] = defaultdict(list)
        self._writing: dict[Partition, list[Row]] = {}  # the batch a flush is writing
        self._writing_rows = 0  # its rows: in memory too, until the write ends
        self._buckets: dict[tuple[Interval, int], str | None] = {}
        self._oldest: float | None = None  # monotonic time of the oldest buffered row
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def refusing(self) -> bool:
        """The rows held in memory (buffered, and the batch being written, which a refusing disk
        hands back) are at the bound, so `add` drops rows: the disk has been refusing writes
        (or, with `max_buffer_rows` near `flush_rows`, a fetch came faster than a flush)."""
        return self.stats.rows_buffered + self._writing_rows >= self.max_buffer_rows

    def add(self, key: StreamKey, candle: CandleLike, source: str = "ws") -> bool:
        """Buffer one closed candle (anything with `as_row()`) and where it came from; never blocks.

        False when the buffer is at its bound (the disk has been refusing writes): the row is
        dropped and counted.
        """
        if self.refusing:
            self.stats.dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged_at >= 10.0:
                self._dropped_logged_at = now
                self.events.error(
                    f"buffer full ({self.max_buffer_rows} rows) while {self.where} refuses "
                    f"writes: {self.stats.dropped} rows dropped so far"
                )
            return False
        try:
            day = candle.open_time // 86_400_000
            bucket = self._buckets.get((key.interval, day), "")
        except Exception:  # noqa: BLE001 - not a number: the writer sets the row aside
            bucket = None
        if bucket == "":  # one datetime per interval and day, not one per row
            if len(self._buckets) > 4096:
                self._buckets.clear()
            bucket = self._buckets[(key.interval, day)] = layout.bucket_of(
                key.interval, candle.open_time
            )
        self._buffer[(key.market, key.interval, bucket, key.kind)].append(
            (key.symbol, *candle.as_row(), source)
        )
        self.stats.rows_buffered += 1
        if self._oldest is None:
            self._oldest = time.monotonic()
        if self.stats.rows_buffered >= self.flush_rows:
            self._wake.set()
        return True

    def start(self, spawn: Spawn | None = None) -> None:
        """Run `run()` as a task (through `spawn`, the supervisor's, when given) until `close()`."""
        self._task = (spawn or plain_spawn)("sink", self.run)

    async def run(self) -> None:
        """Flush by row count and by age, forever."""
        while True:
            timeout = self.flush_age_s
            if self._oldest is not None:
                timeout = max(0.0, self._oldest + self.flush_age_s - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
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
        """Write everything buffered now. True when the buffer was emptied (rows that cannot be
        stored count as done: they are in the dead-letter file)."""
        async with self._lock:
            if not self._buffer:
                return True
            batch, self._buffer = self._buffer, defaultdict(list)
            rows = sum(len(r) for r in batch.values())
            self.stats.rows_buffered -= rows
            self._oldest = None
            started = time.perf_counter()
            prepare = self.before_write() if self.before_write is not None else None
            write = asyncio.get_running_loop().run_in_executor(
                self._writer, self._write_batch, batch, prepare
            )
            self._writing, self._writing_rows = batch, rows
            try:
                outcome = await asyncio.shield(write)
            except asyncio.CancelledError:
                # The thread writes on regardless: account for what it wrote, or the rows would
                # be requeued and written twice.
                self._account(await write, started)
                raise
            finally:
                self._writing, self._writing_rows = {}, 0
            return self._account(outcome, started)

    def held(self, key: StreamKey) -> list[Candle]:
        """The closed candles of `key` taken but not on disk yet (buffered, or in the batch
        being written), in no particular order."""
        out: list[Candle] = []
        for batch in (self._buffer, self._writing):
            for (market, interval, _, kind), rows in list(batch.items()):
                if market is key.market and interval is key.interval and kind is key.kind:
                    out += [Candle(*row[1:12]) for row in rows if row[0] == key.symbol]
        return out

    def _account(self, outcome: _Outcome, started: float) -> bool:
        """Book a finished write; requeue what the disk refused. True when nothing is held."""
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.stats.rows_written += outcome.written
        self.stats.files_written += outcome.files
        for market_source, n in outcome.written_by.items():
            self.stats.written_by[market_source] = self.stats.written_by.get(market_source, 0) + n
        self.stats.flushes += 1
        self.stats.flush_seconds += elapsed_ms / 1000
        self.stats.last_flush_at = time.time()
        self.stats.last_flush_ms = elapsed_ms
        if outcome.written:
            self.events.info(
                f"flushed {outcome.written} rows to {outcome.files} files in {elapsed_ms:.0f} ms"
            )
        if outcome.dead:
            self.stats.dead_letters += outcome.dead
            self.stats.last_dead_letter = outcome.dead_reason
            self.events.error(
                f"{outcome.dead} row{'s' if outcome.dead != 1 else ''} could not be stored "
                f"({outcome.dead_reason}); kept in {outcome.dead_file}"
            )
        if outcome.held:
            self._requeue(outcome.held)
            self.stats.errors += 1
            self.stats.last_error = outcome.held_reason
            if not self.stats.failing:  # once per episode, not at every retry
                self.events.error(self._refusal(outcome))
            self.stats.failing = True
            return False
        if self.stats.failing:
            self.events.info(
                f"disk takes writes again: {outcome.written} rows written to {self.where}"
            )
        self.stats.failing = False
        return True

    def _refusal(self, outcome: _Outcome) -> str:
        held = sum(len(r) for r in outcome.held.values())
        if outcome.disk_full:
            return (
                f"disk full: {held} rows held in memory (up to {self.max_buffer_rows}) and written "
                f"when {self.where} has room again; free some space ({outcome.held_reason})"
            )
        return (
            f"could not write {held} rows to {self.where}: {outcome.held_reason}; "
            "they stay buffered and will be retried"
        )

    def _requeue(self, batch: dict[Partition, list[Row]]) -> None:
        for partition, rows in batch.items():
            self._buffer[partition][:0] = rows
            self.stats.rows_buffered += len(rows)
        if self._oldest is None:
            self._oldest = time.monotonic()

    def _write_batch(
        self, batch: dict[Partition, list[Row]], prepare: Callable[[], None] | None = None
    ) -> _Outcome:
        """Runs in the writer thread: writes what it can, sets aside what it must."""
        outcome = _Outcome()
        if prepare is not None:
            try:
                prepare()
            except OSError as exc:
                full = self._disk_full(exc)
                for partition, rows in batch.items():
                    outcome.hold(partition, rows, _reason(exc), full)
                return outcome
        in_order = sorted(
            batch.items(), key=lambda item: (*item[0][:2], item[0][2] or "", item[0][3])
        )
        for (market, interval, bucket, kind), rows in in_order:
            if bucket is None:
                self._set_aside((market, interval, bucket, kind), rows, parts.NO_BUCKET, outcome)
            else:
                self._write_partition((market, interval, bucket, kind), rows, outcome)
        return outcome

    def _write_partition(self, partition: Partition, rows: list[Row], outcome: _Outcome) -> None:
        """Write one partition's rows; on a failure that is not the disk's, split them in halves
        until each bad row stands alone, and set those aside."""
        market, interval, bucket, kind = partition
        assert bucket is not None  # rows without one are set aside before
        # One write per source to a dataset that stores only what it lacks, the best first (a
        # live copy is kept over a fetched one, as within one write): what each stores is then
        # counted by source exactly. A stack: the last is written first.
        pending = _by_source(rows)[::-1] if self.dataset.stores_only_missing else [rows]
        while pending:
            chunk = pending.pop()
            try:
                stored = self.dataset.write_rows(market, interval, bucket, chunk, kind)
            except Exception as exc:  # noqa: BLE001 - sorted below: the disk's fault or the rows'
                full = self._disk_full(exc)
                if full or isinstance(exc, OSError):
                    outcome.hold(
                        partition, list(itertools.chain(chunk, *pending)), _reason(exc), full
                    )
                    return
                if len(chunk) == 1:
                    self._set_aside(partition, chunk, _reason(exc), outcome)
                else:
                    half = len(chunk) // 2
                    pending += [chunk[half:], chunk[:half]]
                continue
            outcome.written += stored
            outcome.files += 1
            for source, n in stored_by_source(chunk, stored).items():
                outcome.written_by[market, source] += n

    def _set_aside(
        self, partition: Partition, rows: list[Row], reason: str, outcome: _Outcome
    ) -> None:
        try:
            market, interval, bucket, kind = partition
            outcome.dead_file = self.dataset.set_aside(market, interval, bucket, rows, reason, kind)
        except OSError as exc:  # the disk refuses even this: hold them, try again later
            outcome.hold(partition, rows, _reason(exc), self._disk_full(exc))
            return
        outcome.dead += len(rows)
        outcome.dead_reason = reason

    def _disk_full(self, exc: BaseException) -> bool:
        """Whether a failed write means the disk is full, however the writer worded it."""
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(f"[Errno {code}]" in str(exc) for code in _DISK_FULL_ERRNOS):
            return True
        if isinstance(exc, OSError) or self.data_dir is None:
            return False
        try:
            return shutil.disk_usage(self.data_dir).free < _FULL_BELOW_BYTES
        except OSError:
            return False

    async def close(self) -> None:
        """Stop the timer and write everything still buffered."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        await self.flush()
        self._writer.shutdown(wait=True)


def _reason(exc: BaseException) -> str:
    """An exception as one short line (a strerror rather than Polars' wording when there is one)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__
