"""Each alert's firing state, kept across restarts, so a restart neither fires an alert again
inside its cooldown nor forgets that a condition has not cleared since it fired.

    <data_dir>/.kline-tui/.alerts-state.json
    {"alerts": {"<alert id>": {"last_fired_at": 1764547200000, "fired": 3, "armed": false}}}

`last_fired_at` is exchange time (ms) or null; `armed` is true, false or null (no observation
yet). With a Delta URL as data_dir, `Settings.data_dir` is already the URL's local bookkeeping
folder, as for the service's runtime file. The file is replaced atomically (temp file, fsync,
rename); what is read is bounded: a file over MAX_BYTES or not JSON is ignored (the caller is
told why), entries of unknown alerts are dropped, and entries whose values are out of range
are dropped and counted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kline_tui.model import EARLIEST_OPEN_MS, LATEST_MS
from kline_tui.store.layout import bookkeeping_dir, publish

__all__ = ["MAX_BYTES", "AlertState", "encode_states", "read_states", "state_path", "write_states"]

MAX_BYTES = 1024 * 1024  # MAX_ALERTS entries take a few tens of KiB: a bigger file is not ours
_MAX_COUNT = 2**53  # a firing count beyond any real run (and exact in every JSON reader)


@dataclass(frozen=True, slots=True)
class AlertState:
    """What survives a restart of one alert."""

    last_fired_at: int | None  # exchange time (ms)
    fired: int
    armed: bool | None


def state_path(data_dir: Path) -> Path:
    """The file (dot-named, in the bookkeeping folder: readers of the dataset never see it)."""
    return bookkeeping_dir(Path(data_dir)) / ".alerts-state.json"


def encode_states(states: Mapping[str, AlertState]) -> bytes:
    """The file's body."""
    alerts = {
        alert_id: {"last_fired_at": s.last_fired_at, "fired": s.fired, "armed": s.armed}
        for alert_id, s in states.items()
    }
    return json.dumps({"alerts": alerts}, separators=(",", ":")).encode()


def write_states(path: Path, body: bytes) -> None:
    """Replace the file atomically (layout.publish: fsync, rename, fsync the folder); raises
    OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(body)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_states(path: Path, known: Iterable[str]) -> tuple[dict[str, AlertState], str | None]:
    """The saved states of the alerts `known` (their ids), and a warning (one sentence) when the
    file could not be used whole: missing is no warning, too large or not JSON is ignored whole,
    bad entries are dropped and counted."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"cannot read the alerts' state {path} ({exc}); they start afresh"
    if len(data) > MAX_BYTES:
        return {}, f"the alerts' state {path} is over {MAX_BYTES} bytes; ignored"
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return {}, f"the alerts' state {path} is not JSON; ignored"
    entries = raw.get("alerts") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        return {}, f"the alerts' state {path} holds no alerts; ignored"
    wanted = set(known)
    states: dict[str, AlertState] = {}
    bad = 0
    for alert_id, entry in entries.items():
        if alert_id not in wanted:
            continue  # deleted while stopped: nothing to restore
        state = _parse(entry)
        if state is None:
            bad += 1
        else:
            states[alert_id] = state
    warning = f"the alerts' state {path}: {bad} bad entries dropped" if bad else None
    return states, warning


def _parse(entry: object) -> AlertState | None:
    if not isinstance(entry, dict):
        return None
    at, fired, armed = entry.get("last_fired_at"), entry.get("fired"), entry.get("armed")
    if at is not None and (type(at) is not int or not EARLIEST_OPEN_MS <= at < LATEST_MS):
        return None
    if type(fired) is not int or not 0 <= fired <= _MAX_COUNT:
        return None
    if armed is not None and type(armed) is not bool:
        return None
    return AlertState(at, fired, armed)
