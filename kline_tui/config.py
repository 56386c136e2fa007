"""Settings: declared once as a schema, read from a TOML file, validated, documented.

The file's shape is `ConfigFile`, a tree of msgspec Structs whose fields carry their default,
their range (`Meta(ge=..., le=...)`) and their description. The rest follows from that one
declaration: validation (`msgspec.convert`), the one-line errors naming file, key and problem,
the defaults of `Settings`, and the README's table of keys (`config_table`, checked by a test).

Every number has a finite range on both sides, so NaN, the infinities and absurd sizes are
refused when the file is read, not discovered later as a hang or a crash.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import msgspec.inspect as mi
import platformdirs
from msgspec import Meta

from kline_tui.binance.markets import DEFAULT_ENDPOINTS, Endpoints
from kline_tui.model import Market, SpecError, StreamKey
from kline_tui.store.dataset import StorageSpec, is_url, local_bookkeeping

if TYPE_CHECKING:
    from tomlkit import TOMLDocument

_log = logging.getLogger(__name__)

__all__ = [
    "ALERT_RULES",
    "DEFAULT_WATCH",
    "AlertConfig",
    "ConfigError",
    "ConfigFile",
    "EndpointConfig",
    "EndpointsConfig",
    "NotifyConfig",
    "RecorderConfig",
    "ServiceConfig",
    "Settings",
    "StorageConfig",
    "UiConfig",
    "config_table",
    "default_config_path",
    "default_data_dir",
    "explain_alert_error",
    "load_settings",
    "parse_alert",
    "parse_listen",
    "save_alerts",
    "save_ui",
    "save_watch",
]

APP_NAME = "kline-tui"
# Enough for 69 days of 1m candles; far more only fills memory and the REST budget for hours.
MAX_HISTORY = 100_000
# A bound on any row count: 50 million rows is about 10 GB held in memory.
MAX_ROWS = 50_000_000

DEFAULT_WATCH: tuple[str, ...] = (
    "spot:BTCUSDT:1m",
    "spot:ETHUSDT:1m",
    "spot:SOLUSDT:1m",
    "usdm:BTCUSDT:1m",
    "usdm:ETHUSDT:1m",
    "usdm:SOLUSDT:5m",
    "coinm:BTCUSD_PERP:1m",
    "coinm:ETHUSD_PERP:1m",
)
"""The streams watched when nobody chose any (a first launch, the demo): each market's majors."""


# -- the schema ----------------------------------------------------------------------------------
#
# Besides msgspec's own constraints, a field's `Meta(extra=...)` may say:
#   unit      what a number counts ("rows", "seconds"), for messages and the docs;
#   accepts   what a value must be, in words, where the type and range do not say it;
#   at_least  a sibling key this one must not fall below (checked after msgspec's own checks);
#   default   the default in words, where it is computed rather than declared.

# A scheme and then a host: "wss://" alone or a URL with blanks would only fail on first use.
_WS_URL = r"\Awss?://[^\s/]\S*\Z"
_HTTP_URL = r"\Ahttps?://[^\s/]\S*\Z"
# Something besides blanks, and no NUL, which no file system takes in a path.
_FOLDER = r"\A[^\x00]*[^\s\x00][^\x00]*\Z"
_FolderPathOrNone = (
    Annotated[str, Meta(pattern=_FOLDER, extra={"accepts": "a file path as a non-empty string"})]
    | None
)


class EndpointConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where one market is reached: Binance by default, or a testnet, a mirror, the simulator."""

    ws: Annotated[
        str,
        Meta(pattern=_WS_URL, extra={"accepts": "a ws:// or wss:// URL"}),
        Meta(description="Base of the market's streams; `/ws/...` and `/stream?...` are under it."),
    ]
    rest: Annotated[
        str,
        Meta(pattern=_HTTP_URL, extra={"accepts": "an http:// or https:// URL"}),
        Meta(description="Base of the market's REST API: klines, exchange info, server time."),
    ]


def _binance(market: Market) -> EndpointConfig:
    """Binance's own endpoints for `market`, the protocol facts of `binance.markets`."""
    endpoints = DEFAULT_ENDPOINTS[market]
    return EndpointConfig(ws=endpoints.ws, rest=endpoints.rest)


class EndpointsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[endpoints.<market>]`: where each market is reached. A table may set only `ws` or `rest`."""

    spot: Annotated[EndpointConfig, Meta(description="The spot market.")] = _binance(Market.SPOT)
    usdm: Annotated[EndpointConfig, Meta(description="USD-M futures.")] = _binance(Market.USDM)
    coinm: Annotated[EndpointConfig, Meta(description="COIN-M futures.")] = _binance(Market.COINM)


class RecorderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[recorder]`: when rows are written, what is fetched, how connections live, how stops end."""

    # 50,000 rows is about 2 MB of Parquet: 2,000 1m streams fill it in 25 minutes, so the age
    # bound is what flushes in practice; a minute bounds what a crash loses (refetched on restart).
    flush_rows: Annotated[
        int,
        Meta(ge=1, le=MAX_ROWS, extra={"unit": "rows"}),
        Meta(description="Write a batch when this many rows are buffered..."),
    ] = 50_000
    flush_age_s: Annotated[
        float,
        Meta(gt=0, le=3600, extra={"unit": "seconds"}),
        Meta(description="...or when the oldest buffered row is this old."),
    ] = 60.0
    history: Annotated[
        int,
        Meta(ge=0, le=MAX_HISTORY, extra={"unit": "candles"}),
        Meta(
            description="Candles fetched from REST before the first one seen, for a stream with "
            "nothing on disk yet. 100,000 is 69 days of 1m candles; more only exhausts memory "
            "and the REST budget."
        ),
    ] = 1000
    rotate_after_h: Annotated[
        float,
        Meta(gt=0, lt=24, extra={"unit": "hours"}),
        Meta(
            description="Replace each connection (make before break) this long after it opened, "
            "before Binance cuts it at 24 h."
        ),
    ] = 23.0
    reconnect_max_s: Annotated[
        float,
        Meta(ge=1, le=3600, extra={"unit": "seconds"}),
        Meta(description="Longest wait between reconnect attempts (exponential, full jitter)."),
    ] = 60.0
    # About 250 MB of buffered rows: four hours of 2,000 1m streams waiting for a disk to return.
    max_buffer_rows: Annotated[
        int,
        Meta(ge=1, le=MAX_ROWS, extra={"unit": "rows", "at_least": "flush_rows"}),
        Meta(
            description="Rows held in memory while the disk refuses writes; beyond, new rows "
            "are dropped and counted."
        ),
    ] = 500_000
    stop_timeout_s: Annotated[
        float,
        Meta(ge=1, le=300, extra={"unit": "seconds"}),
        Meta(
            description="Longest a stop (SIGTERM, Ctrl-C, quit) may take, drain and flush "
            "included; past it sockets are aborted."
        ),
    ] = 15.0
    # Binance documents no range for the premium index (its examples are about -0.0005): the
    # bound is ours, and positive values are never refused for their sign.
    premium_bound: Annotated[
        float,
        Meta(gt=0, le=10, extra={"unit": "index points (0.05 is 5 %)"}),
        Meta(
            description="Premium index klines beyond plus or minus this are dropped as "
            "impossible and counted (Binance states no range; positive values are kept)."
        ),
    ] = 0.05


# `[HOST:]PORT`, HOST a name, an IPv4 address or a bracketed IPv6 address; checked further by
# `parse_listen` (the port's range).
_LISTEN = r"\A(?:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?[0-9]{1,5}\Z"
DEFAULT_LISTEN_HOST = "127.0.0.1"


class ServiceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[service]`: the recorder's HTTP API (health, metrics, state, control), off unless asked."""

    listen: Annotated[
        Annotated[
            str,
            Meta(
                pattern=_LISTEN,
                extra={"accepts": 'an address like "127.0.0.1:8765" or a port like "8765"'},
            ),
        ]
        | None,
        Meta(
            extra={"default": "unset: off"},
            description="Serve the API on `[HOST:]PORT` (HOST defaults to 127.0.0.1); "
            "`record --listen` overrides it. Off when unset.",
        ),
    ] = None
    token_file: Annotated[
        _FolderPathOrNone,
        Meta(
            extra={"default": "unset"},
            description="A file holding the API token. Without it (and without "
            "`KLINE_TUI_TOKEN`) a token is generated into `token` beside the config file; an "
            "address other than loopback needs one of the two.",
        ),
    ] = None


class StorageConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[storage]`: the dataset's format, and how an object store is reached."""

    format: Annotated[
        Annotated[
            str,
            Meta(
                pattern=r"\A(parquet|delta)\Z",
                extra={"accepts": '"parquet" or "delta"'},
            ),
        ]
        | None,
        Meta(
            extra={"default": "parquet for a path, delta for a URL"},
            description="`parquet`: the hive-partitioned folder (a local path, one recorder). "
            "`delta`: a Delta Lake table, local or on an object store, that any number of "
            'recorders write exactly once (`pip install "kline-tui[delta]"`).',
        ),
    ] = None
    options: Annotated[
        dict[str, str],
        Meta(
            extra={"accepts": 'a table of strings, like aws_region = "us-east-1"'},
            description="Storage options for delta-rs and Polars (region, endpoint, "
            "credentials); the standard `AWS_*` environment variables work too. Never logged.",
        ),
    ] = msgspec.field(default_factory=dict)
    vacuum_retention_h: Annotated[
        float,
        Meta(ge=0, le=100_000, extra={"unit": "hours"}),
        Meta(
            description="Delta: files a compaction replaced are deleted this long after, so "
            "readers of an older version never lose a file under them."
        ),
    ] = 168.0


ALERT_RULES: tuple[str, ...] = (
    "price_above",
    "price_below",
    "change_pct",
    "volume_spike",
    "stale",
    "missing",
)
"""The fixed kinds of alert (no expressions: README, "Alerts", says what each one means)."""
# A bound on an alert's level: above any price or percent, and finite (NaN and inf are refused).
MAX_ALERT_VALUE = 1e15
MAX_ALERTS = 1000


class AlertConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[[alerts]]`: one alert on one stream (README, "Alerts")."""

    stream: Annotated[
        str,
        Meta(
            max_length=64,
            extra={"accepts": 'a stream like "usdm:BTCUSDT:1m"', "default": "required"},
        ),
        Meta(description="The stream it watches, as `market:SYMBOL:interval[:kind]`."),
    ]
    rule: Annotated[
        str,
        Meta(
            pattern=r"\A(" + "|".join(ALERT_RULES) + r")\Z",
            extra={"accepts": ", ".join(ALERT_RULES), "default": "required"},
        ),
        Meta(description="What fires it (README, Alerts)."),
    ]
    value: Annotated[
        float,
        Meta(
            ge=-MAX_ALERT_VALUE,
            le=MAX_ALERT_VALUE,
            extra={
                "accepts": "a finite number in the rule's unit",
                "unit": "the rule's unit",
                "default": "required",
            },
        ),
        Meta(
            description="The price level; the percent for change_pct; the multiple for "
            "volume_spike; seconds for stale; candles for missing."
        ),
    ]
    window: Annotated[
        int,
        Meta(ge=1, le=1000, extra={"unit": "closed candles"}),
        Meta(description="Closed candles change_pct and volume_spike look at."),
    ] = 5
    cooldown_s: Annotated[
        float,
        Meta(ge=0, le=30 * 86400, extra={"unit": "seconds of exchange time"}),
        Meta(description="After a firing, the same alert stays quiet this long."),
    ] = 300.0
    muted: Annotated[
        bool,
        Meta(extra={"accepts": "true or false"}, description="Kept and tracked, never fires."),
    ] = False


def parse_alert(alert: AlertConfig) -> tuple[StreamKey, str]:
    """The alert's stream and a sentence-less check of what its rule needs; raises ValueError
    with one sentence when the alert cannot work (a stream spec that does not parse, a
    volume_spike on a kind without volume, a level that makes no sense for the rule)."""
    try:
        key = StreamKey.parse(alert.stream)
    except SpecError as exc:
        raise ValueError(str(exc)) from None
    if alert.rule == "volume_spike" and not key.kind.has_volume:
        raise ValueError(f"{key.kind.value} klines have no volume: volume_spike cannot work")
    if alert.rule in ("price_above", "price_below", "volume_spike", "stale") and alert.value <= 0:
        raise ValueError(f"{alert.rule} needs a value above 0")
    if alert.rule == "change_pct" and alert.value == 0:
        raise ValueError("change_pct needs a percent other than 0 (negative: a fall)")
    if alert.rule == "missing" and alert.value < 1:
        raise ValueError("missing needs a value of at least 1 candle")
    return key, alert.rule


class NotifyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[notify]`: where alerts are sent besides the screen and the event log."""

    webhook: Annotated[
        Annotated[
            str,
            Meta(pattern=_HTTP_URL, max_length=2000, extra={"accepts": "an http(s):// URL"}),
        ]
        | None,
        Meta(
            extra={"default": "unset: none"},
            description="POST each firing as JSON (README, Alerts) to this URL.",
        ),
    ] = None
    webhook_timeout_s: Annotated[
        float,
        Meta(gt=0, le=60, extra={"unit": "seconds"}),
        Meta(description="Longest one webhook request may take."),
    ] = 5.0
    webhook_retries: Annotated[
        int,
        Meta(ge=0, le=10, extra={"unit": "retries"}),
        Meta(description="Tries after the first, on a timeout, a refused connection or a 5xx."),
    ] = 3


# The watch table's columns, by id, in their default order (the UI's `watch_table.COLUMNS` has
# the same ids: a test holds them together). `symbol` and `state` are always shown.
UI_COLUMNS: tuple[str, ...] = (
    "market",
    "symbol",
    "interval",
    "last",
    "change",
    "high",
    "low",
    "volume",
    "trades",
    "spark",
    "recorded",
    "state",
)
_UiColumn = Annotated[
    str,
    Meta(
        pattern=r"\A(" + "|".join(UI_COLUMNS) + r")\Z",
        extra={"accepts": "column ids: " + ", ".join(UI_COLUMNS)},
    ),
]


class UiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[ui]`: how the terminal UI lays out its table; the UI saves it when changed."""

    columns: Annotated[
        tuple[_UiColumn, ...],
        Meta(max_length=len(UI_COLUMNS) * 2),
        Meta(
            extra={"accepts": 'a list of column ids like ["symbol", "last", "state"]'},
            description="The watch table's columns, in order (`c` in the UI chooses them); "
            "symbol and state are always shown. Ids: " + ", ".join(UI_COLUMNS) + ".",
        ),
    ] = UI_COLUMNS
    group: Annotated[
        Annotated[
            str,
            Meta(
                pattern=r"\A(none|market|symbol)\Z",
                extra={"accepts": '"none", "market" or "symbol"'},
            ),
        ],
        Meta(description="Rows grouped under a line per market or per symbol (`g` cycles)."),
    ] = "none"
    compact: Annotated[
        bool,
        Meta(
            extra={"accepts": "true or false"},
            description="Compact mode for small terminals: the table takes the screen, the "
            "panels below it are hidden (`z` toggles).",
        ),
    ] = False
    theme: Annotated[
        Annotated[
            str,
            Meta(
                pattern=r"\A[a-z0-9][a-z0-9_-]{0,39}\Z",
                extra={"accepts": 'a Textual theme name like "textual-dark"'},
            ),
        ],
        Meta(
            description="The colour theme (the command palette's Change theme); an unknown "
            "name falls back to the default with a line in the event log."
        ),
    ] = "textual-dark"


# `data_dir` is computed when the file leaves it out (`default_data_dir`), so said in words.
_PLATFORM_DATA_DIR = "the platform's data folder (`~/.local/share/kline-tui/data` on Linux)"
_FolderPath = Annotated[
    str, Meta(pattern=_FOLDER, extra={"accepts": "a folder path as a non-empty string"})
]
# One stream, checked further by `StreamKey.parse` (a market must offer the interval).
_StreamSpec = Annotated[str, Meta(extra={"accepts": 'a string like "usdm:BTCUSDT:1m"'})]


class ConfigFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole config file. Every key is optional."""

    data_dir: Annotated[
        _FolderPath | None,
        Meta(extra={"default": _PLATFORM_DATA_DIR}),
        Meta(
            description="Where the dataset is written: a folder (`~` stands for the home "
            "folder) or an object-store URL (`s3://bucket/prefix`, `gs://`, `az://`: Delta only)."
        ),
    ] = None
    watch: Annotated[
        tuple[_StreamSpec, ...],
        Meta(extra={"accepts": 'a list of streams like ["usdm:BTCUSDT:1m"]'}),
        Meta(
            description="Streams to record, as `market:SYMBOL:interval`. Streams on the "
            "command line are added; the UI saves its list here."
        ),
    ] = ()
    endpoints: Annotated[EndpointsConfig, Meta(description="Where each market is reached.")] = (
        msgspec.field(default_factory=EndpointsConfig)
    )
    recorder: Annotated[
        RecorderConfig, Meta(description="How rows are written and streams run.")
    ] = msgspec.field(default_factory=RecorderConfig)
    service: Annotated[
        ServiceConfig, Meta(description="The recorder's HTTP API, for `record`.")
    ] = msgspec.field(default_factory=ServiceConfig)
    storage: Annotated[
        StorageConfig, Meta(description="The dataset's format and object-store options.")
    ] = msgspec.field(default_factory=StorageConfig)
    alerts: Annotated[
        tuple[AlertConfig, ...],
        Meta(max_length=MAX_ALERTS, extra={"accepts": "a list of [[alerts]] tables"}),
        Meta(description="Alerts on streams; the UI's alert dialog saves them here."),
    ] = ()
    notify: Annotated[NotifyConfig, Meta(description="Where alerts are sent.")] = msgspec.field(
        default_factory=NotifyConfig
    )
    ui: Annotated[UiConfig, Meta(description="The terminal UI's layout and theme.")] = (
        msgspec.field(default_factory=UiConfig)
    )


_DEFAULTS = ConfigFile()
_BINANCE = _DEFAULTS.endpoints  # each market's own endpoints


# -- the settings the rest of the code reads ---------------------------------------------------


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line: file, key, problem."""


def default_config_path() -> Path:
    """Where the config file lives when `--config` is not given."""
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def default_data_dir() -> Path:
    """Where the dataset lives when `data_dir` is not set."""
    return platformdirs.user_data_path(APP_NAME) / "data"


def _endpoints(config: EndpointsConfig) -> dict[Market, Endpoints]:
    """Each market's endpoints, without the trailing slash the URL joins would double."""
    chosen = {market: getattr(config, market.value) for market in Market}
    return {m: Endpoints(e.ws.rstrip("/"), e.rest.rstrip("/")) for m, e in chosen.items()}


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to run, already validated; the defaults are `ConfigFile`'s."""

    config_path: Path
    config_exists: bool
    data_dir: Path = field(default_factory=default_data_dir)
    watch: tuple[StreamKey, ...] = ()
    endpoints: dict[Market, Endpoints] = field(default_factory=lambda: _endpoints(_BINANCE))
    flush_rows: int = _DEFAULTS.recorder.flush_rows
    flush_age_s: float = _DEFAULTS.recorder.flush_age_s
    history: int = _DEFAULTS.recorder.history
    rotate_after_h: float = _DEFAULTS.recorder.rotate_after_h
    reconnect_max_s: float = _DEFAULTS.recorder.reconnect_max_s
    max_buffer_rows: int = _DEFAULTS.recorder.max_buffer_rows
    stop_timeout_s: float = _DEFAULTS.recorder.stop_timeout_s
    """Longest a stop may take, drain and flush included; past it sockets are aborted."""
    premium_bound: float = _DEFAULTS.recorder.premium_bound
    """Largest |premium index| a premium kline may hold; beyond, the row is dropped."""
    listen: tuple[str, int] | None = None
    """Where the service API listens (host, port), or None: off."""
    token_file: Path | None = None
    """The API token's file as the config names it (None: the environment, or generated)."""
    data_url: str | None = None
    """The dataset's object-store URL, when `data_dir` is one; `data_dir` is then a local folder
    for what the remote table cannot hold (dead letters, the service's runtime file)."""
    storage_format: str | None = None
    """`parquet`, `delta`, or None: delta for a URL, else parquet (or what a folder holds)."""
    storage_options: tuple[tuple[str, str], ...] = ()
    """Options for the object store (may hold secrets: never shown)."""
    vacuum_retention_h: float = _DEFAULTS.storage.vacuum_retention_h
    alerts: tuple[AlertConfig, ...] = ()
    """The alerts, each checked by `parse_alert`."""
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    """Where alerts are sent besides the screen."""
    ui: UiConfig = field(default_factory=UiConfig)
    """The terminal UI's layout and theme (`[ui]`)."""

    @property
    def storage(self) -> StorageSpec:
        """Where and how the dataset is stored, for `store.dataset.open_dataset`."""
        return StorageSpec(
            self.data_url or str(self.data_dir),
            self.storage_format,
            dict(self.storage_options),
            self.vacuum_retention_h,
        )

    @property
    def location(self) -> str:
        """The dataset's place as the user wrote it: a folder or a URL."""
        return self.data_url or str(self.data_dir)

    def with_data_dir(self, where: str | Path) -> Settings:
        """The settings with the dataset at `where`: a folder (`~` expanded) or a URL."""
        text = str(where)
        if is_url(text):
            return replace(self, data_dir=local_bookkeeping(text), data_url=text)
        return replace(self, data_dir=Path(text).expanduser(), data_url=None)

    def with_streams(self, keys: list[StreamKey]) -> Settings:
        """The watch list plus `keys` (kept in order, without repeats)."""
        merged = list(dict.fromkeys([*self.watch, *keys]))
        return replace(self, watch=tuple(merged))


# -- reading a file ----------------------------------------------------------------------------


def load_settings(path: Path | None = None) -> Settings:
    """Read the config file (the default location when `path` is None; a missing default is fine).

    Raises ConfigError, and nothing else, for any file that cannot be used.
    """
    explicit = path is not None
    try:
        path = Path(path).expanduser() if path is not None else default_config_path()
    except RuntimeError as exc:  # "~someone" with no such user
        raise ConfigError(f"{path}: cannot expand it: {exc}") from None
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
    """Check a parsed file against `ConfigFile` and build the settings it describes."""
    fail = _Failure(path)
    doc = _with_endpoint_defaults(doc, fail)
    try:
        config = msgspec.convert(doc, ConfigFile)
    except msgspec.ValidationError as exc:
        raise _explained(exc, doc, fail) from None
    _check_at_least(config, fail)
    url = config.data_dir if config.data_dir is not None and is_url(config.data_dir) else None
    if url is not None and config.storage.format == "parquet":
        raise fail("storage.format", 'an object-store data_dir needs "delta"')
    return Settings(
        config_path=path,
        config_exists=True,
        data_dir=local_bookkeeping(url) if url else _data_dir(config.data_dir, fail),
        data_url=url,
        storage_format=config.storage.format,
        storage_options=tuple(sorted(config.storage.options.items())),
        vacuum_retention_h=config.storage.vacuum_retention_h,
        watch=_watch(config.watch, fail),
        endpoints=_endpoints(config.endpoints),
        listen=_listen(config.service.listen, fail),
        token_file=_token_file(config.service.token_file, fail),
        alerts=_alerts(config.alerts, fail),
        notify=config.notify,
        ui=config.ui,
        **msgspec.structs.asdict(config.recorder),
    )


def parse_listen(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` as (host, port); HOST defaults to 127.0.0.1, brackets of an IPv6 address
    are removed, port 0 picks a free port. Raises ValueError with a sentence."""
    if not re.match(_LISTEN, text):
        raise ValueError(f"{text!r} is not [HOST:]PORT (e.g. 127.0.0.1:8765 or 8765)")
    host, _, port = text.rpartition(":")
    number = int(port)
    if number > 65535:
        raise ValueError(f"port {number} is above 65535")
    return (host.strip("[]") or DEFAULT_LISTEN_HOST, number)


def _listen(text: str | None, fail: _Failure) -> tuple[str, int] | None:
    if text is None:
        return None
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise fail("service.listen", str(exc)) from None


def _token_file(text: str | None, fail: _Failure) -> Path | None:
    if text is None:
        return None
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:
        raise fail("service.token_file", f"cannot expand {text!r}: {exc}") from None


def _with_endpoint_defaults(doc: dict[str, Any], fail: _Failure) -> dict[str, Any]:
    """`doc` with each `[endpoints]` table under its market's own name and completed from
    `EndpointsConfig`'s defaults.

    Older names (`usdt_futures`) keep working, and a table may set only `ws` or only `rest`: the
    other keeps that market's own default, which a per-class field default could not express.
    """
    section = doc.get("endpoints")
    if not isinstance(section, dict):
        return doc  # not a table: msgspec says so in its turn
    tables: dict[str, Any] = {}
    for name, table in section.items():
        where = f"endpoints.{_shown(name)}"
        try:
            market = Market.parse(name)
        except SpecError as exc:
            raise fail(where, str(exc)) from None
        if market.value in tables:
            raise fail(where, f"{market.value} is set twice (once under an older name)")
        default = msgspec.structs.asdict(getattr(_BINANCE, market.value))
        tables[market.value] = {**default, **table} if isinstance(table, dict) else table
    return {**doc, "endpoints": tables}


def _data_dir(text: str | None, fail: _Failure) -> Path:
    """The dataset's folder: the platform's unless the file names one, with `~` expanded."""
    if text is None:
        return default_data_dir()
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:  # "~someone" with no such user
        raise fail("data_dir", f"cannot expand {text!r}: {exc}") from None


def _watch(specs: tuple[str, ...], fail: _Failure) -> tuple[StreamKey, ...]:
    """The streams, parsed (a market must offer the interval), in order, without repeats."""
    keys = []
    for i, spec in enumerate(specs):
        try:
            keys.append(StreamKey.parse(spec))
        except SpecError as exc:
            raise fail(f"watch[{i}]", str(exc)) from None
    return tuple(dict.fromkeys(keys))


def _alerts(alerts: tuple[AlertConfig, ...], fail: _Failure) -> tuple[AlertConfig, ...]:
    """The alerts, each one able to work (`parse_alert`), without repeats."""
    for i, alert in enumerate(alerts):
        try:
            parse_alert(alert)
        except ValueError as exc:
            raise fail(f"alerts[{i}]", str(exc)) from None
    return tuple(dict.fromkeys(alerts))


def _check_at_least(config: ConfigFile, fail: _Failure) -> None:
    """The one rule a field's own range cannot state: not below a sibling key (`at_least`)."""
    for key in _KEYS.values():
        if "at_least" not in key.extra:
            continue
        parent = key.path.rpartition(".")[0]
        floor_key = f"{parent}.{key.extra['at_least']}".lstrip(".")
        floor = _value_at(config, floor_key)
        if _value_at(config, key.path) < floor:
            raise fail(key.path, f"expected {_accepts(key)} (which is {floor})")


def _value_at(config: ConfigFile, path: str) -> Any:
    """The value of a dotted key path such as `recorder.flush_rows`."""
    return functools.reduce(getattr, path.split("."), config)


# -- the schema, flattened: for messages and the docs ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """One key of the file as `ConfigFile` declares it."""

    path: str  # "recorder.flush_age_s"; "watch[]" is any item of the list; "" the file itself
    type: mi.Type  # what msgspec checks, without its Metadata or an optional None
    default: Any
    description: str
    extra: dict[str, Any]


def _key(path: str, declared: mi.Type, default: Any) -> _Key:
    """`declared` with its Metadata layers merged and an optional None set aside."""
    description, kind = "", declared
    extra: dict[str, Any] = {}
    while True:
        if isinstance(kind, mi.Metadata):
            description = (kind.extra_json_schema or {}).get("description", description)
            extra = {**(kind.extra or {}), **extra}
            kind = kind.type
        elif isinstance(kind, mi.UnionType) and len(kind.types) == 2 and kind.includes_none:
            kind = next(t for t in kind.types if not isinstance(t, mi.NoneType))
        else:
            return _Key(path, kind, default, description, extra)


def _keys(struct: mi.StructType, prefix: str, defaults: msgspec.Struct) -> Iterator[_Key]:
    """Every key under `struct`, depth first in declaration order, with its value in `defaults`.

    Defaults are read from an instance, not from the fields: a market's `ws` has no default of
    its own, only the one `EndpointsConfig` gives that market.
    """
    for f in struct.fields:
        default = getattr(defaults, f.name)
        key = _key(f"{prefix}{f.name}", f.type, default)
        yield key
        if isinstance(key.type, mi.StructType):
            yield from _keys(key.type, f"{key.path}.", default)
        elif isinstance(key.type, (mi.ListType, mi.VarTupleType)):
            item = _key(f"{key.path}[]", key.type.item_type, msgspec.NODEFAULT)
            yield item
            if isinstance(item.type, mi.StructType):  # [[alerts]]: each key of its tables
                yield from _table_keys(item.type, f"{item.path}.")


def _table_keys(struct: mi.StructType, prefix: str) -> Iterator[_Key]:
    """The keys of a table in a list of tables, with their declared defaults."""
    for f in struct.fields:
        yield _key(f"{prefix}{f.name}", f.type, f.default)


_ROOT = _key("", mi.type_info(ConfigFile), _DEFAULTS)
assert isinstance(_ROOT.type, mi.StructType), "the file itself is a table"
_KEYS: dict[str, _Key] = {key.path: key for key in (_ROOT, *_keys(_ROOT.type, "", _DEFAULTS))}


def _accepts(key: _Key) -> str:
    """What `key` takes, in words: an error's "expected ...", the docs' "accepts" column."""
    if "accepts" in key.extra:
        return str(key.extra["accepts"])
    kind = key.type
    if isinstance(kind, mi.StructType):
        return f"a table of {', '.join(f.name for f in kind.fields)}"
    if not isinstance(kind, (mi.IntType, mi.FloatType)):
        raise TypeError(f"{key.path}: declare in words what it accepts")
    whole = "whole " if isinstance(kind, mi.IntType) else ""
    words = f"a {whole}number of {key.extra['unit']} {_range(kind)}"
    if "at_least" in key.extra:
        words += f", at least {key.extra['at_least']}"
    return words


def _range(kind: mi.IntType | mi.FloatType) -> str:
    """`from 1 to 300`, `above 0 and at most 3600`, `above 0 and below 24`."""
    if kind.ge is not None and kind.le is not None:
        return f"from {_number(kind.ge)} to {_number(kind.le)}"
    low = f"at least {_number(kind.ge)}" if kind.ge is not None else f"above {_number(kind.gt)}"
    high = f"at most {_number(kind.le)}" if kind.le is not None else f"below {_number(kind.lt)}"
    return f"{low} and {high}"


def _number(value: float | None) -> str:
    """A bound as a reader counts: 3600, 100,000, 0.5."""
    assert value is not None, "every number of the schema has a lower and an upper bound"
    if value == int(value):
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    return str(value)


# -- errors --------------------------------------------------------------------------------------

# Where msgspec found the problem: `$.recorder.flush_age_s`, `$.watch[2]`; absent at the top level.
_WHERE = re.compile(r" - at `\$(?P<path>(?:\.\w+|\[\d+\])*)`\Z")


def _explained(exc: msgspec.ValidationError, doc: dict[str, Any], fail: _Failure) -> ConfigError:
    """msgspec's finding in the file's own terms: the key as written in TOML, what it accepts."""
    message = str(exc)
    if message.startswith("Object contains unknown field"):
        return _unknown_key(doc, fail)
    where = _WHERE.search(message)
    path = where["path"].lstrip(".") if where else ""
    key = _KEYS.get(re.sub(r"\[\d+\]", "[]", path))
    if key is None or not path:  # not expected from a TOML document; still one line
        return fail(path or "(top level)", _shown(message))
    return fail(path, f"expected {_accepts(key)}")


def explain_alert_error(exc: msgspec.ValidationError) -> str:
    """msgspec's finding on an `AlertConfig` built from a form, as one sentence in the config's
    own terms (`window: expected a whole number of closed candles from 1 to 1000`)."""
    where = _WHERE.search(str(exc))
    name = where["path"].lstrip(".") if where else ""
    key = _KEYS.get(f"alerts[].{name}") if name else None
    if key is None:
        return _shown(str(exc))
    return f"{name.replace('_s', '')}: expected {_accepts(key)}"


def _unknown_key(doc: dict[str, Any], fail: _Failure) -> ConfigError:
    """The first key the schema does not know, found in `doc` rather than read back from
    msgspec's message, which quotes the key unescaped (it may hold a backtick or a newline)."""
    found = _first_unknown(doc, _ROOT)
    if found is None:
        return fail("(top level)", "unknown key")
    table, name = found
    assert isinstance(table.type, mi.StructType), "only a table holds keys"
    known = ", ".join(f.name for f in table.type.fields)
    where = f"{table.path}.{_shown(name)}" if table.path else _shown(name)
    return fail(where, f"unknown key (known: {known})")


def _first_unknown(doc: dict[str, Any], table: _Key) -> tuple[_Key, str] | None:
    """The table (as the schema declares it) and name of the first unknown key, depth first."""
    for name, value in doc.items():
        key = _KEYS.get(re.sub(r"\[\d+\]", "[]", f"{table.path}.{name}".lstrip(".")))
        if key is None:
            return table, name
        nested = isinstance(key.type, mi.StructType) and isinstance(value, dict)
        if nested and (found := _first_unknown(value, key)):
            return found
        item = _KEYS.get(f"{key.path}[]")
        if item is not None and isinstance(item.type, mi.StructType) and isinstance(value, list):
            for i, table in enumerate(value):  # [[alerts]]: named by its index
                numbered = replace(item, path=f"{key.path}[{i}]")
                if isinstance(table, dict) and (found := _first_unknown(table, numbered)):
                    return found
    return None


def _shown(key: str) -> str:
    """A key as it goes into a message: escaped (a key may hold a newline or an ESC), and short."""
    return repr(key)[1:-1][:60]


# -- the docs ------------------------------------------------------------------------------------


def config_table() -> str:
    """The README's table of every key: its default, what it accepts and what it does."""
    rows = ["| key | default | accepts | what it does |", "|---|---|---|---|"]
    for key in _KEYS.values():
        if key.path and not key.path.endswith("[]") and not isinstance(key.type, mi.StructType):
            # JSON spells these defaults (strings, numbers, an empty list) the way TOML does.
            default = key.extra.get("default") or f"`{json.dumps(key.default)}`"
            rows.append(f"| `{key.path}` | {default} | {_accepts(key)} | {key.description} |")
    return "\n".join(rows) + "\n"


# -- writing the watch list ----------------------------------------------------------------------

# Every read-modify-write of the config file holds this lock: the watch list and the alerts are
# saved from different threads, and each must read what the other last wrote.
_CONFIG_WRITE = threading.Lock()
# And a lock for the other processes: a UI attached to the recorder of its own folder saves `[ui]`
# into the file that recorder saves its watch list and alerts to. A save waits at most this long
# for another process's (a few milliseconds each).
CONFIG_LOCK_WAIT_S = 5.0


@contextlib.contextmanager
def _config_file_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock (fcntl) for saving the config file `target`; OSError when another
    process holds it for more than CONFIG_LOCK_WAIT_S.

    The lock is a file in the user's cache folder named after `target`'s real path: not the
    config itself (a save replaces it, and a lock would have to create a file that may never be
    written) and nothing beside it (a dotfiles folder stays clean). Opened for writing, as
    network file systems need. Where no lock file can be made (a read-only home), the save goes
    on with the in-process lock alone."""
    import fcntl
    import hashlib

    name = hashlib.sha256(str(target).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    folder = platformdirs.user_cache_path(APP_NAME, appauthor=False) / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"config-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        _log.warning("saving %s without a lock against other processes: %s", target, exc)
        yield
        return
    try:
        deadline = time.monotonic() + CONFIG_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(
                        f"{target} is being saved by another process for more than "
                        f"{CONFIG_LOCK_WAIT_S:g} s"
                    ) from None
                time.sleep(0.01)
            except OSError as exc:  # a file system without locks
                _log.warning("saving %s without a lock against other processes: %s", target, exc)
                break
        yield
    finally:
        os.close(fd)  # and the lock with it


def _edit_config(path: Path, change: Callable[[TOMLDocument], None]) -> None:
    """Read the config file (none yet: empty), let `change` edit the parsed document, and write
    it back: one writer at a time, in this process and across processes (`_config_file_lock`),
    so two savers never lose each other's change.

    Comments and keys `change` leaves alone stay. The file is replaced atomically, so a crash
    mid-save never leaves half a config. A symlinked config (a dotfiles setup) is written
    through: the link stays and its target gets the new text. The file keeps its permission
    bits; a new file gets the usual ones (0666 less umask).
    """
    import tomlkit

    with _CONFIG_WRITE:
        target = Path(os.path.realpath(Path(path).expanduser()))
        target.parent.mkdir(parents=True, exist_ok=True)
        with _config_file_lock(target):
            text = target.read_text(encoding="utf-8") if target.exists() else ""
            doc = tomlkit.parse(text)
            change(doc)
            _replace_file(target, tomlkit.dumps(doc))


def save_watch(path: Path, keys: list[StreamKey]) -> None:
    """Write the watch list into the config file (see `_edit_config`)."""
    import tomlkit

    def change(doc: TOMLDocument) -> None:
        watch = tomlkit.array()
        watch.multiline(len(keys) > 3)
        for key in keys:
            watch.append(str(key))
        doc["watch"] = watch

    _edit_config(path, change)


def save_alerts(path: Path, alerts: list[AlertConfig]) -> None:
    """Write the alerts as `[[alerts]]` tables into the config file (see `_edit_config`)."""
    import tomlkit

    def change(doc: TOMLDocument) -> None:
        tables = tomlkit.aot()
        for alert in alerts:
            table = tomlkit.table()
            for name, value in msgspec.structs.asdict(alert).items():
                if name in ("stream", "rule", "value") or value != getattr(_ALERT_DEFAULTS, name):
                    table[name] = value
            tables.append(table)
        if alerts:
            doc["alerts"] = tables
        elif "alerts" in doc:
            del doc["alerts"]

    _edit_config(path, change)


_ALERT_DEFAULTS = AlertConfig(stream="", rule="stale", value=1.0)


def save_ui(path: Path, ui: UiConfig) -> None:
    """Write the `[ui]` table into the config file (see `_edit_config`)."""
    import tomlkit

    def change(doc: TOMLDocument) -> None:
        table = doc.get("ui")
        if not isinstance(table, dict):
            table = tomlkit.table()
            doc["ui"] = table
        for name, value in msgspec.structs.asdict(ui).items():
            table[name] = list(value) if isinstance(value, tuple) else value

    _edit_config(path, change)


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
