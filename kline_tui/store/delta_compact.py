"""Compaction of the Delta table (`store.delta`): closed buckets rewritten sorted, each candle once,
then VACUUM; one compactor at a time across every process, by a lease object.

A closed bucket holding more than one file is read at one snapshot, its best copy of each candle
kept (the live one first) and sorted by (symbol, open_time), and written back by a replace-where
overwrite of that partition committed against that snapshot: a file a writer added after it makes
the commit conflict (the bucket is tried again, then left for the next run), never vanish.
delta-rs' `optimize.compact` bin-packs without sorting or removing duplicates, so it is not used.
VACUUM then deletes the files replaced more than the retention ago (7 days by default: readers
of an older snapshot keep their files).

The lease is `_kline_tui/compact.lease`, created with a conditional put (`If-None-Match: *`); a
lease whose time has passed (a compactor that died) is taken over with a conditional update.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import date

import polars as pl
from deltalake import write_deltalake

from kline_tui.store.compact import DEFAULT_GRACE_MS, CompactionResult
from kline_tui.store.dataset import Events
from kline_tui.store.delta import DELTA_SCHEMA, PARTITIONS, DeltaDataset, best_copies, lost_race
from kline_tui.store.read import Bucket

__all__ = ["COMPACT_TRIES", "LEASE_S", "VACUUM_EVERY_S", "DeltaCompactor"]

log = logging.getLogger(__name__)

LEASE_S = 15 * 60  # a compactor's lease; a dead compactor's is taken over after it
COMPACT_TRIES = 4  # a bucket's rewrite, tried again at once when a writer's commit came first
# VACUUM lists every file of the table: after a compaction, else at most this often.
VACUUM_EVERY_S = 3600.0


def _compaction_race(exc: BaseException) -> bool:
    """Whether a compaction's commit lost to a commit beside it. delta-rs checks a replace-where
    against concurrent commits by parsing its predicate again, and `interval` then reads as
    SQL's INTERVAL: that parse error, too, only ever happens when another commit came first."""
    return lost_race(exc) or "sql parser error" in str(exc).lower()


class DeltaCompactor:
    """Rewrites closed buckets of a Delta table sorted, each candle once, then VACUUMs; one at a
    time across every process (the lease)."""

    def __init__(
        self,
        dataset: DeltaDataset,
        events: Events | None = None,
        *,
        grace_ms: int = DEFAULT_GRACE_MS,
    ) -> None:
        self.dataset = dataset
        self.events = events
        self.grace_ms = grace_ms
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = asyncio.Lock()
        self._vacuumed_at: float | None = None

    async def run_once(self, now_ms: int) -> CompactionResult:
        """`run` off the event loop, not waiting for another compactor (it yields instead)."""
        async with self._lock:
            messages: list[tuple[int, str]] = []
            result = await asyncio.to_thread(
                self._run, now_ms, None, False, False, lambda lvl, msg: messages.append((lvl, msg))
            )
        if self.events is not None:
            for level, message in messages:
                self.events(level, message)
        return result

    def run(
        self,
        now_ms: int | None,
        *,
        only: Iterable[Bucket] | None = None,
        force: bool = False,
        wait: bool = True,
    ) -> CompactionResult:
        """Compact the buckets closed by `now_ms` (every bucket when None) holding more than one
        file (or, with `force`, the buckets `only` names even with one); then VACUUM. Returns
        with `busy` set when another process holds the lease (after waiting for it with
        `wait`)."""
        return self._run(now_ms, only, force, wait, lambda level, msg: None)

    def _run(
        self,
        now_ms: int | None,
        only: Iterable[Bucket] | None,
        force: bool,
        wait: bool,
        report: Events,
    ) -> CompactionResult:
        result = CompactionResult()
        started = time.perf_counter()
        if not self.dataset.exists():
            return result
        deadline = time.monotonic() + LEASE_S
        while not self._take_lease():
            if not wait or time.monotonic() > deadline:
                result.busy = True
                return result
            time.sleep(1.0)
        try:
            todo = list(only) if only is not None else self.dataset.partitions()
            for bucket in todo:
                if now_ms is not None and bucket.end_ms + self.grace_ms > now_ms:
                    continue
                self._compact_one(bucket, force, result, report)
            since = None if self._vacuumed_at is None else time.monotonic() - self._vacuumed_at
            if result.buckets or since is None or since >= VACUUM_EVERY_S:
                result.vacuumed = self._vacuum(report)
                self._vacuumed_at = time.monotonic()
        finally:
            self._drop_lease()
        result.seconds = time.perf_counter() - started
        if result.buckets:
            report(logging.INFO, result.summary())
        return result

    def _compact_one(
        self, bucket: Bucket, force: bool, result: CompactionResult, report: Events
    ) -> None:
        """Rewrite one bucket, trying again at once a few times when a commit beside it wins the
        race; past that the bucket is left for the next run (yielded, not failed)."""
        ds = self.dataset
        delay = 0.2
        for attempt in range(1, COMPACT_TRIES + 1):
            try:
                done = self._rewrite(bucket, force)
            except Exception as exc:  # noqa: BLE001 - a race or a refusal: this bucket waits
                if _compaction_race(exc) and attempt < COMPACT_TRIES:
                    time.sleep(random.uniform(0, delay))
                    delay *= 2
                    continue
                if _compaction_race(exc):
                    result.yielded += 1
                    report(logging.INFO, f"{bucket}: left for the next run (writers committed)")
                else:
                    why = ds.explain("in", exc)
                    result.failed.append(f"{bucket}: {why}")
                    report(logging.ERROR, f"cannot compact {bucket}: {why}")
                return
            if done is not None:
                files, rows_in, rows_out = done
                result.buckets += 1
                result.files_in += files
                result.rows_in += rows_in
                result.rows_out += rows_out
            return

    def _rewrite(self, bucket: Bucket, force: bool) -> tuple[int, int, int] | None:
        """One attempt: (files, rows in, rows out), or None when there is nothing to do."""
        ds = self.dataset
        table = ds.table()
        files = ds.files_in(bucket)
        if files < (1 if force else 2):
            return None
        where = (
            f"market = '{bucket.partition}' AND \"interval\" = "
            f"'{bucket.interval.path_label}' AND \"date\" = '{bucket.label}'"
        )
        # The snapshot the overwrite commits against: a file added after it makes the commit
        # conflict (and the bucket wait), never vanish.
        frame = _read_partition(ds, bucket, table.version())
        merged = best_copies(frame.select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA))
        write_deltalake(
            table,
            merged,
            mode="overwrite",
            predicate=where,
            partition_by=PARTITIONS,
            storage_options=ds.storage_options(),
        )
        return files, frame.height, merged.height

    def _vacuum(self, report: Events) -> int | None:
        """VACUUM past the retention; how many files it deleted (None when it failed)."""
        try:
            removed = self.dataset.table().vacuum(
                retention_hours=int(self.dataset.vacuum_retention_h),
                enforce_retention_duration=False,
                dry_run=False,
            )
        except Exception as exc:  # noqa: BLE001 - vacuum is housekeeping: the next run tries again
            report(logging.WARNING, self.dataset.explain("VACUUM failed on", exc))
            return None
        if removed:
            report(logging.INFO, f"vacuum removed {len(removed)} files older than the retention")
        return len(removed)

    # -- the lease -------------------------------------------------------------------------------

    def _take_lease(self) -> bool:
        """Create the lease object if absent (conditional put), or take over an expired one."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

        store = self.dataset.meta_store()
        body = json.dumps({"owner": self.owner, "until": time.time() + LEASE_S}).encode()
        try:
            obstore.put(store, "compact.lease", body, mode="create")
            return True
        except AlreadyExistsError:
            pass
        try:
            got = obstore.get(store, "compact.lease")
            held = json.loads(bytes(got.bytes()).decode("utf-8"))
            if held.get("owner") != self.owner and float(held.get("until", 0)) > time.time():
                return False
            self.dataset.put_if(store, "compact.lease", body, got.meta.get("e_tag"))
            return True
        except (AlreadyExistsError, PreconditionError, NotFoundError):
            return False
        except (ValueError, TypeError):  # not a lease we wrote: take it over
            obstore.put(store, "compact.lease", body, mode="overwrite")
            return True

    def _drop_lease(self) -> None:
        import obstore

        try:
            store = self.dataset.meta_store()
            held = json.loads(bytes(obstore.get(store, "compact.lease").bytes()).decode("utf-8"))
            if held.get("owner") == self.owner:
                obstore.delete(store, "compact.lease")
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            log.debug("lease not dropped: %s", exc)


def _read_partition(ds: DeltaDataset, bucket: Bucket, version: int) -> pl.DataFrame:
    return (
        pl.scan_delta(ds.location, version=version, storage_options=ds.storage_options())
        .filter(
            (pl.col("market") == bucket.partition)
            & (pl.col("interval") == bucket.interval.path_label)
            & (pl.col("date") == date.fromisoformat(bucket.label))
        )
        .collect()
    )
