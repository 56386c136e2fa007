"""Reading the dataset back: what the recorder needs to resume where it stopped."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kline_tui.model import Interval, Kind, Market, StreamKey
from kline_tui.store.gaps import find_gaps
from kline_tui.store.layout import quarantine, quarantine_dir
from kline_tui.store.read import READ_ERRORS, buckets, part_files, scan_files, split_foreign

__all__ = ["StoredSeries", "stored_series"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StoredSeries:
    """What the dataset holds of one stream: its newest open time and the holes before it."""

    last: int
    holes: list[tuple[int, int]] = field(default_factory=list)  # (first, last) open times missing


def stored_series(
    data_dir: Path,
    keys: Iterable[StreamKey],
    report: Callable[[str], None] | None = None,
    starts: Mapping[StreamKey, int] | None = None,
) -> dict[StreamKey, StoredSeries]:
    """The newest open time (ms) and the holes of each stream that has rows on disk.

    `starts` (see `store.starts`): where each stream's recording was meant to begin; the
    candles from there to the first row on disk are a hole too.

    A recorder killed before a flush loses its buffer, and the buffer may hold candles older
    than some already on disk (a backfill finishing after newer live candles were written), so
    resuming from the newest candle alone would leave those holes forever: they are found here
    and fetched again. Reads only the `symbol` and `open_time` columns.

    No file stops the start: a foreign file (another schema) is skipped, a file the reader
    cannot decode (or that makes it panic) is moved to the quarantine folder, and its rows show
    up as holes, fetched again. Each is told to `report` (one sentence; called on this thread),
    else logged.
    """
    report = report or log.warning
    by_folder: dict[tuple[Market, Kind, Interval], set[str]] = defaultdict(set)
    for key in keys:
        by_folder[(key.market, key.kind, key.interval)].add(key.symbol)
    out: dict[StreamKey, StoredSeries] = {}
    for (market, kind, interval), symbols in by_folder.items():
        times = _open_times(Path(data_dir), market, kind, interval, symbols, report)
        if times is None:
            continue
        for (symbol,), group in times.group_by(["symbol"]):
            opens = group["t"].unique().sort().to_list()
            key = StreamKey(market, symbol, interval, kind)
            start = (starts or {}).get(key)
            first = start if start is not None and start < opens[0] else None
            out[key] = StoredSeries(opens[-1], find_gaps(interval, opens, first=first))
    return out


def _open_times(
    data_dir: Path,
    market: Market,
    kind: Kind,
    interval: Interval,
    symbols: set[str],
    report: Callable[[str], None],
) -> pl.DataFrame | None:
    """(symbol, t) of the rows of `symbols` in the files of one market, kind and interval;
    foreign files are skipped and unreadable ones quarantined, each told to `report`."""
    listed = [
        f for b in buckets(data_dir, [market], [interval], kinds=[kind]) for f in part_files(b.path)
    ]
    files, foreign = split_foreign(listed)
    for path, why in foreign.items():
        report(
            f"skipped {_shown(data_dir, path)}: {why}; 'kline-tui verify --repair' moves it aside"
        )
    if not files:
        return None

    def read(paths: list[Path]) -> pl.DataFrame:
        # scan_files, not a bare scan: files of an earlier version lack `source`, and a bare
        # scan of old and new files together fails, sending every start to the slow path below.
        return (
            scan_files(paths)
            .select("symbol", pl.col("open_time").dt.epoch("ms").alias("t"))
            .filter(pl.col("symbol").is_in(list(symbols)))
            .collect()
        )

    try:
        return read(files)
    except READ_ERRORS:
        pass
    frames, bad = _read_one_by_one(files, read)
    for path, why in bad:
        _quarantine_unreadable(data_dir, path, why, report)
    return pl.concat(frames) if frames else None


def _read_one_by_one(
    files: list[Path], read: Callable[[list[Path]], pl.DataFrame]
) -> tuple[list[pl.DataFrame], list[tuple[Path, str]]]:
    """What each file reads, and the files that cannot be read with why: one bad file must not
    hide the good ones."""
    frames, bad = [], []
    for path in files:
        try:
            frames.append(read([path]))
        except OSError:
            continue  # gone meanwhile (a compaction), or the disk: not the file's fault
        except READ_ERRORS as exc:
            if path.exists():
                bad.append((path, _first_line(exc)))
    return frames, bad


def _quarantine_unreadable(
    data_dir: Path, path: Path, why: str, report: Callable[[str], None]
) -> None:
    """Move an unreadable file aside, so its candles show up as holes and are fetched again."""
    try:
        moved = quarantine(data_dir, [path])
    except OSError as exc:
        report(
            f"unreadable file {_shown(data_dir, path)} ({why}) skipped; "
            f"cannot move it: {exc.strerror or exc}"
        )
        return
    if moved:
        report(
            f"unreadable file {_shown(data_dir, path)} ({why}) moved to "
            f"{quarantine_dir(data_dir)}; its candles are fetched again"
        )


def _shown(data_dir: Path, path: Path) -> str:
    try:
        return path.relative_to(data_dir).as_posix()
    except ValueError:
        return str(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__
