"""Where rows live in the data directory (a contract: users and other tools read it).

    <data_dir>/market=usdm/interval=1m/date=2026-11-25/part-<UTC time>-<seq>-<uuid>.parquet

The `date` bucket is the first day of the period a part file covers, chosen per interval so that a
compacted bucket is neither tiny nor huge: a day up to 30m candles (1,440 rows a day per symbol for
1m, 86,400 for 1s), a month for 1h to 12h, a year for 1d and longer. Files are written under
`.staging/` (nothing there ends in `.parquet`) and moved into place only when complete.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kline_tui.model import Interval, Market

__all__ = [
    "bucket_of",
    "partition_root",
    "partition_dir",
    "part_name",
    "staging_dir",
    "publish",
    "fsync_dir",
    "BUCKET_OF_INTERVAL",
]

_DAILY = {Interval.S1, Interval.M1, Interval.M3, Interval.M5, Interval.M15, Interval.M30}
_MONTHLY = {Interval.H1, Interval.H2, Interval.H4, Interval.H6, Interval.H8, Interval.H12}

BUCKET_OF_INTERVAL: dict[Interval, str] = {
    iv: ("day" if iv in _DAILY else "month" if iv in _MONTHLY else "year") for iv in Interval
}


def bucket_of(interval: Interval, open_time_ms: int) -> str:
    """The `date=` label (YYYY-MM-DD, UTC) of the bucket holding a candle."""
    dt = datetime.fromtimestamp(open_time_ms / 1000, tz=timezone.utc)
    kind = BUCKET_OF_INTERVAL[interval]
    if kind == "day":
        return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
    if kind == "month":
        return f"{dt.year:04d}-{dt.month:02d}-01"
    return f"{dt.year:04d}-01-01"


def partition_root(data_dir: Path, market: Market, interval: Interval) -> Path:
    """The folder holding every date bucket of one market and interval."""
    return data_dir / f"market={market.value}" / f"interval={interval.path_label}"


def partition_dir(data_dir: Path, market: Market, interval: Interval, bucket: str) -> Path:
    """The folder of one partition (market, interval and bucket are validated values)."""
    return partition_root(data_dir, market, interval) / f"date={bucket}"


def part_name(seq: int, now: datetime | None = None) -> str:
    """A part file name that sorts by write time: `part-20261125T161500123Z-000042-<uuid>.parquet`."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"part-{stamp}-{seq:06d}-{uuid.uuid4().hex[:12]}.parquet"


def staging_dir(data_dir: Path) -> Path:
    """Scratch space inside the data directory (same filesystem, so `os.replace` is atomic)."""
    return data_dir / ".staging"


def publish(tmp: Path, final: Path) -> None:
    """Make a complete file visible under its final name: fsync it, rename, fsync the folder."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def fsync_dir(path: Path) -> None:
    """Make renames inside a folder durable (best effort where the filesystem refuses)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)
