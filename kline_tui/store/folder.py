"""The hive-partitioned Parquet folder behind the storage interface (`store.dataset.Dataset`).

Nothing here is new: each method is the folder's own function (`parts`, `series`, `read`,
`starts`, `compact`, `verify`, `lock`), so a folder written by an earlier version reads,
resumes and compacts as it always did. One recorder writes a folder (its lock); `backfill`,
`import` and `verify --repair` publish parts beside it, and compaction removes the duplicates a
blind append can leave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from kline_tui.model import Interval, Kind, Market, StreamKey
from kline_tui.store import layout, parts, read, starts
from kline_tui.store.compact import Compactor
from kline_tui.store.dataset import Events, KindLike, TimeLike
from kline_tui.store.lock import DataDirLock
from kline_tui.store.series import StoredSeries, stored_series

if TYPE_CHECKING:
    from kline_tui.binance.rest import RestClient
    from kline_tui.store.parts import Row, Rows
    from kline_tui.store.verify import VerifyReport

__all__ = ["ParquetFolder"]


class ParquetFolder:
    """A local folder of part files, `market=/interval=/date=` (DESIGN.md, "Data on disk")."""

    format = "parquet"
    stores_only_missing = False

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.location = str(self.data_dir)
        self._lock = DataDirLock(self.data_dir)

    def __repr__(self) -> str:
        return f"ParquetFolder({self.location!r})"

    def describe(self) -> str:
        """The folder's path."""
        return self.location

    def exists(self) -> bool:
        """Whether a recorder wrote here (`market=` folders or the bookkeeping)."""
        return layout.is_dataset(self.data_dir)

    def acquire(self) -> None:
        """Take the folder's lock (one recorder per folder); DataDirError says who holds it."""
        self._lock.acquire()

    def release(self) -> None:
        """Drop the lock."""
        self._lock.release()

    def write_rows(
        self,
        market: Market,
        interval: Interval,
        bucket: str,
        rows: Rows,
        kind: Kind = Kind.TRADE,
    ) -> int:
        """Publish `rows` as one part file of the bucket; returns how many rows it holds."""
        count = rows.height if isinstance(rows, pl.DataFrame) else len(rows)
        parts.write_part(self.data_dir, market, interval, bucket, rows, kind)
        return count

    def write_frame(
        self, market: Market, interval: Interval, frame: pl.DataFrame, kind: Kind = Kind.TRADE
    ) -> tuple[int, int]:
        """One part per bucket; rows without a bucket go to the dead letters. Returns (rows,
        files) written."""
        written = parts.write_parts(self.data_dir, market, interval, frame, kind)
        return (frame.height - _homeless(frame), len(written)) if written else (0, 0)

    def set_aside(
        self,
        market: Market,
        interval: Interval,
        bucket: str | None,
        rows: Iterable[Row],
        reason: str,
        kind: Kind = Kind.TRADE,
    ) -> str:
        """Append to the dead-letter file in `.kline-tui/dead-letters/`; returns its path."""
        return str(parts.set_aside(self.data_dir, market, interval, bucket, rows, reason, kind))

    def held(
        self,
        keys: Iterable[StreamKey],
        report: Callable[[str], None] | None = None,
        starts: Mapping[StreamKey, int] | None = None,
    ) -> dict[StreamKey, StoredSeries]:
        """`series.stored_series` on the folder."""
        return stored_series(self.data_dir, keys, report, starts)

    def open_times(
        self,
        market: Market,
        symbol: str,
        interval: Interval,
        start_ms: int | None = None,
        end_ms: int | None = None,
        kind: Kind = Kind.TRADE,
    ) -> list[int]:
        """`read.open_times` on the folder."""
        return read.open_times(self.data_dir, market, symbol, interval, start_ms, end_ms, kind)

    def read_starts(self) -> dict[StreamKey, int]:
        """`.kline-tui/.starts.json`."""
        return starts.read_starts(self.data_dir)

    def write_starts(self, starts_: Mapping[StreamKey, int]) -> None:
        """Replace `.kline-tui/.starts.json` atomically."""
        starts.write_starts(self.data_dir, dict(starts_))

    def compactor(self, events: Events | None = None) -> Compactor:
        """The folder's compactor (a directory swap per closed bucket)."""
        return Compactor(self.data_dir, events)

    def verify(self, keys: Iterable[StreamKey] | None = None) -> VerifyReport:
        """`verify.verify_dataset` on the folder."""
        from kline_tui.store.verify import verify_dataset

        return verify_dataset(self.data_dir, keys)

    async def repair(
        self,
        report: VerifyReport,
        rest: RestClient,
        keys: Iterable[StreamKey] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> VerifyReport:
        """`verify.repair` on the folder: quarantine, fetch the gaps, compact duplicates."""
        from kline_tui.store.verify import repair

        return await repair(self.data_dir, report, rest, keys, say)

    def scan(
        self,
        market: str | Market | Iterable[str | Market] | None = None,
        symbol: str | Iterable[str] | None = None,
        interval: str | Interval | Iterable[str | Interval] | None = None,
        start: TimeLike = None,
        end: TimeLike = None,
        kind: KindLike = Kind.TRADE,
    ) -> pl.LazyFrame:
        """`read.scan` on the folder."""
        return read.scan(self.data_dir, market, symbol, interval, start, end, kind)


def _homeless(frame: pl.DataFrame) -> int:
    """Rows whose open time no bucket can hold."""
    epoch = parts.as_frame(frame)["open_time"].dt.epoch("ms")
    return int((~epoch.is_between(0, layout.END_MS - 1).fill_null(False)).sum())
