"""The reading API: the dataset as one Polars LazyFrame, touching only the folders that can match.

```python
from kline_tui.store.read import scan
df = scan("~/klines", market="usdm", symbol="BTCUSDT", interval="1m",
          start="2026-11-25", end="2026-11-26").collect()
```
The same rows as `pl.scan_parquet(f"{data_dir}/**/*.parquet", hive_partitioning=True)` with the
filters applied (the `market` column holds the folder's value: `usdm` for trade klines,
`usdm-mark` for the mark klines of USD-M, see `model.partition_label`), but the folders are
pruned before any file is listed: only the `market=` and `interval=` folders asked for are
walked, and only the `date=` buckets whose period overlaps [start, end) are scanned. Within a
file, row groups are skipped by their statistics (compacted files are sorted by symbol, so a
one-symbol query reads a small part of them).

Files that are not the dataset's (another schema: a foreign Parquet dropped in a bucket) are
skipped; `kline-tui verify` names them. A `market=` folder that is no market and kind is
ignored. The files are listed when `scan` is called. A
compaction that runs between `scan` and `collect` replaces the files of a bucket: `collect` then
fails with a missing file, never returns a row twice or misses one; scan again.
"""

from __future__ import annotations

import calendar
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from kline_tui.model import (
    Interval,
    Kind,
    Market,
    SpecError,
    parse_partition,
    partition_label,
    validate_symbol,
)
from kline_tui.store.layout import BUCKET_OF_INTERVAL
from kline_tui.store.schema import PARQUET_SCHEMA

__all__ = [
    "READ_ERRORS",
    "READ_SCHEMA",
    "Bucket",
    "bucket_span",
    "buckets",
    "foreign_reason",
    "kinds_of",
    "ms_literal",
    "open_times",
    "parse_time",
    "part_files",
    "partition_labels",
    "scan",
    "scan_files",
    "split_foreign",
]

# What reading a damaged file can raise: Polars errors, OS errors, and a panic of the reader
# (a BaseException) on some kinds of corruption.
READ_ERRORS: tuple[type[BaseException], ...] = (Exception, pl.exceptions.PanicException)

# A file of an earlier version may lack these columns; any other difference makes it foreign.
OPTIONAL_COLUMNS = frozenset({"source"})

_T = TypeVar("_T")

# What `scan` returns: where the rows live, then the file columns.
READ_SCHEMA: dict[str, pl.DataType] = {
    "market": pl.String(),
    "interval": pl.String(),
    **PARQUET_SCHEMA,
}


@dataclass(frozen=True, slots=True)
class Bucket:
    """One `date=` folder: a market and kind, an interval and the period [start_ms, end_ms) it
    holds."""

    market: Market
    interval: Interval
    label: str  # YYYY-MM-DD, the first day of the period
    path: Path
    start_ms: int
    end_ms: int
    kind: Kind = Kind.TRADE

    @property
    def partition(self) -> str:
        """The `market=` value of the bucket's folder (`usdm`, `usdm-mark`)."""
        return partition_label(self.market, self.kind)

    def __str__(self) -> str:
        return f"{self.partition}/{self.interval.path_label}/{self.label}"


def bucket_span(interval: Interval, label: str) -> tuple[int, int]:
    """The period [start, end) in ms of the bucket `label` of `interval` (see layout.bucket_of)."""
    try:
        day = date.fromisoformat(label)
    except ValueError:
        raise ValueError(f"not a bucket label: {label!r}") from None
    start = calendar.timegm((day.year, day.month, day.day, 0, 0, 0)) * 1000
    kind = BUCKET_OF_INTERVAL[interval]
    if kind == "day":
        return start, start + 86_400_000
    if kind == "month":
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return start, calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    return start, calendar.timegm((day.year + 1, 1, 1, 0, 0, 0)) * 1000


def _subdirs(folder: Path, key: str) -> Iterator[tuple[str, Path]]:
    """(value, path) of each `key=value` folder in `folder`."""
    prefix = key + "="
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name.startswith(prefix) and entry.is_dir():
            yield entry.name[len(prefix) :], Path(entry.path)


def buckets(
    data_dir: Path | str,
    markets: Iterable[Market] | None = None,
    intervals: Iterable[Interval] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    kinds: Iterable[Kind] | None = None,
) -> list[Bucket]:
    """The `date=` folders of the dataset, oldest first per market, kind and interval, limited
    to the markets, kinds (None: every kind) and intervals given and to the periods overlapping
    [start_ms, end_ms).

    Folders whose names are not a known market and kind, interval or date are ignored.
    """
    root = Path(data_dir).expanduser()
    want_markets = None if markets is None else {Market(m) for m in markets}
    want_kinds = None if kinds is None else {Kind(k) for k in kinds}
    want_intervals = None if intervals is None else {Interval(i) for i in intervals}
    out: list[Bucket] = []
    for market_text, market_dir in _subdirs(root, "market"):
        try:
            market, kind = parse_partition(market_text)
        except ValueError:
            continue
        if want_markets is not None and market not in want_markets:
            continue
        if want_kinds is not None and kind not in want_kinds:
            continue
        for interval_text, interval_dir in _subdirs(market_dir, "interval"):
            try:
                interval = Interval.parse(interval_text)
            except SpecError:
                continue
            if want_intervals is not None and interval not in want_intervals:
                continue
            for label, path in _subdirs(interval_dir, "date"):
                try:
                    b_start, b_end = bucket_span(interval, label)
                except ValueError:
                    continue
                if start_ms is not None and b_end <= start_ms:
                    continue
                if end_ms is not None and b_start >= end_ms:
                    continue
                out.append(Bucket(market, interval, label, path, b_start, b_end, kind))
    return out


def part_files(folder: Path) -> list[Path]:
    """The Parquet files of one bucket folder, by name."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries if e.name.endswith(".parquet") and e.is_file())


# Whether a file is foreign, by (path, size, mtime): published parts never change, and reading a
# footer costs a hundred times a stat.
_FOREIGN_CACHE: dict[tuple[str, int, int], str | None] = {}
_FOREIGN_CACHE_MAX = 100_000


def foreign_reason(path: Path) -> str | None:
    """Why `path` is not a part file of this dataset (its columns or their types differ from
    the dataset's), or None when it is one. A file whose footer cannot be read is not judged
    here (None): the readers find it unreadable and report it as such."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _FOREIGN_CACHE:
        return _FOREIGN_CACHE[key]
    try:
        schema = dict(pl.read_parquet_schema(path))
    except READ_ERRORS:
        return None
    missing = [c for c in PARQUET_SCHEMA if c not in schema and c not in OPTIONAL_COLUMNS]
    extra = [c for c in schema if c not in PARQUET_SCHEMA]
    wrong = [
        f"{c} is {schema[c]}"
        for c in PARQUET_SCHEMA
        if c in schema and schema[c] != PARQUET_SCHEMA[c]
    ]
    problems = (
        ([f"lacks {', '.join(missing)}"] if missing else [])
        + ([f"has {', '.join(extra)}"] if extra else [])
        + wrong
    )
    reason = "not this dataset's columns: " + "; ".join(problems) if problems else None
    if len(_FOREIGN_CACHE) >= _FOREIGN_CACHE_MAX:
        _FOREIGN_CACHE.clear()
    _FOREIGN_CACHE[key] = reason
    return reason


def split_foreign(files: Iterable[Path]) -> tuple[list[Path], dict[Path, str]]:
    """`files` parted into the dataset's and the foreign ones (with why)."""
    ours: list[Path] = []
    foreign: dict[Path, str] = {}
    for path in files:
        reason = foreign_reason(path)
        if reason is None:
            ours.append(path)
        else:
            foreign[path] = reason
    return ours, foreign


def parse_time(value: datetime | date | str | int | None) -> int | None:
    """Epoch ms (UTC) of a datetime, a date (its midnight UTC), an ISO string or an int of ms.

    A naive datetime or string is taken as UTC. Raises ValueError naming what it could not read.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = (
                datetime.fromisoformat(text.replace("Z", "+00:00"))
                if "T" in text or " " in text
                else date.fromisoformat(text)
            )
        except ValueError:
            raise ValueError(
                f"not a date or time: {text!r} (write 2026-11-25 or 2026-11-25T16:30)"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, date):
        return calendar.timegm((value.year, value.month, value.day, 0, 0, 0)) * 1000
    raise ValueError(f"not a time: {value!r}")


def _many(value: Any, parse: Callable[[Any], _T]) -> list[_T] | None:
    """One value or several, each parsed, as a list; None stays None."""
    if value is None:
        return None
    if isinstance(value, (str, Market, Interval, Kind)):
        return [parse(value)]
    return [parse(v) for v in value]


def partition_labels(
    markets: Iterable[Market] | None, kinds: Iterable[Kind] | None
) -> list[str] | None:
    """The `market` partition values of the markets and kinds given (None: all of them) that
    exist (spot has only trade klines), sorted; None when neither limits anything."""
    if markets is None and kinds is None:
        return None
    want_markets = list(Market) if markets is None else list(markets)
    want_kinds = list(Kind) if kinds is None else list(kinds)
    return sorted(
        {partition_label(m, k) for m in want_markets for k in want_kinds if m in k.markets()}
    )


def kinds_of(kind: str | Kind | Iterable[str | Kind] | None) -> list[Kind] | None:
    """`scan`'s `kind` argument as a list of kinds (None: every kind). Raises SpecError for an
    unknown kind."""
    return _many(kind, lambda k: k if isinstance(k, Kind) else Kind.parse(k))


def scan(
    data_dir: Path | str,
    market: str | Market | Iterable[str | Market] | None = None,
    symbol: str | Iterable[str] | None = None,
    interval: str | Interval | Iterable[str | Interval] | None = None,
    start: datetime | date | str | int | None = None,
    end: datetime | date | str | int | None = None,
    kind: str | Kind | Iterable[str | Kind] | None = Kind.TRADE,
) -> pl.LazyFrame:
    """The dataset's rows as a LazyFrame: `market`, `interval`, then the file columns.

    Each filter is optional and takes one value or several. `kind` is `trade` unless asked
    (a Kind or its name, several, or None for every kind); the returned `market` column holds
    the folder's value, which names the kind (`usdm`, `usdm-mark`: `model.partition_label`), as
    a plain hive read gives it. `start` is inclusive and `end` exclusive, on `open_time`; they
    take a datetime (naive = UTC), a date, an ISO string or epoch ms. `interval` accepts `1M` or
    `1mo`; the returned `interval` column holds the folder's name (`1mo` for the month). Every
    kind has the same columns: those a kind lacks (the volume fields of mark, index and premium
    klines) are NULL. Raises SpecError for an unknown market, kind, interval or symbol spelling
    and ValueError for an unreadable time.
    """
    markets = _many(market, lambda m: m if isinstance(m, Market) else Market.parse(m))
    kinds = kinds_of(kind)
    intervals = _many(interval, lambda i: i if isinstance(i, Interval) else Interval.parse(i))
    symbols = _many(symbol, validate_symbol)
    start_ms, end_ms = parse_time(start), parse_time(end)

    by_folder: dict[tuple[str, Interval], list[Path]] = {}
    for bucket in buckets(data_dir, markets, intervals, start_ms, end_ms, kinds):
        files, _ = split_foreign(part_files(bucket.path))
        if files:
            by_folder.setdefault((bucket.partition, bucket.interval), []).extend(files)
    if not by_folder:
        return pl.LazyFrame(schema=READ_SCHEMA)

    frames = [
        scan_files(files).with_columns(
            market=pl.lit(label, pl.String()), interval=pl.lit(i.path_label, pl.String())
        )
        for (label, i), files in by_folder.items()
    ]
    lf = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    lf = lf.select(list(READ_SCHEMA))
    if symbols is not None:
        lf = (
            lf.filter(pl.col("symbol") == symbols[0])
            if len(symbols) == 1
            else lf.filter(pl.col("symbol").is_in(symbols))
        )
    if start_ms is not None:
        lf = lf.filter(pl.col("open_time") >= ms_literal(start_ms))
    if end_ms is not None:
        lf = lf.filter(pl.col("open_time") < ms_literal(end_ms))
    return lf


def ms_literal(ms: int) -> pl.Expr:
    """Epoch ms as a literal of the dataset's time type, so filters compare like with like."""
    return pl.lit(ms, pl.Int64()).cast(PARQUET_SCHEMA["open_time"])


def scan_files(files: list[Path]) -> pl.LazyFrame:
    """Part files as one LazyFrame of the dataset's columns (no hive columns)."""
    return pl.scan_parquet(
        files,
        hive_partitioning=False,
        schema=PARQUET_SCHEMA,
        missing_columns="insert",
        extra_columns="ignore",
    )


def open_times(
    data_dir: Path | str,
    market: Market,
    symbol: str,
    interval: Interval,
    start_ms: int | None = None,
    end_ms: int | None = None,
    kind: Kind = Kind.TRADE,
) -> list[int]:
    """The open times (epoch ms, ascending, each once) the dataset holds of one stream (of the
    kind `kind`) within [start_ms, end_ms]. Unreadable and foreign files are skipped
    (`kline-tui verify` reports them)."""
    files, _ = split_foreign(
        f
        for b in buckets(
            data_dir,
            [market],
            [interval],
            start_ms,
            None if end_ms is None else end_ms + 1,
            [kind],
        )
        for f in part_files(b.path)
    )
    if not files:
        return []

    def read(paths: list[Path]) -> pl.DataFrame:
        lf = scan_files(paths).filter(pl.col("symbol") == symbol)
        if start_ms is not None:
            lf = lf.filter(pl.col("open_time") >= ms_literal(start_ms))
        if end_ms is not None:
            lf = lf.filter(pl.col("open_time") <= ms_literal(end_ms))
        return lf.select(t=pl.col("open_time").dt.epoch("ms")).collect()

    try:
        frame = read(files)
    except READ_ERRORS:
        frames = []
        for path in files:  # one bad file must not hide the good ones
            try:
                frames.append(read([path]))
            except READ_ERRORS:
                continue
        if not frames:
            return []
        frame = pl.concat(frames)
    return frame["t"].unique().sort().to_list()
