"""The storage interface: what the recorder and the tools need of a dataset, whatever holds it.

Two implementations sit behind it:

- `ParquetFolder` (`store/folder.py`): the hive-partitioned Parquet folder on a local disk, the
  default, unchanged on disk. One recorder per folder (a lock); compaction swaps folders.
- `DeltaDataset` (`store/delta.py`): a Delta Lake table, local or on an object store
  (`s3://`, `gs://`, `az://`...), written by any number of recorders at once: every write is a
  MERGE that inserts only the candles the table does not hold yet.

```python
from kline_tui.store.dataset import StorageSpec, open_dataset
dataset = open_dataset(StorageSpec("s3://bucket/klines", "delta", {"aws_region": "us-east-1"}))
dataset.scan(market="usdm", symbol="BTCUSDT", interval="1m").collect()
```

`as_dataset(path_or_dataset)` lets the functions that always took a folder's path (`backfill`,
`import`, `verify`) take a dataset too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import polars as pl

from kline_tui.model import Interval, Kind, Market, StreamKey

if TYPE_CHECKING:
    from kline_tui.binance.rest import RestClient
    from kline_tui.store.compact import CompactionResult
    from kline_tui.store.parts import Row, Rows
    from kline_tui.store.series import StoredSeries
    from kline_tui.store.verify import VerifyReport

__all__ = [
    "FORMATS",
    "Compacting",
    "Dataset",
    "DatasetError",
    "DatasetUnavailable",
    "KindLike",
    "StorageSpec",
    "as_dataset",
    "is_url",
    "local_bookkeeping",
    "open_dataset",
    "redact",
    "scan",
]

FORMATS = ("parquet", "delta")
# The object stores delta-rs reaches (`file://` is a local path spelled as a URL).
_URL = re.compile(r"\A([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "azure"})

Events = Callable[[int, str], None]
TimeLike = datetime | date | str | int | None
# `scan`'s kind: one (a Kind or its name), several, or None for every kind.
KindLike = str | Kind | Iterable[str | Kind] | None


class DatasetError(Exception):
    """A dataset that cannot be used as asked; the message is one line saying what to do."""


class DatasetUnavailable(OSError):
    """The store refused a write or a read for now (network, rights, a commit conflict retried
    too often). An OSError, like a full disk: the sink holds the rows and retries them."""


def is_url(location: str) -> bool:
    """Whether `location` is an object-store URL rather than a local path."""
    match = _URL.match(location)
    return match is not None and match.group(1).lower() != "file"


def redact(text: str, options: Mapping[str, str]) -> str:
    """`text` with every secret-looking value of the storage options, and of the object stores'
    environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`), replaced by `***` (errors from a
    store may quote the request that failed)."""
    from_env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "AZURE_", "GOOGLE_"))}
    for key, value in {**from_env, **options}.items():
        if value and len(value) >= 4 and _secret_key(key):
            text = text.replace(value, "***")
    return text


def _secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(w in lowered for w in ("secret", "token", "password", "key", "sas", "credential"))


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """Where a dataset lives and in which format: a local path or an object-store URL, `parquet`
    or `delta` (None: `delta` for a URL, `parquet` for a path), and the options passed to delta-rs
    and Polars as storage options (credentials, region, endpoint)."""

    location: str
    format: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    vacuum_retention_h: float = 168.0

    @property
    def chosen_format(self) -> str:
        """The format actually used."""
        return self.format or ("delta" if is_url(self.location) else "parquet")


@runtime_checkable
class Compacting(Protocol):
    """What compacts a dataset: in the recorder's background, and for `kline-tui compact`."""

    async def run_once(self, now_ms: int) -> CompactionResult:
        """Compact, off the event loop, the buckets closed by the exchange time `now_ms`; yields
        (does nothing) when another compaction holds the dataset."""
        ...

    def run(self, now_ms: int | None, *, wait: bool = True) -> CompactionResult:
        """Compact the closed buckets (all when `now_ms` is None), blocking."""
        ...


@runtime_checkable
class Dataset(Protocol):
    """A dataset of candles: append exactly once, what is held per stream, compact, verify,
    repair, read. Every method but `compactor` and `scan` may block (call it in a thread)."""

    location: str
    format: str
    # A write stores only the candles the dataset lacks (a Delta MERGE: a twin may have written
    # some first), so it can store fewer rows than it was given; a folder stores them all.
    stores_only_missing: bool

    def describe(self) -> str:
        """Where the dataset lives, fit for a log line (no secret)."""
        ...

    def exists(self) -> bool:
        """Whether a recorder has written here (tools refuse to write into anything else)."""
        ...

    def acquire(self) -> None:
        """Prepare for recording: take what one writer must hold (the folder's lock) and check
        the store takes writes. Raises DataDirError (a folder) or DatasetError, one line."""
        ...

    def release(self) -> None:
        """Let go of what `acquire` took."""
        ...

    def write_rows(
        self,
        market: Market,
        interval: Interval,
        bucket: str,
        rows: Rows,
        kind: Kind = Kind.TRADE,
    ) -> int:
        """Store `rows` (all in the bucket `bucket`, of streams of the kind `kind`) in one
        commit or file; returns the rows it added. A kind without volume is stored with NULL
        volume fields. An OSError when the store refuses (nothing stored); any other exception
        when the rows cannot be encoded."""
        ...

    def write_frame(
        self, market: Market, interval: Interval, frame: pl.DataFrame, kind: Kind = Kind.TRADE
    ) -> tuple[int, int]:
        """Store a frame of the dataset's columns (any buckets, one kind) that the dataset
        lacks; rows no bucket can hold go to the dead letters. Returns (rows added, files or
        commits)."""
        ...

    def set_aside(
        self,
        market: Market,
        interval: Interval,
        bucket: str | None,
        rows: Iterable[Row],
        reason: str,
        kind: Kind = Kind.TRADE,
    ) -> str:
        """Keep rows that cannot be stored in the dead letters; returns where. OSError when even
        that is refused."""
        ...

    def held(
        self,
        keys: Iterable[StreamKey],
        report: Callable[[str], None] | None = None,
        starts: Mapping[StreamKey, int] | None = None,
    ) -> dict[StreamKey, StoredSeries]:
        """Per stream with rows: its newest open time and the holes before it (from `starts`
        too), for a recorder's resume."""
        ...

    def open_times(
        self,
        market: Market,
        symbol: str,
        interval: Interval,
        start_ms: int | None = None,
        end_ms: int | None = None,
        kind: Kind = Kind.TRADE,
    ) -> list[int]:
        """The open times held of one stream within [start_ms, end_ms], ascending, each once."""
        ...

    def read_starts(self) -> dict[StreamKey, int]:
        """Where each stream's recording was meant to begin (`store.starts`)."""
        ...

    def write_starts(self, starts: Mapping[StreamKey, int]) -> None:
        """Record where streams begin before their rows are written; raises OSError."""
        ...

    def compactor(self, events: Events | None = None) -> Compacting:
        """What compacts this dataset, reporting to `events(level, message)`."""
        ...

    def verify(self, keys: Iterable[StreamKey] | None = None) -> VerifyReport:
        """Check the streams `keys` (all when None): gaps, duplicates, unreadable files."""
        ...

    async def repair(
        self,
        report: VerifyReport,
        rest: RestClient,
        keys: Iterable[StreamKey] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> VerifyReport:
        """Fix what `report` found (fetch the gaps, drop duplicates...); returns a fresh one."""
        ...

    def scan(
        self,
        market: str | Market | Iterable[str | Market] | None = None,
        symbol: str | Iterable[str] | None = None,
        interval: str | Interval | Iterable[str | Interval] | None = None,
        start: TimeLike = None,
        end: TimeLike = None,
        kind: KindLike = Kind.TRADE,
    ) -> pl.LazyFrame:
        """The rows of the kind(s) `kind` (None: every kind) as a LazyFrame: `market` (the
        partition value, `usdm-mark` for a kind), `interval`, then the file columns (see
        `store.read.scan`)."""
        ...


def open_dataset(spec: StorageSpec | str | Path) -> Dataset:
    """The dataset `spec` describes (a bare path or URL: its default format). Raises
    DatasetError, one line, when it cannot be: an unknown format, a URL asked as a folder,
    `deltalake` not installed."""
    if not isinstance(spec, StorageSpec):
        spec = StorageSpec(str(spec))
    fmt = spec.chosen_format
    url = is_url(spec.location)
    if spec.format is None and not url and _holds_delta_log(spec.location):
        fmt = "delta"  # a local Delta table opened by its path: read it as what it is
    if fmt not in FORMATS:
        raise DatasetError(f"unknown storage format {fmt!r}: write parquet or delta")
    if url:
        scheme = spec.location.split("://", 1)[0].lower()
        if scheme not in OBJECT_STORE_SCHEMES:
            raise DatasetError(
                f"{scheme}:// is not an object store kline-tui writes to: use s3://, gs:// or "
                "az://, or a local path"
            )
        if fmt != "delta":
            raise DatasetError(
                'an object-store data_dir needs format = "delta" (the Parquet folder needs a '
                "local disk's atomic rename)"
            )
    if fmt == "parquet":
        from kline_tui.store.folder import ParquetFolder

        return ParquetFolder(Path(spec.location).expanduser())
    try:
        import deltalake  # noqa: F401 - only to tell a missing extra apart
    except ImportError:
        raise DatasetError(
            'a Delta data_dir needs the deltalake package: pip install "kline-tui[delta]"'
        ) from None
    from kline_tui.store.delta import DeltaDataset

    location = (
        spec.location if url else str(Path(spec.location.removeprefix("file://")).expanduser())
    )
    return DeltaDataset(location, spec.options, vacuum_retention_h=spec.vacuum_retention_h)


def local_bookkeeping(url: str) -> Path:
    """A local folder for what a remote dataset cannot hold (dead letters, a service's runtime
    file): one per URL, under the platform's state folder."""
    import platformdirs

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in url)[:120]
    return platformdirs.user_state_path("kline-tui") / "remote" / safe


def _holds_delta_log(location: str) -> bool:
    try:
        return (Path(location.removeprefix("file://")).expanduser() / "_delta_log").is_dir()
    except (OSError, RuntimeError):
        return False


def scan(
    data_dir: Path | str,
    market: str | Market | Iterable[str | Market] | None = None,
    symbol: str | Iterable[str] | None = None,
    interval: str | Interval | Iterable[str | Interval] | None = None,
    start: TimeLike = None,
    end: TimeLike = None,
    *,
    kind: KindLike = Kind.TRADE,
    storage_options: Mapping[str, str] | None = None,
) -> pl.LazyFrame:
    """The dataset at `data_dir` (a folder, a local Delta table or an object-store URL) as a
    LazyFrame of `market`, `interval` and the file columns, filtered as asked: `start`
    inclusive, `end` exclusive on `open_time` (see `store.read.scan`). `kind` is trade klines
    unless asked: a Kind or its name (`"mark"`), several, or None for every kind; the `market`
    column then tells them apart (`usdm`, `usdm-mark`), and every kind has the same columns
    (NULL where a kind has no such field). `storage_options` go to the object store
    (credentials, region, endpoint)."""
    spec = StorageSpec(str(data_dir), None, dict(storage_options or {}))
    return open_dataset(spec).scan(market, symbol, interval, start, end, kind)


def as_dataset(where: Dataset | Path | str) -> Dataset:
    """A dataset as is; a path or URL opened in its default format."""
    if isinstance(where, (str, Path)):
        return open_dataset(StorageSpec(str(where)))
    return where
