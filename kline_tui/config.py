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
```
A malformed file is reported in one line naming the file, the key and the problem.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from kline_tui.binance.markets import DEFAULT_ENDPOINTS, Endpoints
from kline_tui.model import Market, SpecError, StreamKey
from kline_tui.recorder.sink import DEFAULT_FLUSH_AGE_S, DEFAULT_FLUSH_ROWS, DEFAULT_MAX_BUFFER_ROWS

__all__ = [
    "Settings",
    "ConfigError",
    "load_settings",
    "save_watch",
    "default_config_path",
    "default_data_dir",
]

APP_NAME = "kline-tui"
# Candles fetched before the first one seen, for a stream with nothing on disk yet.
DEFAULT_HISTORY = 1000


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line: file, key, problem."""


def default_config_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def default_data_dir() -> Path:
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

    def with_streams(self, keys: list[StreamKey]) -> Settings:
        """The watch list plus `keys` (kept in order, without repeats)."""
        merged = list(dict.fromkeys([*self.watch, *keys]))
        return replace(self, watch=tuple(merged))


_TOP_KEYS = {"data_dir", "watch", "endpoints", "recorder"}
_RECORDER_KEYS = {
    "flush_rows",
    "flush_age_s",
    "history",
    "rotate_after_h",
    "reconnect_max_s",
    "max_buffer_rows",
}


def load_settings(path: Path | None = None) -> Settings:
    """Read the config file (the default location when `path` is None; a missing default is fine)."""
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


def _settings_from(doc: dict[str, Any], path: Path) -> Settings:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {problem}")

    for key in doc:
        if key not in _TOP_KEYS:
            raise fail(key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    settings = Settings(config_path=path, config_exists=True)

    data_dir = doc.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, str) or not data_dir.strip():
            raise fail("data_dir", "expected a folder path as a string")
        settings = replace(settings, data_dir=Path(data_dir).expanduser())

    watch = doc.get("watch", [])
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
    settings = replace(settings, watch=tuple(dict.fromkeys(keys)))

    endpoints = dict(DEFAULT_ENDPOINTS)
    section = doc.get("endpoints", {})
    if not isinstance(section, dict):
        raise fail("endpoints", "expected a table like [endpoints.spot]")
    for name, table in section.items():
        try:
            market = Market.parse(name)
        except SpecError as exc:
            raise fail(f"endpoints.{name}", str(exc)) from None
        if not isinstance(table, dict):
            raise fail(f"endpoints.{name}", "expected a table with ws and rest")
        for key in table:
            if key not in ("ws", "rest"):
                raise fail(f"endpoints.{name}.{key}", "unknown key (known: ws, rest)")
        ws = table.get("ws", endpoints[market].ws)
        rest = table.get("rest", endpoints[market].rest)
        if not isinstance(ws, str) or not ws.startswith(("ws://", "wss://")):
            raise fail(f"endpoints.{name}.ws", "expected a ws:// or wss:// URL")
        if not isinstance(rest, str) or not rest.startswith(("http://", "https://")):
            raise fail(f"endpoints.{name}.rest", "expected an http:// or https:// URL")
        endpoints[market] = Endpoints(ws.rstrip("/"), rest.rstrip("/"))
    settings = replace(settings, endpoints=endpoints)

    recorder = doc.get("recorder", {})
    if not isinstance(recorder, dict):
        raise fail("recorder", "expected a table")
    for key in recorder:
        if key not in _RECORDER_KEYS:
            raise fail(f"recorder.{key}", f"unknown key (known: {', '.join(sorted(_RECORDER_KEYS))})")
    rows = recorder.get("flush_rows", DEFAULT_FLUSH_ROWS)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise fail("recorder.flush_rows", "expected a whole number of rows, at least 1")
    age = recorder.get("flush_age_s", DEFAULT_FLUSH_AGE_S)
    if isinstance(age, bool) or not isinstance(age, (int, float)) or age <= 0:
        raise fail("recorder.flush_age_s", "expected a number of seconds above 0")
    history = recorder.get("history", DEFAULT_HISTORY)
    if isinstance(history, bool) or not isinstance(history, int) or not 0 <= history <= 1_000_000:
        raise fail("recorder.history", "expected a whole number of candles from 0 to 1000000")
    rotate = recorder.get("rotate_after_h", 23.0)
    if isinstance(rotate, bool) or not isinstance(rotate, (int, float)) or not 0 < rotate < 24:
        raise fail("recorder.rotate_after_h", "expected hours above 0 and below 24 (Binance cuts at 24)")
    cap = recorder.get("reconnect_max_s", 60.0)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 1 <= cap <= 3600:
        raise fail("recorder.reconnect_max_s", "expected seconds from 1 to 3600")
    bound = recorder.get("max_buffer_rows", DEFAULT_MAX_BUFFER_ROWS)
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < rows:
        raise fail("recorder.max_buffer_rows", "expected a whole number of rows, at least flush_rows")
    return replace(
        settings,
        max_buffer_rows=bound,
        flush_rows=rows,
        flush_age_s=float(age),
        history=history,
        rotate_after_h=float(rotate),
        reconnect_max_s=float(cap),
    )


def save_watch(path: Path, keys: list[StreamKey]) -> None:
    """Write the watch list into the config file, keeping the user's comments and other keys.

    The file is replaced atomically, so a crash mid-save never leaves half a config.
    """
    import os
    import tempfile

    import tomlkit

    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = tomlkit.parse(text)
    watch = tomlkit.array()
    watch.multiline(len(keys) > 3)
    for key in keys:
        watch.append(str(key))
    doc["watch"] = watch
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(tomlkit.dumps(doc))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
