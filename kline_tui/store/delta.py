"""The Delta Lake table behind the storage interface: local or on an object store, written exactly
once by any number of recorders (DESIGN.md, "Contracts": Delta table).

    <location>/_delta_log/...                                   the transaction log
    <location>/market=usdm/interval=1m/date=2026-11-25/*.parquet the data files (delta-rs names)
    <location>/_kline_tui/starts.json                           where each stream's recording begins
    <location>/_kline_tui/compact.lease                         who compacts now (a conditional put)

Columns: the Parquet folder's (`symbol`, `open_time`, `close_time` as Delta's microsecond UTC
timestamps holding whole milliseconds, the prices and volumes, `trades`, `source`) plus the
partition columns `market`, `interval` (`1mo` for the month) and `date` (the bucket's first day).
`market` holds the stream's partition label, naming its kind as the folder's `market=` does
(`usdm`, `usdm-mark`: `model.partition_label`); the volume fields of mark, index and premium
klines are NULL.

Exactly once. Every write (the sink's flush, `backfill`, `import`, `verify --repair`) is one
MERGE on (market, interval, symbol, open_time), its predicate naming the partition's literal
values so delta-rs reads only that partition's files, inserting only the rows the table does not
hold. Two writers racing on one partition: the second commit conflicts (a concurrent append into
what its MERGE read) and is retried, with jittered backoff, from a fresh snapshot, where the
candles the first one inserted are now held. A blind append from a stale snapshot would commit
duplicates, so nothing appends.

Compaction (`store.delta_compact`) rewrites a closed bucket sorted by (symbol, open_time), each
candle once, by a replace-where overwrite of that partition, then VACUUMs; one compactor at a
time (a lease object); writers never wait for it (their MERGE retries).

`_kline_tui/` starts with an underscore: Delta readers never list it and VACUUM leaves it alone.
Secrets in the storage options never reach a message: errors are passed through `redact`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from kline_tui.model import Interval, Kind, Market, StreamKey, parse_partition, partition_label
from kline_tui.store import layout
from kline_tui.store.compact import SOURCE_RANK
from kline_tui.store.dataset import (
    DatasetError,
    DatasetUnavailable,
    Events,
    KindLike,
    TimeLike,
    local_bookkeeping,
    redact,
)
from kline_tui.store.gaps import find_gaps
from kline_tui.store.parts import NO_BUCKET, as_frame, set_aside
from kline_tui.store.read import (
    READ_SCHEMA,
    Bucket,
    bucket_span,
    kinds_of,
    parse_time,
    partition_labels,
)
from kline_tui.store.schema import PARQUET_SCHEMA
from kline_tui.store.series import StoredSeries
from kline_tui.store.starts import parse_starts

if TYPE_CHECKING:
    from kline_tui.binance.rest import RestClient
    from kline_tui.store.delta_compact import DeltaCompactor
    from kline_tui.store.parts import Row, Rows
    from kline_tui.store.verify import VerifyReport

__all__ = ["DELTA_SCHEMA", "PARTITIONS", "DeltaDataset", "best_copies", "lost_race"]

log = logging.getLogger(__name__)

PARTITIONS = ["market", "interval", "date"]
_US_UTC = pl.Datetime("us", "UTC")
DELTA_SCHEMA = pl.Schema(
    {
        **{c: (_US_UTC if t == pl.Datetime("ms", "UTC") else t) for c, t in PARQUET_SCHEMA.items()},
        "market": pl.String(),
        "interval": pl.String(),
        "date": pl.Date(),
    }
)

# A commit that conflicts is retried this many times, the waits growing from the first to the cap
# with full jitter: twins flushing the same partitions at the same second settle in a few tries.
COMMIT_TRIES = 12
_BACKOFF_FIRST_S = 0.05
_BACKOFF_CAP_S = 2.0
_META = "_kline_tui"
_STARTS_MAX_BYTES = 64 * 1024 * 1024  # far beyond any watch list: a bigger object is not ours

_T = TypeVar("_T")


def lost_race(exc: BaseException) -> bool:
    """Whether a failed commit lost a race with another writer (worth retrying at once)."""
    if isinstance(exc, CommitFailedError):
        return True
    text = str(exc).lower()
    return "concurrent" in text or "conflict" in text or "version already exists" in text


@dataclass(slots=True)
class CommitStats:
    """What this process's commits met: conflicts retried, and commits made."""

    commits: int = 0
    conflicts: int = 0


class DeltaDataset:
    """A Delta table of candles at a local path or an object-store URL."""

    format = "delta"
    stores_only_missing = True

    def __init__(
        self,
        location: str,
        options: Mapping[str, str] | None = None,
        *,
        vacuum_retention_h: float = 168.0,
    ) -> None:
        self.location = location.rstrip("/")
        self.options = {str(k): str(v) for k, v in (options or {}).items()}
        self.vacuum_retention_h = vacuum_retention_h
        self.stats = CommitStats()
        self._table: DeltaTable | None = None
        self._local = "://" not in self.location
        self._acquired = False
        # The DeltaTable object is shared by the sink's writer thread and the resume of a stream
        # added while recording: one at a time (the compactor has a DeltaDataset of its own).
        self._guard = threading.RLock()

    def __repr__(self) -> str:
        return f"DeltaDataset({self.describe()!r})"

    # -- where ----------------------------------------------------------------------------------

    def describe(self) -> str:
        """The location without any credentials a URL may carry."""
        if self._local:
            return self.location
        parts = urlsplit(self.location)
        host = parts.hostname or ""
        return urlunsplit((parts.scheme, host, parts.path, "", ""))

    def explain(self, what: str, exc: BaseException) -> str:
        """One line: what failed where, and why, secrets removed."""
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return redact(f"{what} {self.describe()}: {text}", self.options)

    def storage_options(self) -> dict[str, str] | None:
        """The options for delta-rs and Polars (None: the environment's alone)."""
        return dict(self.options) if self.options else None

    def exists(self) -> bool:
        """Whether a Delta table is there. (Not `DeltaTable.is_deltatable`, which was seen to
        hang against an S3 API that answers its probe with 404s.)"""
        try:
            self.table()
        except TableNotFoundError:
            return False
        except (DeltaError, OSError) as exc:
            raise DatasetUnavailable(self.explain("cannot read", exc)) from None
        return True

    def table(self, fresh: bool = True) -> DeltaTable:
        """The table, brought up to its latest version when `fresh`. Raises TableNotFoundError."""
        with self._guard:
            if self._table is None:
                self._table = DeltaTable(self.location, storage_options=self.storage_options())
            elif fresh:
                self._table.update_incremental()
            return self._table

    def _ensure_table(self) -> DeltaTable:
        """The table, created empty (with its partitioning) if there is none yet. Two creators
        racing: one commit of version 0 wins, the other finds the table."""
        try:
            return self.table()
        except TableNotFoundError:
            pass
        if self._local:
            Path(self.location).mkdir(parents=True, exist_ok=True)
        try:
            write_deltalake(
                self.location,
                pl.DataFrame(schema=DELTA_SCHEMA),
                partition_by=PARTITIONS,
                mode="append",
                storage_options=self.storage_options(),
                configuration={"delta.checkpointInterval": "50"},
            )
        except DeltaError as exc:
            if not self.exists():
                raise
            log.debug("the table was created beside us: %s", exc)
        self._table = None
        return self.table()

    def acquire(self) -> None:
        """Check the store takes us (creating the table if it has none); DatasetError, one line,
        if it does not (no bucket, no rights, unreachable). Taking it again is a no-op."""
        if self._acquired:
            return
        try:
            self._ensure_table()
            self.meta_store()  # the bookkeeping objects' store: refused options fail here too
        except Exception as exc:  # noqa: BLE001 - any refusal is one line, and the start ends
            raise DatasetError(
                self.explain("cannot use the Delta table at", exc)
                + " (check the bucket, the credentials and [storage.options])"
            ) from None
        self._acquired = True

    def release(self) -> None:
        """Nothing is held: many recorders write one table."""

    # -- writing ---------------------------------------------------------------------------------

    def _retrying(self, what: str, attempt: Callable[[], _T]) -> _T:
        """Run a commit, retrying conflicts with jittered backoff; OSError when it cannot."""
        delay = _BACKOFF_FIRST_S
        for tries in range(1, COMMIT_TRIES + 1):
            try:
                result = attempt()
            except Exception as exc:  # noqa: BLE001 - sorted: a race, or the store's refusal
                if lost_race(exc) and tries < COMMIT_TRIES:
                    self.stats.conflicts += 1
                    time.sleep(random.uniform(0, delay))
                    delay = min(delay * 2, _BACKOFF_CAP_S)
                    continue
                raise DatasetUnavailable(self.explain(what, exc)) from None
            self.stats.commits += 1
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def write_rows(
        self,
        market: Market,
        interval: Interval,
        bucket: str,
        rows: Rows,
        kind: Kind = Kind.TRADE,
    ) -> int:
        """MERGE `rows` (one bucket of one kind) into the table, inserting only the candles it
        does not hold; returns how many it inserted. OSError when the store refuses; any other
        exception when the rows cannot be encoded (nothing was sent)."""
        label = partition_label(market, kind)
        frame = _delta_frame(as_frame(rows, kind), label, interval, bucket)
        if frame.is_empty():
            return 0
        source = frame
        predicate = (
            # `interval` as a literal trips delta-rs' conflict checker, which re-parses the
            # predicate (an SQL INTERVAL); matched on the source's column it still prunes, as
            # the source holds one interval.
            f"t.market = '{label}' AND t.\"date\" = '{bucket}' "
            "AND t.interval = s.interval AND t.symbol = s.symbol AND t.open_time = s.open_time"
        )

        def merge() -> int:
            with self._guard:
                table = self._ensure_table()
                metrics = (
                    table.merge(source, predicate, source_alias="s", target_alias="t")
                    .when_not_matched_insert_all()
                    .execute()
                )
            return int(metrics.get("num_target_rows_inserted", 0))

        return self._retrying("cannot write to", merge)

    def write_frame(
        self, market: Market, interval: Interval, frame: pl.DataFrame, kind: Kind = Kind.TRADE
    ) -> tuple[int, int]:
        """One MERGE per bucket; rows without a bucket go to the dead letters. Returns (rows
        inserted, commits)."""
        if frame.is_empty():
            return 0, 0
        frame = as_frame(frame, kind)
        epoch = pl.col("open_time").dt.epoch("ms")
        placeable = epoch.is_between(0, layout.END_MS - 1).fill_null(False)
        homeless = frame.filter(~placeable)
        if not homeless.is_empty():
            as_ms = homeless.with_columns(
                open_time=epoch, close_time=pl.col("close_time").dt.epoch("ms")
            )
            self.set_aside(market, interval, None, as_ms.iter_rows(), NO_BUCKET, kind)
        labelled = frame.filter(placeable).with_columns(_b=_bucket_expr(interval))
        rows = commits = 0
        for (bucket,), part in sorted(labelled.partition_by("_b", as_dict=True).items()):
            rows += self.write_rows(market, interval, str(bucket), part.drop("_b"), kind)
            commits += 1
        return rows, commits

    def set_aside(
        self,
        market: Market,
        interval: Interval,
        bucket: str | None,
        rows: Iterable[Row],
        reason: str,
        kind: Kind = Kind.TRADE,
    ) -> str:
        """Rows that cannot be stored, as JSON lines: beside the table when it is local, else in
        the platform's state folder (never in the table, which readers see)."""
        folder = Path(self.location) if self._local else local_bookkeeping(self.describe())
        return str(set_aside(folder, market, interval, bucket, rows, reason, kind))

    # -- reading ---------------------------------------------------------------------------------

    def _lazy(self) -> pl.LazyFrame:
        return pl.scan_delta(self.location, storage_options=self.storage_options())

    def _frame_of(
        self,
        labels: Iterable[str] | None,
        intervals: Iterable[Interval] | None,
        symbols: Iterable[str] | None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pl.LazyFrame | None:
        """The table filtered on its partitions first (so only those files are read), or None
        when there is no table yet. `labels` are `market` partition values (`usdm-mark`)."""
        if not self.exists():
            return None
        lf = self._lazy()
        if labels is not None:
            lf = lf.filter(pl.col("market").is_in(list(labels)))
        if intervals is not None:
            ivs = list(intervals)
            lf = lf.filter(pl.col("interval").is_in([i.path_label for i in ivs]))
            if start_ms is not None and len(ivs) == 1:
                first = layout.bucket_of(ivs[0], max(0, start_ms))
                if first is not None:
                    lf = lf.filter(pl.col("date") >= date.fromisoformat(first))
            if end_ms is not None and len(ivs) == 1:
                last = layout.bucket_of(ivs[0], min(layout.END_MS - 1, max(0, end_ms)))
                if last is not None:
                    lf = lf.filter(pl.col("date") <= date.fromisoformat(last))
        if symbols is not None:
            lf = lf.filter(pl.col("symbol").is_in(list(symbols)))
        if start_ms is not None:
            lf = lf.filter(pl.col("open_time") >= _us_literal(start_ms))
        if end_ms is not None:
            lf = lf.filter(pl.col("open_time") <= _us_literal(end_ms))
        return lf

    def _read(self, lf: pl.LazyFrame) -> pl.DataFrame:
        try:
            return lf.collect()
        except Exception as exc:  # noqa: BLE001 - the store's refusal, said without secrets
            raise DatasetUnavailable(self.explain("cannot read", exc)) from None

    def held(
        self,
        keys: Iterable[StreamKey],
        report: Callable[[str], None] | None = None,
        starts: Mapping[StreamKey, int] | None = None,
    ) -> dict[StreamKey, StoredSeries]:
        """Each stream's newest open time and holes, from one query per market, kind and
        interval reading only `symbol` and `open_time` of that partition's files."""
        by_folder: dict[tuple[Market, Kind, Interval], set[str]] = {}
        for key in keys:
            by_folder.setdefault((key.market, key.kind, key.interval), set()).add(key.symbol)
        out: dict[StreamKey, StoredSeries] = {}
        for (market, kind, interval), symbols in by_folder.items():
            lf = self._frame_of([partition_label(market, kind)], [interval], symbols)
            if lf is None:
                return out
            times = lf.select("symbol", t=pl.col("open_time").dt.epoch("ms"))
            for symbol, last, holes in self._series(interval, times):
                key = StreamKey(market, symbol, interval, kind)
                start = (starts or {}).get(key)
                first = holes.pop()  # the first held open time, last of the list
                if start is not None and start < first:
                    holes.insert(0, (start, interval.prev_open(first)))
                out[key] = StoredSeries(last, holes)
        return out

    def _series(
        self, interval: Interval, times: pl.LazyFrame
    ) -> Iterable[tuple[str, int, list[Any]]]:
        """Per symbol: its last open time and its holes, with its first open time appended.

        A fixed step (every interval but the week and the month) is checked in Polars, the holes
        being where consecutive open times differ by more than the step: a resume of 2,000
        streams on a 10M-row table reads its two columns and loops over the holes only."""
        step = interval.ms
        origin = interval.open_time_at(0) if step else None
        if step is None or origin != 0 or interval is Interval.W1:
            frame = self._read(times.unique().sort("symbol", "t"))
            for (symbol,), group in frame.group_by(["symbol"], maintain_order=True):
                opens = group["t"].to_list()
                yield str(symbol), opens[-1], [*find_gaps(interval, opens), opens[0]]
            return
        aligned = times.select("symbol", t=pl.col("t") - pl.col("t") % step)
        # One hash aggregation answers for every stream without a hole (the usual case): as
        # many distinct open times as steps from its first to its last. Only the others are
        # sorted, to find where their holes are.
        ends = self._read(
            aligned.group_by("symbol").agg(
                first=pl.col("t").min(), last=pl.col("t").max(), n=pl.col("t").n_unique()
            )
        )
        broken = ends.filter(pl.col("n") < (pl.col("last") - pl.col("first")) // step + 1)
        holes: dict[str, list[Any]] = {}
        if not broken.is_empty():
            gaps = self._read(
                aligned.filter(pl.col("symbol").is_in(broken["symbol"].to_list()))
                .unique()
                .sort("symbol", "t")
                .with_columns(prev=pl.col("t").shift(1).over("symbol"))
                .filter(pl.col("t") - pl.col("prev") > step)
                .select("symbol", a=pl.col("prev") + step, b=pl.col("t") - step)
                .sort("symbol", "a")
            )
            for symbol, a, b in gaps.iter_rows():
                holes.setdefault(symbol, []).append((a, b))
        for symbol, first, last, _ in ends.iter_rows():
            yield symbol, last, [*holes.get(symbol, []), first]

    def open_times(
        self,
        market: Market,
        symbol: str,
        interval: Interval,
        start_ms: int | None = None,
        end_ms: int | None = None,
        kind: Kind = Kind.TRADE,
    ) -> list[int]:
        """The open times held of one stream within [start_ms, end_ms], from its partitions."""
        label = partition_label(market, kind)
        lf = self._frame_of([label], [interval], [symbol], start_ms, end_ms)
        if lf is None:
            return []
        frame = self._read(lf.select(t=pl.col("open_time").dt.epoch("ms")).unique().sort("t"))
        return [int(t) for t in frame["t"].to_list()]

    def scan(
        self,
        market: str | Market | Iterable[str | Market] | None = None,
        symbol: str | Iterable[str] | None = None,
        interval: str | Interval | Iterable[str | Interval] | None = None,
        start: TimeLike = None,
        end: TimeLike = None,
        kind: KindLike = Kind.TRADE,
    ) -> pl.LazyFrame:
        """The table as `store.read.scan` gives a folder: `market` (its partition value, which
        names the kind), `interval`, then the file columns (times in ms, as the folder's),
        filtered; partitions pruned by delta-rs."""
        from kline_tui.model import validate_symbol

        markets = _many(market, lambda m: m if isinstance(m, Market) else Market.parse(m))
        intervals = _many(interval, lambda i: i if isinstance(i, Interval) else Interval.parse(i))
        symbols = _many(symbol, validate_symbol)
        start_ms, end_ms = parse_time(start), parse_time(end)
        lf = self._frame_of(
            partition_labels(markets, kinds_of(kind)),
            intervals,
            symbols,
            start_ms,
            None if end_ms is None else end_ms - 1,
        )
        if lf is None:
            return pl.LazyFrame(schema=READ_SCHEMA)
        return lf.select(
            pl.col(c).cast(t) if c in ("open_time", "close_time") else pl.col(c)
            for c, t in READ_SCHEMA.items()
        )

    # -- bookkeeping objects ---------------------------------------------------------------------

    def meta_store(self) -> Any:
        """An obstore store rooted at `_kline_tui/` of the table (local or remote)."""
        from obstore.store import from_url

        make: Any = from_url  # its overloads are per cloud; the URL's scheme picks one

        if self._local:
            folder = Path(self.location) / _META
            folder.mkdir(parents=True, exist_ok=True)
            return make(folder.resolve().as_uri())
        config: dict[str, Any] = {}
        client: dict[str, Any] = {}
        for key, value in self.options.items():
            low = key.lower()
            if low in ("aws_allow_http", "allow_http"):
                client["allow_http"] = value.lower() in ("1", "true", "yes")
            elif low in ("aws_endpoint_url", "endpoint_url", "aws_endpoint", "endpoint"):
                config["endpoint"] = value
            elif low in ("aws_s3_locking_provider", "conditional_put", "aws_conditional_put"):
                continue
            else:
                config[low] = value
        if "allow_http" not in client and os.environ.get("AWS_ALLOW_HTTP", "").lower() in (
            "1",
            "true",
        ):
            client["allow_http"] = True
        if "endpoint" not in config and os.environ.get("AWS_ENDPOINT_URL"):
            config["endpoint"] = os.environ["AWS_ENDPOINT_URL"]
        return make(f"{self.location}/{_META}", config=config or None, client_options=client)

    def read_starts(self) -> dict[StreamKey, int]:
        """`_kline_tui/starts.json`: each stream's first wanted open time (empty when absent or
        unreadable)."""
        starts, _ = self._get_starts()
        return starts

    def _get_starts(self) -> tuple[dict[StreamKey, int], str | None]:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            store = self.meta_store()
            got = obstore.get(store, "starts.json")
            if int(got.meta.get("size", 0)) > _STARTS_MAX_BYTES:
                log.warning("%s/%s/starts.json is too large to be ours", self.describe(), _META)
                return {}, None
            raw = json.loads(bytes(got.bytes()).decode("utf-8"))
            etag = got.meta.get("e_tag")
        except (NotFoundError, FileNotFoundError):
            return {}, None
        except Exception as exc:  # noqa: BLE001 - unreadable: the holes between rows still count
            log.warning("%s", self.explain("cannot read the starts of", exc))
            return {}, None
        return parse_starts(raw), etag

    def write_starts(self, starts: Mapping[StreamKey, int]) -> None:
        """Merge `starts` into the shared file (the earliest start of each stream wins: twins and
        shards write it too), with a conditional put retried when another writer got there
        first. Raises OSError."""
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        for _ in range(COMMIT_TRIES):
            held, etag = self._get_starts()
            merged = dict(held)
            for key, start in starts.items():
                merged[key] = min(start, merged.get(key, start))
            if merged == held and etag is not None:
                return
            body = json.dumps({str(k): t for k, t in sorted(merged.items())}).encode()
            try:
                self.put_if(self.meta_store(), "starts.json", body, etag)
                return
            except (AlreadyExistsError, PreconditionError):
                time.sleep(random.uniform(0, _BACKOFF_FIRST_S * 4))
                continue
            except Exception as exc:  # noqa: BLE001 - the store refused: the flush holds its rows
                raise DatasetUnavailable(self.explain("cannot write the starts of", exc)) from None
        raise DatasetUnavailable(f"cannot write the starts of {self.describe()}: too many races")

    def put_if(self, store: Any, path: str, body: bytes, etag: str | None) -> None:
        """Write `path` only if it is absent (`etag` None) or still the version `etag` names;
        raises obstore's AlreadyExistsError or PreconditionError otherwise. A local folder has no
        conditional update in object_store: there a file lock makes the check and the write one
        step (one machine: every writer of a local table shares its lock)."""
        import obstore
        from obstore.exceptions import PreconditionError

        if etag is None:
            obstore.put(store, path, body, mode="create")
            return
        if not self._local:
            obstore.put(store, path, body, mode={"e_tag": etag})
            return
        import fcntl

        fd = os.open(Path(self.location) / _META / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now = obstore.head(store, path).get("e_tag")
            except FileNotFoundError:
                now = None
            if now != etag:
                raise PreconditionError(f"{path} changed meanwhile")
            obstore.put(store, path, body, mode="overwrite")
        finally:
            os.close(fd)  # closing drops the lock

    # -- compaction, verification ---------------------------------------------------------------

    def compactor(self, events: Events | None = None) -> DeltaCompactor:
        """The table's compactor: sorted rewrites of closed buckets, then VACUUM. It works on a
        DeltaDataset of its own, so it never waits for the writer's table object nor holds it."""
        from kline_tui.store.delta_compact import DeltaCompactor

        own = DeltaDataset(self.location, self.options, vacuum_retention_h=self.vacuum_retention_h)
        return DeltaCompactor(own, events)

    def partitions(self) -> list[Bucket]:
        """Every partition of the table with how it is labelled; `path` is its relative path."""
        table = self.table()
        seen: dict[tuple[str, str, str], Bucket] = {}
        for part in table.partitions():
            m, i, d = part.get("market"), part.get("interval"), part.get("date")
            if m is None or i is None or d is None or (m, i, d) in seen:
                continue
            try:
                (market, kind), interval = parse_partition(m), Interval.parse(i)
                start, end = bucket_span(interval, d)
            except ValueError:  # SpecError is one
                continue
            path = Path(f"market={m}/interval={i}/date={d}")
            seen[(m, i, d)] = Bucket(market, interval, d, path, start, end, kind)
        return sorted(seen.values(), key=lambda b: (b.partition, b.interval.value, b.label))

    def files_in(self, bucket: Bucket) -> int:
        """How many data files the partition has now (in the snapshot last loaded)."""
        folder = f"/{bucket.path.as_posix()}/"
        return sum(folder in uri for uri in self.table(fresh=False).file_uris())

    def verify(self, keys: Iterable[StreamKey] | None = None) -> VerifyReport:
        """Per stream: first and last candle, count, gaps and duplicates, bucket by bucket."""
        from kline_tui.store.verify import StreamReport, VerifyReport

        keys = None if keys is None else list(keys)
        report = VerifyReport()
        for key in keys or []:
            report.streams[key] = StreamReport(key)
        labels = None if keys is None else {k.partition for k in keys}
        intervals = None if keys is None else {k.interval for k in keys}
        symbols = None if keys is None else {k.symbol for k in keys}
        lf = self._frame_of(labels, intervals, symbols)
        if lf is None:
            return report
        wanted = None if keys is None else set(keys)
        per = self._read(
            lf.group_by("market", "interval", "date", "symbol")
            .agg(rows=pl.len(), times=pl.col("open_time").dt.epoch("ms").unique().sort())
            .sort("market", "interval", "symbol", "date")
        )
        for m, i, d, symbol, rows, times in per.iter_rows():
            try:
                (market, kind), interval = parse_partition(m), Interval.parse(i)
            except ValueError:  # an unknown market= value: not a stream of ours
                continue
            key = StreamKey(market, symbol, interval, kind)
            if wanted is not None and key not in wanted:
                continue
            label = d.isoformat() if isinstance(d, date) else str(d)
            start, end = bucket_span(interval, label)
            path = Path(f"market={m}/interval={i}/date={label}")
            bucket = Bucket(market, interval, label, path, start, end, kind)
            report.streams.setdefault(key, StreamReport(key)).add_bucket(bucket, rows, times)
        return report

    async def repair(
        self,
        report: VerifyReport,
        rest: RestClient,
        keys: Iterable[StreamKey] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> VerifyReport:
        """Fetch the gaps from REST (through MERGE, as every writer) and rewrite the buckets
        holding duplicates; returns a fresh report."""
        from kline_tui.store.verify import fetch_gaps

        say = say or (lambda text: None)
        keys = None if keys is None else list(keys)
        await fetch_gaps(self, report, rest, say)
        dup = {b.path: b for s in report.streams.values() for b in s.dup_buckets}
        if dup:
            compacted = await asyncio.to_thread(
                self.compactor().run, None, only=list(dup.values()), force=True
            )
            say(f"removed {compacted.duplicates} duplicate rows from {compacted.buckets} bucket(s)")
            for failure in compacted.failed:
                say(f"could not compact {failure}")
        return await asyncio.to_thread(self.verify, keys)


def best_copies(frame: pl.DataFrame) -> pl.DataFrame:
    """Each (symbol, open_time) once, the live copy first, sorted by (symbol, open_time)."""
    rank = pl.col("source").replace_strict(
        SOURCE_RANK, default=len(SOURCE_RANK), return_dtype=pl.Int64
    )
    return (
        frame.with_columns(_rank=rank)
        .sort("symbol", "open_time", "_rank")
        .unique(["symbol", "open_time"], keep="first", maintain_order=True)
        .drop("_rank")
    )


def _delta_frame(frame: pl.DataFrame, label: str, interval: Interval, bucket: str) -> pl.DataFrame:
    """Rows of one bucket (of the partition `label`, `usdm-mark`) in the table's columns, each
    candle once (the best copy)."""
    frame = frame.with_columns(
        open_time=pl.col("open_time").cast(_US_UTC),
        close_time=pl.col("close_time").cast(_US_UTC),
        market=pl.lit(label, pl.String()),
        interval=pl.lit(interval.path_label, pl.String()),
        date=pl.lit(date.fromisoformat(bucket), pl.Date()),
    )
    return best_copies(frame.select(list(DELTA_SCHEMA)))


_BUCKET_FORMAT = {"day": "%Y-%m-%d", "month": "%Y-%m-01", "year": "%Y-01-01"}


def _bucket_expr(interval: Interval) -> pl.Expr:
    return pl.col("open_time").dt.strftime(_BUCKET_FORMAT[layout.BUCKET_OF_INTERVAL[interval]])


def _us_literal(ms: int) -> pl.Expr:
    return pl.lit(ms * 1000, pl.Int64()).cast(_US_UTC)


def _many(value: Any, parse: Callable[[Any], _T]) -> list[_T] | None:
    if value is None:
        return None
    if isinstance(value, (str, Market, Interval, Kind)):
        return [parse(value)]
    return [parse(v) for v in value]
