"""Where rows live in the data directory (a contract: users and other tools read it).

    <data_dir>/market=usdm/interval=1m/date=2026-11-25/part-<UTC time>-<seq>-<uuid>.parquet
    <data_dir>/market=usdm-mark/interval=1m/date=2026-11-25/part-...parquet   (a kind's rows)
    <data_dir>/.kline-tui/          the bookkeeping: locks, staging, quarantine, dead letters

The `date` bucket is the first day of the period a part file covers, chosen per interval so that a
compacted bucket is neither tiny nor huge: a day up to 30m candles (1,440 rows a day per symbol for
1m, 86,400 for 1s), a month for 1h to 12h, a year for 1d and longer.

The `market=` value is the stream's partition label (`model.partition_label`): the market alone
for trade klines, `<market>-<kind>` for the other kinds (`usdm-mark`, `coinm-next_quarter`), so
every file keeps the same columns and the same depth (DESIGN.md, "Contracts").

Everything that is not a part file lives in the one hidden folder `.kline-tui/`, and every file
in it has a name that starts with a dot and does not end in `.parquet`: the `**/*.parquet` globs
of the readers never match it, and `pl.scan_parquet(data_dir, hidden_file_prefix=".")` (which
skips hidden *file names*, not hidden folders) passes over it. Parts are written in
`.kline-tui/staging/` and renamed into their bucket only when complete (`kline_tui.store.parts`).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kline_tui.model import Interval, Kind, Market, partition_label
from kline_tui.store.schema import PARQUET_SCHEMA

__all__ = [
    "BUCKET_OF_INTERVAL",
    "END_MS",
    "LEGACY_LOCK",
    "LEGACY_QUARANTINE",
    "LEGACY_STAGING",
    "bookkeeping_dir",
    "bucket_of",
    "clear_staging",
    "dead_letter_dir",
    "fsync_dir",
    "is_dataset",
    "lock_fd",
    "part_name",
    "partition_dir",
    "partition_root",
    "publish",
    "publishing",
    "quarantine",
    "quarantine_dir",
    "staged",
    "staging_dir",
    "write_dead_letters",
]

_DAILY = {Interval.S1, Interval.M1, Interval.M3, Interval.M5, Interval.M15, Interval.M30}
_MONTHLY = {Interval.H1, Interval.H2, Interval.H4, Interval.H6, Interval.H8, Interval.H12}

BUCKET_OF_INTERVAL: dict[Interval, str] = {
    iv: ("day" if iv in _DAILY else "month" if iv in _MONTHLY else "year") for iv in Interval
}

# Open times a bucket can hold: from 1970 to the end of year 9999, as `date=` has four digits of
# year. Anything else (a bogus frame, a bad archive) has no place in the dataset.
END_MS = 253_402_300_800_000

BOOKKEEPING = ".kline-tui"
# What versions before the bookkeeping folder left in the data directory; a recorder's start
# moves it away (see kline_tui.store.lock), and every reader of ours already ignores it.
LEGACY_LOCK = ".lock"
LEGACY_STAGING = ".staging"
LEGACY_QUARANTINE = ".quarantine"


def bucket_of(interval: Interval, open_time_ms: int) -> str | None:
    """The `date=` label (YYYY-MM-DD, UTC) of the bucket holding a candle, or None when no bucket
    can (an open time before 1970, after 9999, or not an integer): never raises."""
    if type(open_time_ms) is not int or not 0 <= open_time_ms < END_MS:
        return None
    dt = datetime.fromtimestamp(open_time_ms / 1000, tz=UTC)
    kind = BUCKET_OF_INTERVAL[interval]
    if kind == "day":
        return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
    if kind == "month":
        return f"{dt.year:04d}-{dt.month:02d}-01"
    return f"{dt.year:04d}-01-01"


def partition_root(
    data_dir: Path, market: Market, interval: Interval, kind: Kind = Kind.TRADE
) -> Path:
    """The folder holding every date bucket of one market, kind and interval."""
    label = partition_label(market, kind)
    return data_dir / f"market={label}" / f"interval={interval.path_label}"


def partition_dir(
    data_dir: Path, market: Market, interval: Interval, bucket: str, kind: Kind = Kind.TRADE
) -> Path:
    """The folder of one partition (market, kind, interval and bucket are validated values)."""
    return partition_root(data_dir, market, interval, kind) / f"date={bucket}"


def part_name(seq: int, now: datetime | None = None) -> str:
    """A part file name that sorts by write time:
    `part-20261125T161500123Z-000042-<uuid>.parquet`."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"part-{stamp}-{seq % 1_000_000:06d}-{uuid.uuid4().hex[:12]}.parquet"


# --- the bookkeeping folder -----------------------------------------------------------------


def bookkeeping_dir(data_dir: Path) -> Path:
    """The one hidden folder holding everything in the data directory that is not data."""
    return Path(data_dir) / BOOKKEEPING


def staging_dir(data_dir: Path) -> Path:
    """Where part files are written before they are published (same filesystem as the buckets,
    so `os.replace` is atomic)."""
    return bookkeeping_dir(data_dir) / "staging"


def quarantine_dir(data_dir: Path) -> Path:
    """Where files that are not readable dataset parts are moved, under names no reader sees."""
    return bookkeeping_dir(data_dir) / "quarantine"


def dead_letter_dir(data_dir: Path) -> Path:
    """Where rows that cannot be stored are kept, as JSON lines."""
    return bookkeeping_dir(data_dir) / "dead-letters"


def lock_fd(data_dir: Path, name: str) -> int:
    """An open descriptor of the lock file `.kline-tui/.<name>`, created if needed."""
    folder = bookkeeping_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return os.open(folder / f".{name}", os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def staged(data_dir: Path, name: str) -> Iterator[Path]:
    """A path in staging to write the file `name` into before publishing it.

    The writer holds the staging lock shared meanwhile, so a recorder starting beside a running
    `backfill`, `import` or `verify --repair` does not clear their files (`clear_staging` needs
    the lock exclusive). The file is removed if the body raises.
    """
    staging = staging_dir(data_dir)
    staging.mkdir(parents=True, exist_ok=True)
    fd = lock_fd(data_dir, "staging.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        tmp = staging / f".{name}.tmp"
        try:
            yield tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        os.close(fd)  # closing drops the flock


def clear_staging(data_dir: Path) -> int:
    """Remove what killed writers left half-written in staging; returns how many files.

    Does nothing while any writer is writing (it holds the staging lock shared): its files are
    not leftovers, and the others wait for the next start.
    """
    staging = staging_dir(data_dir)
    if not staging.is_dir():
        return 0
    fd = lock_fd(data_dir, "staging.lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        removed = 0
        for leftover in staging.iterdir():
            if leftover.name.endswith(".tmp") and not leftover.is_dir():
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed
    finally:
        os.close(fd)


@contextmanager
def publishing(data_dir: Path) -> Iterator[None]:
    """Hold while renaming a finished part into a bucket folder: a compaction never exchanges a
    bucket's folder meanwhile, so the part cannot be carried away with the old parts."""
    fd = lock_fd(data_dir, "publish.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


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


# --- what cannot be stored ------------------------------------------------------------------


def quarantine(data_dir: Path, files: Iterable[Path], kind: str = "corrupt") -> list[Path]:
    """Move files out of the dataset into the quarantine folder; returns where they went.

    A file keeps its path in its new name (`.market=usdm__interval=1m__date=...__part-x.parquet
    .corrupt`): hidden, and not ending in `.parquet`, so no reader sees it.
    """
    data_dir = Path(data_dir)
    target = quarantine_dir(data_dir)
    target.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in files:
        if not path.exists():
            continue
        try:
            rel = path.resolve().relative_to(data_dir.resolve()).as_posix()
        except ValueError:
            rel = path.name
        dest = target / f".{rel.replace('/', '__')}.{kind}"
        if dest.exists():
            dest = dest.with_name(f"{dest.name}-{uuid.uuid4().hex[:8]}")
        os.replace(path, dest)
        moved.append(dest)
    if moved:
        fsync_dir(target)
    return moved


def write_dead_letters(
    data_dir: Path, where: str, rows: Iterable[tuple[Any, ...]], reason: str
) -> Path:
    """Append rows that cannot be stored to today's dead-letter file, one JSON object a line
    (`where` names their partition, `row` maps the dataset's columns to the values); returns the
    file. Raises OSError when the disk refuses."""
    folder = dead_letter_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{datetime.now(UTC):%Y-%m-%d}.jsonl"
    columns = list(PARQUET_SCHEMA)
    lines = [
        json.dumps(
            {"where": where, "reason": reason, "row": dict(zip(columns, row, strict=False))},
            default=repr,
        )
        + "\n"
        for row in rows
    ]
    with open(path, "a", encoding="utf-8") as fh:
        fh.writelines(lines)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def is_dataset(data_dir: Path) -> bool:
    """Whether `data_dir` is a folder holding a dataset: a `market=` folder, or the bookkeeping
    of a recorder that has not flushed yet (this version's or an earlier one's)."""
    try:
        entries = os.scandir(data_dir)
    except OSError:
        return False
    with entries:
        for entry in entries:
            if entry.name in (BOOKKEEPING, LEGACY_LOCK, LEGACY_STAGING):
                return True
            if entry.name.startswith("market=") and entry.is_dir():
                return True
    return False
