"""`kline-tui verify`: what the dataset holds of each stream, and what is wrong with it.

Per stream: the first and last candle, the number of candles, the gaps (runs of missing candles
between the first and the last) and the duplicates (extra copies of a candle); for the dataset,
the files that cannot be read in full and the foreign ones (valid Parquet with other columns,
which every reader skips). Buckets are read one at a time, so memory follows the largest bucket,
not the dataset.

`--repair` moves unreadable and foreign files to `.kline-tui/quarantine/` (renamed
`.<path>.corrupt` or `.<path>.foreign`, so no reader sees them), fetches the gaps from REST (the
rows a quarantined file held, when other candles surround them, show up as gaps and are fetched
too), and compacts the buckets holding duplicates. Rows missing at the very start or end of a
stream are not gaps; the recorder's resume and `kline-tui backfill` fetch those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from kline_tui.binance.rest import RestClient
from kline_tui.model import Interval, Kind, Market, StreamKey
from kline_tui.store import layout
from kline_tui.store.compact import Compactor, unreadable
from kline_tui.store.dataset import Dataset
from kline_tui.store.gaps import find_gaps
from kline_tui.store.history import KindNotFetched, backfill
from kline_tui.store.read import READ_ERRORS, Bucket, buckets, part_files, scan_files, split_foreign

__all__ = ["StreamReport", "VerifyReport", "format_time", "repair", "verify_dataset"]


@dataclass(slots=True)
class StreamReport:
    """One stream as the dataset holds it."""

    key: StreamKey
    first: int | None = None  # open time of the first candle
    last: int | None = None
    candles: int = 0  # distinct candles
    duplicates: int = 0  # extra copies
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first, last) missing open times
    dup_buckets: list[Bucket] = field(default_factory=list)

    @property
    def missing(self) -> int:
        """Candles lacking between the first and the last held."""
        return sum(self.key.interval.count_between(a, b) for a, b in self.gaps)

    @property
    def clean(self) -> bool:
        """Whether the stream has candles, and no gap or duplicate among them."""
        return self.candles > 0 and not self.gaps and not self.duplicates

    def add_bucket(self, bucket: Bucket, rows: int, times: list[int]) -> None:
        """Count what one bucket holds of the stream: `rows` rows, `times` their distinct open
        times (ascending). Buckets come oldest first, so a gap may start in an earlier one."""
        if rows > len(times):
            self.duplicates += rows - len(times)
            self.dup_buckets.append(bucket)
        after = None if self.last is None else self.key.interval.next_open(self.last)
        self.gaps.extend(find_gaps(self.key.interval, times, first=after))
        self.candles += len(times)
        if self.first is None:
            self.first = times[0]
        self.last = times[-1]


@dataclass(slots=True)
class VerifyReport:
    """The whole check: every stream looked at, the files that could not be read, and the
    foreign ones (another schema), with why."""

    streams: dict[StreamKey, StreamReport] = field(default_factory=dict)
    unreadable: list[Path] = field(default_factory=list)
    foreign: dict[Path, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return (
            not self.unreadable and not self.foreign and all(s.clean for s in self.streams.values())
        )


_Folder = tuple[Market, Kind, Interval]


def _selection(keys: Iterable[StreamKey] | None) -> dict[_Folder, set[str]]:
    """The symbols wanted per market, kind and interval."""
    wanted: dict[_Folder, set[str]] = {}
    for key in keys or ():
        wanted.setdefault((key.market, key.kind, key.interval), set()).add(key.symbol)
    return wanted


def _read_bucket(folder: Path, report: VerifyReport) -> pl.DataFrame:
    """(symbol, t) of every row of a bucket's files; unreadable and foreign files are noted and
    skipped.

    Every column is read, so damage anywhere in a file is found, not only in its footer. A
    compaction may swap the bucket's files while they are read: the folder is then listed again.
    """

    def read(paths: list[Path]) -> pl.DataFrame:
        df = scan_files(paths).collect()
        return df.select("symbol", t=pl.col("open_time").dt.epoch("ms"))

    def listing() -> list[Path]:
        files, foreign = split_foreign(part_files(folder))
        report.foreign.update(foreign)
        return files

    files = listing()
    for _ in range(5):
        try:
            return read(files)
        except READ_ERRORS:
            relisted = listing()
            if relisted != files:
                files = relisted
                continue
            break
    bad = set(unreadable(files))
    report.unreadable.extend(sorted(bad))
    good = [p for p in files if p not in bad and p.exists()]
    frames = []
    for path in good:  # one by one: a file that reads alone but not with the others is still read
        try:
            frames.append(read([path]))
        except READ_ERRORS:
            if path.exists():
                report.unreadable.append(path)
    if not frames:
        return pl.DataFrame(schema={"symbol": pl.String(), "t": pl.Int64()})
    return pl.concat(frames)


def verify_dataset(data_dir: Path, keys: Iterable[StreamKey] | None = None) -> VerifyReport:
    """Check the streams `keys` (every stream on disk when None)."""
    keys = None if keys is None else list(keys)
    wanted = _selection(keys)
    report = VerifyReport()
    for key in keys or []:
        report.streams[key] = StreamReport(key)
    markets = None if keys is None else {m for m, _, _ in wanted}
    kinds = None if keys is None else {k for _, k, _ in wanted}
    intervals = None if keys is None else {i for _, _, i in wanted}
    for bucket in buckets(data_dir, markets, intervals, kinds=kinds):
        folder = (bucket.market, bucket.kind, bucket.interval)
        if keys is not None and folder not in wanted:
            continue
        frame = _read_bucket(bucket.path, report)
        symbols = wanted.get(folder)
        if symbols is not None:
            frame = frame.filter(pl.col("symbol").is_in(list(symbols)))
        if frame.is_empty():
            continue
        per_symbol = (
            frame.group_by("symbol")
            .agg(rows=pl.len(), times=pl.col("t").unique().sort())
            .sort("symbol")
        )
        for symbol, rows, times in per_symbol.iter_rows():
            key = StreamKey(bucket.market, symbol, bucket.interval, bucket.kind)
            report.streams.setdefault(key, StreamReport(key)).add_bucket(bucket, rows, times)
    report.unreadable = sorted(set(report.unreadable))
    report.foreign = {p: report.foreign[p] for p in sorted(report.foreign) if p.exists()}
    return report


async def repair(
    data_dir: Path,
    report: VerifyReport,
    rest: RestClient,
    keys: Iterable[StreamKey] | None = None,
    say: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Quarantine unreadable and foreign files, fetch the gaps, compact the buckets with
    duplicates; returns a fresh report. Raises RestError when the exchange cannot be reached."""
    say = say or (lambda text: None)
    if report.unreadable or report.foreign:
        where = layout.quarantine_dir(data_dir)
        if report.unreadable:
            moved = layout.quarantine(data_dir, report.unreadable)
            say(f"moved {len(moved)} unreadable file(s) to {where}")
        if report.foreign:
            moved = layout.quarantine(data_dir, report.foreign, "foreign")
            say(f"moved {len(moved)} foreign file(s) to {where}")
        report = verify_dataset(data_dir, keys)
    await fetch_gaps(data_dir, report, rest, say)
    dup_buckets = {b.path: b for s in report.streams.values() for b in s.dup_buckets}
    if dup_buckets:
        compacted = Compactor(data_dir).run(None, only=dup_buckets.values(), force=True)
        say(f"removed {compacted.duplicates} duplicate rows from {compacted.buckets} bucket(s)")
        for failure in compacted.failed:
            say(f"could not compact {failure}")
    return verify_dataset(data_dir, keys)


async def fetch_gaps(
    dataset: Dataset | Path, report: VerifyReport, rest: RestClient, say: Callable[[str], None]
) -> None:
    """Fetch every gap `report` names from REST into `dataset` (a folder or a table), saying
    what each fetch got. A stream whose kind the client cannot fetch is said and passed over
    (its gaps stay in the report), never filled with another kind's klines."""
    for stream in report.streams.values():
        for a, b in stream.gaps:
            try:
                result = await backfill(dataset, stream.key, rest, a, b)
            except KindNotFetched as exc:
                say(f"{exc}; its gaps are left")
                break
            say(
                f"{stream.key}: fetched {result.written} of {result.missing} missing candles "
                f"{format_time(a)} to {format_time(b)}"
            )


def format_time(ms: int | None) -> str:
    """An open time as `2026-11-25 16:30` (seconds when not on a minute), UTC."""
    if ms is None:
        return "-"
    try:
        dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):  # no calendar date: show the number
        return f"{ms} ms"
    return dt.strftime("%Y-%m-%d %H:%M:%S" if dt.second else "%Y-%m-%d %H:%M")


def render(report: VerifyReport, data_dir: Path, max_gaps: int = 10) -> list[str]:
    """The report as lines of text for a terminal."""
    lines = []
    for key in sorted(report.streams):
        s = report.streams[key]
        if not s.candles:
            lines.append(f"{key}  no candles held")
            continue
        problems = []
        if s.gaps:
            problems.append(
                f"{len(s.gaps)} gap{'s' if len(s.gaps) != 1 else ''} ({s.missing} missing)"
            )
        if s.duplicates:
            problems.append(f"{s.duplicates} duplicate{'s' if s.duplicates != 1 else ''}")
        lines.append(
            f"{key}  {format_time(s.first)} to {format_time(s.last)}  {s.candles} candles  "
            + (", ".join(problems) if problems else "ok")
        )
        for a, b in s.gaps[:max_gaps]:
            n = key.interval.count_between(a, b)
            lines.append(
                f"    gap {format_time(a)} to {format_time(b)} ({n} candle{'s' if n != 1 else ''})"
            )
        if len(s.gaps) > max_gaps:
            lines.append(f"    ... and {len(s.gaps) - max_gaps} more gaps")
    for path in report.unreadable:
        try:
            shown = path.relative_to(data_dir)
        except ValueError:
            shown = path
        lines.append(f"unreadable file: {shown}")
    for path, why in report.foreign.items():
        try:
            shown = path.relative_to(data_dir)
        except ValueError:
            shown = path
        lines.append(f"foreign file: {shown} ({why})")
    if not report.streams and not report.unreadable and not report.foreign:
        lines.append("no candles held")
    return lines
