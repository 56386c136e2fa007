"""Where each stream's recording begins: the first candle the recorder set out to hold.

A new stream's history is fetched from REST while its live candles already arrive. A process
killed after some live candles reached the disk but before that history did would leave a
dataset whose first row is a live one, and a resume, which finds holes only between rows on
disk, would never know the history was wanted. So the first open time wanted per stream is
written down before any row of that stream is published (the sink writes this file at the start
of each flush that changed it), and a resume treats [start, first row on disk) as a hole.

    <data_dir>/.kline-tui/.starts.json      {"usdm:BTCUSDT:1m": 1764547200000, ...}
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from kline_tui.model import EARLIEST_OPEN_MS, LATEST_MS, SpecError, StreamKey
from kline_tui.store.layout import bookkeeping_dir, publish

__all__ = ["parse_starts", "read_starts", "starts_path", "write_starts"]

log = logging.getLogger(__name__)

_MAX_BYTES = 64 * 1024 * 1024  # far beyond any real watch list: a bigger file is not ours


def starts_path(data_dir: Path) -> Path:
    """The file (dot-named: readers of the dataset never see it)."""
    return bookkeeping_dir(data_dir) / ".starts.json"


def read_starts(data_dir: Path) -> dict[StreamKey, int]:
    """Each stream's first wanted open time; entries that are not a stream spec and a plausible
    time are ignored, and an unreadable file counts as empty (the holes it would have named are
    then only those between rows, as before it existed)."""
    path = starts_path(Path(data_dir))
    try:
        if path.stat().st_size > _MAX_BYTES:
            log.warning("%s is too large to be ours; ignored", path)
            return {}
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); ignored", path, exc)
        return {}
    return parse_starts(raw)


def parse_starts(raw: object) -> dict[StreamKey, int]:
    """The starts a decoded JSON object names: entries that are not a stream spec and a plausible
    aligned open time are ignored."""
    starts: dict[StreamKey, int] = {}
    if not isinstance(raw, dict):
        return starts
    for spec, start in raw.items():
        if type(start) is not int or not EARLIEST_OPEN_MS <= start < LATEST_MS:
            continue
        try:
            key = StreamKey.parse(spec)
        except (SpecError, AttributeError):
            continue
        if key.interval.is_aligned(start):
            starts[key] = start
    return starts


def write_starts(data_dir: Path, starts: dict[StreamKey, int]) -> None:
    """Replace the file atomically (layout.publish: fsync, rename, fsync the folder); raises
    OSError."""
    path = starts_path(Path(data_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".starts.{os.getpid()}.tmp")
    body = json.dumps({str(k): t for k, t in sorted(starts.items())}, separators=(",", ":"))
    try:
        tmp.write_text(body, encoding="utf-8")
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
