"""Settings: one typed object, read from a TOML file and the command line, validated.

```toml
data_dir = "/path/to/data"
watch = ["spot:BTCUSDT:1m", "usdm:ETHUSDT:5m"]

[endpoints.usdm]            # point a market at a testnet, a mirror or the simulator
ws = "wss://fstream.binance.com/market"
rest = "https://fapi.binance.com"

[recorder]
flush_rows = 50000          # flush when this many rows are buffered...
flush_age_s = 60            # ...or when the oldest is this old
history = 1000              # candles fetched from REST before the first one seen, for a new stream
rotate_after_h = 23         # replace each connection (make before break) before Binance's 24 h cut
reconnect_max_s = 60        # longest wait between reconnect attempts (exponential, full jitter)
max_buffer_rows = 500000    # rows held in memory while the disk refuses writes; beyond, dropped and counted
stop_timeout_s = 15         # a stop (SIGTERM, Ctrl-C, quitting) takes at most this long
```
A malformed file is reported in one line naming the file, the key and the problem. Every number
has a finite range (`RECORDER_NUMBERS`): NaN, infinities and absurd sizes are refused there, not
discovered later as a hang or a crash.
"""

from __future__ import annotations

import math
import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from kline_tui.binance.markets import DEFAULT_ENDPOINTS, Endpoints
from kline_tui.model import Market, SpecError, StreamKey
from kline_tui.recorder.sink import DEFAULT_FLUSH_AGE_S, DEFAULT_FLUSH_ROWS, DEFAULT_MAX_BUFFER_ROWS

__all__ = [
    "Settings",
    "ConfigError",
    "RECORDER_NUMBERS",
    "load_settings",
    "save_watch",
    "default_config_path",
    "default_data_dir",
]

APP_NAME = "kline-tui"
# Candles fetched before the first one seen, for a stream with nothing on disk yet.
DEFAULT_HISTORY = 1000
# Enough for 69 days of 1m candles; far more only fills memory and the REST budget for hours.
MAX_HISTORY = 100_000
# A bound on any row count: 50 million rows is about 10 GB held in memory.
MAX_ROWS = 50_000_000
DEFAULT_STOP_TIMEOUT_S = 15.0


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line: file, key, problem."""


def default_config_path() -> Path:
    """Where the config file lives when `--config` is not given."""
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def default_data_dir() -> Path:
    """Where the dataset lives when `data_dir` is not set."""
    return platformdirs.user_data_path(APP_NAME) / "data"


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to run, already validated."""

    config_path: Path
    config_exists: bool
    data_dir: Path = field(default_factory=default_data_dir)
    watch: tuple[StreamKey, ...] = ()
    endpoints: dict[Market, Endpoints] = field(default_factory=lambda: dict(DEFAULT_ENDPOINTS))
    flush_rows: int = DEFAULT_FLUSH_ROWS
    flush_age_s: float = DEFAULT_FLUSH_AGE_S
    history: int = DEFAULT_HISTORY
    rotate_after_h: float = 23.0
    reconnect_max_s: float = 60.0
    max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    """Longest a stop may take, drain and flush included; past it sockets are aborted."""

    def with_streams(self, keys: list[StreamKey]) -> Settings:
        """The watch list plus `keys` (kept in order, without repeats)."""
        merged = list(dict.fromkeys([*self.watch, *keys]))
        return replace(self, watch=tuple(merged))


@dataclass(frozen=True, slots=True)
class NumberSetting:
    """One number of the `[recorder]` table: its type and the range it must fall in.

    `low_open` excludes `low` itself (a value must be above it). Ranges are finite, so NaN and
    the infinities never pass.
    """

    key: str
    whole: bool  # rows and candles: whole numbers only; seconds and hours: any number
    low: float
    high: float
    low_open: bool
    high_open: bool
    wording: str

    def read(self, table: dict[str, Any], default: float) -> float | None:
        """The value in `table` (or `default`), or None if it is of the wrong type or out of range."""
        value = table.get(self.key, default)
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            return None
        if not math.isfinite(value):
            return None
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return value if above and below else None


def _whole(key: str, low: int, high: int, what: str) -> NumberSetting:
    return NumberSetting(key, True, low, high, False, False, f"expected a whole number of {what} from {low} to {high}")


RECORDER_NUMBERS: tuple[NumberSetting, ...] = (
    _whole("flush_rows", 1, MAX_ROWS, "rows"),
    NumberSetting("flush_age_s", False, 0, 3600, True, False, "expected seconds above 0 and at most 3600"),
    _whole("history", 0, MAX_HISTORY, "candles"),
    NumberSetting(
        "rotate_after_h", False, 0, 24, True, True, "expected hours above 0 and below 24 (Binance cuts at 24)"
    ),
    NumberSetting("reconnect_max_s", False, 1, 3600, False, False, "expected seconds from 1 to 3600"),
    _whole("max_buffer_rows", 1, MAX_ROWS, "rows"),
    NumberSetting("stop_timeout_s", False, 1, 300, False, False, "expected seconds from 1 to 300"),
)
"""The `[recorder]` numbers, with the ranges the README's Configuration section documents."""

_DEFAULTS = {f.name: f.default for f in fields(Settings)}
_TOP_KEYS = {"data_dir", "watch", "endpoints", "recorder"}
_RECORDER_KEYS = {n.key for n in RECORDER_NUMBERS}


def load_settings(path: Path | None = None) -> Settings:
    """Read the config file (the default location when `path` is None; a missing default is fine).

    Raises ConfigError, and nothing else, for any file that cannot be used.
    """
    explicit = path is not None
    path = Path(path).expanduser() if explicit else default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such file")
        return Settings(config_path=path, config_exists=False)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    return _settings_from(doc, path)


class _Failure:
    """Builds the one-line error for a key of one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")


def _settings_from(doc: dict[str, Any], path: Path) -> Settings:
    fail = _Failure(path)
    for key in doc:
        if key not in _TOP_KEYS:
            raise fail(_shown(key), f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    return replace(
        Settings(config_path=path, config_exists=True),
        **_data_dir(doc, fail),
        watch=_watch(doc.get("watch", []), fail),
        endpoints=_endpoints(doc.get("endpoints", {}), fail),
        **_recorder(doc.get("recorder", {}), fail),
    )


def _shown(key: str) -> str:
    """A key as it goes into a message: escaped (a key may hold a newline or an ESC), and short."""
    return repr(key)[1:-1][:60]


def _data_dir(doc: dict[str, Any], fail: _Failure) -> dict[str, Path]:
    data_dir = doc.get("data_dir")
    if data_dir is None:
        return {}
    if not isinstance(data_dir, str) or not data_dir.strip() or "\0" in data_dir:
        raise fail("data_dir", "expected a folder path as a non-empty string")
    try:
        return {"data_dir": Path(data_dir).expanduser()}
    except RuntimeError as exc:  # "~someone" with no such user
        raise fail("data_dir", f"cannot expand {data_dir!r}: {exc}") from None


def _watch(watch: object, fail: _Failure) -> tuple[StreamKey, ...]:
    if not isinstance(watch, list):
        raise fail("watch", 'expected a list of streams like ["usdm:BTCUSDT:1m"]')
    keys = []
    for i, spec in enumerate(watch):
        if not isinstance(spec, str):
            raise fail(f"watch[{i}]", "expected a string like \"usdm:BTCUSDT:1m\"")
        try:
            keys.append(StreamKey.parse(spec))
        except SpecError as exc:
            raise fail(f"watch[{i}]", str(exc)) from None
    return tuple(dict.fromkeys(keys))


def _endpoints(section: object, fail: _Failure) -> dict[Market, Endpoints]:
    if not isinstance(section, dict):
        raise fail("endpoints", "expected a table like [endpoints.spot]")
    endpoints = dict(DEFAULT_ENDPOINTS)
    for name, table in section.items():
        where = f"endpoints.{_shown(name)}"
        try:
            market = Market.parse(name)
        except SpecError as exc:
            raise fail(where, str(exc)) from None
        if not isinstance(table, dict):
            raise fail(where, "expected a table with ws and rest")
        for key in table:
            if key not in ("ws", "rest"):
                raise fail(f"{where}.{_shown(key)}", "unknown key (known: ws, rest)")
        ws = table.get("ws", endpoints[market].ws)
        rest = table.get("rest", endpoints[market].rest)
        if not isinstance(ws, str) or not ws.startswith(("ws://", "wss://")):
            raise fail(f"{where}.ws", "expected a ws:// or wss:// URL")
        if not isinstance(rest, str) or not rest.startswith(("http://", "https://")):
            raise fail(f"{where}.rest", "expected an http:// or https:// URL")
        endpoints[market] = Endpoints(ws.rstrip("/"), rest.rstrip("/"))
    return endpoints


def _recorder(table: object, fail: _Failure) -> dict[str, float]:
    if not isinstance(table, dict):
        raise fail("recorder", "expected a table")
    for key in table:
        if key not in _RECORDER_KEYS:
            raise fail(f"recorder.{_shown(key)}", f"unknown key (known: {', '.join(sorted(_RECORDER_KEYS))})")
    values: dict[str, float] = {}
    for number in RECORDER_NUMBERS:
        value = number.read(table, _DEFAULTS[number.key])
        if value is None:
            raise fail(f"recorder.{number.key}", number.wording)
        values[number.key] = value if number.whole else float(value)
    if values["max_buffer_rows"] < values["flush_rows"]:
        raise fail("recorder.max_buffer_rows", "expected a whole number of rows, at least flush_rows")
    return values


def save_watch(path: Path, keys: list[StreamKey]) -> None:
    """Write the watch list into the config file, keeping the user's comments and other keys.

    The file is replaced atomically, so a crash mid-save never leaves half a config. A symlinked
    config (a dotfiles setup) is written through: the link stays and its target gets the new
    text. The file keeps its permission bits; a new file gets the usual ones (0666 less umask).
    """
    import tomlkit

    target = Path(os.path.realpath(Path(path).expanduser()))
    text = target.read_text(encoding="utf-8") if target.exists() else ""
    doc = tomlkit.parse(text)
    watch = tomlkit.array()
    watch.multiline(len(keys) > 3)
    for key in keys:
        watch.append(str(key))
    doc["watch"] = watch
    target.parent.mkdir(parents=True, exist_ok=True)
    _replace_file(target, tomlkit.dumps(doc))


def _replace_file(target: Path, text: str) -> None:
    """Write `text` beside `target`, then rename it over `target`, keeping `target`'s mode."""
    try:
        mode: int | None = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    # Beside the target, because a rename cannot cross file systems. Created like any new file
    # (0666 less the umask), not 0600 as mkstemp would.
    tmp = target.parent / f".config-{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
