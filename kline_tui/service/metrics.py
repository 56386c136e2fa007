"""Prometheus metrics of one runtime, read from its own counters at scrape time.

    metrics = Metrics(runtime)
    body, content_type = metrics.render(request.headers.get("Accept"))   # GET /metrics

Nothing is incremented per message: the pipeline already counts what it does (connection
statuses, the hub's stream states, the ledger's candles, the sink's rows and flushes, the REST
client's weight), and a custom collector turns those into metric families when Prometheus asks,
in O(streams) per scrape. Each runtime has its own registry (never prometheus_client's global
one), which also holds the process and platform collectors.

Counters must never go down, while the objects they are read from come and go: the hub keeps
the counts of connections it closed (`Hub.connection_totals`), the sink's are cumulative, and the
ledger's per-stream counts of a stream that was removed are kept here, from the stream's last
state (see `_LedgerTotals`). Label values come from our own enums and specs (markets, states,
weight pools, the `source` column the recorder writes), never from what a server sent.

`render` reads the pipeline's state without locks: call it on the event loop's thread, as an
aiohttp handler does (a scrape of 2,000 streams takes a few milliseconds).
"""

from __future__ import annotations

import collections
import importlib.metadata
import math
import platform
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from kline_tui.binance.connection import ConnectionState
from kline_tui.binance.markets import MARKETS
from kline_tui.binance.rest import RestClient, WeightLimiter
from kline_tui.model import Market, StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.recorder.ledger import Ledger, StreamLedger
from kline_tui.recorder.pipeline import Pipeline
from kline_tui.runtime import Runtime

__all__ = ["Metrics", "RuntimeCollector"]

PREFIX = "kline_tui_"
_MINUTE_MS = 60_000


class Metrics:
    """The `/metrics` endpoint of one runtime: its registry and its rendering.

    `registry` holds the runtime's collector, prometheus_client's process collector
    (`process_start_time_seconds`, CPU, memory, open files), its platform collector
    (`python_info`) and its garbage-collector one.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        self.collector = RuntimeCollector(runtime)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape's body and its content type: OpenMetrics when the `Accept` header asks for
        it, else Prometheus' text format."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


@dataclass(slots=True)
class _Candles:
    """One market's ledger counters."""

    live: int = 0
    polled: int = 0
    backfilled: int = 0
    duplicates: int = 0
    absent: int = 0

    def add(self, st: StreamLedger) -> None:
        self.live += st.accepted_ws
        self.polled += st.accepted_poll
        self.backfilled += st.accepted_rest
        self.duplicates += st.duplicates
        self.absent += st.absent


class _LedgerTotals:
    """The ledger's candle counters per market, which never go down when a stream is removed.

    The ledger forgets a removed stream with its counts. Each scrape holds on to the StreamLedger
    objects it read; one that is no longer the ledger's (removed, or removed and added again) is
    no longer written to, so its counts are final and are kept as the market's past. A stream
    added and removed between two scrapes is never seen: its counts are missed, never
    subtracted.
    """

    def __init__(self) -> None:
        self._seen: dict[StreamKey, StreamLedger] = {}
        self._past: dict[Market, _Candles] = {}
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()  # two scrapes at once must not fold a stream twice

    def read(self, ledger: Ledger) -> tuple[dict[Market, _Candles], dict[Market, int]]:
        """(counters per market, candles known missing per market)."""
        with self._lock:
            if ledger is not self._ledger:  # another pipeline: its counts start from zero
                self._ledger, self._seen, self._past = ledger, {}, {}
            current = dict(ledger.streams)
            for key, old in list(self._seen.items()):
                if current.get(key) is not old:
                    self._past.setdefault(key.market, _Candles()).add(old)
                    del self._seen[key]
            totals = {
                m: replace(c)  # a copy: the past is added to, never changed
                for m, c in self._past.items()
            }
            missing: dict[Market, int] = {}
            for key, st in current.items():
                self._seen[key] = st
                totals.setdefault(key.market, _Candles()).add(st)
                missing[key.market] = missing.get(key.market, 0) + st.missing_count()
            return totals, missing


class RuntimeCollector:
    """A prometheus_client collector reading one runtime's counters at each scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._ledger_totals = _LedgerTotals()
        self._build = {"version": _version(), "python": platform.python_version()}

    def collect(self) -> Iterator[Metric]:
        """Every kline_tui_* family, from the runtime's state now."""
        runtime = self.runtime
        pipeline = runtime.pipeline
        yield InfoMetricFamily(
            PREFIX + "build", "The recorder's version and the Python running it.", self._build
        )
        up = runtime.started and runtime.report is None
        yield GaugeMetricFamily(
            PREFIX + "up",
            "1 from a successful start until the stop has finished, else 0.",
            value=1 if up else 0,
        )
        recording = up and pipeline is not None and pipeline.recording
        yield GaugeMetricFamily(
            PREFIX + "recording",
            "1 while closed candles are being stored, 0 when paused (or not started).",
            value=1 if recording else 0,
        )
        yield CounterMetricFamily(
            PREFIX + "task_failures_total",
            "Unexpected exceptions of the recorder's supervised tasks (each restarted, or the "
            "recorder stopped when one keeps failing).",
            value=runtime.supervisor.crashes,
        )
        if pipeline is not None:
            yield from self._streams(pipeline)
            yield from self._connections(pipeline)
            yield from self._candles(pipeline)
            yield from self._sink(pipeline)
            yield from self._rest(pipeline.rest)

    # -- hub: streams and connections ------------------------------------------------------------

    def _streams(self, pipeline: Pipeline) -> Iterator[Metric]:
        hub = pipeline.hub
        by_state = collections.Counter((s.key.market, s.status) for s in list(hub.streams.values()))
        streams = GaugeMetricFamily(
            PREFIX + "streams",
            "Streams watched, by market and state (every state of a market with streams, 0s "
            "included).",
            labels=["market", "state"],
        )
        for market in _markets({market for market, _ in by_state}):
            for status in StreamStatus:
                streams.add_metric([market.value, status.value], by_state[market, status])
        yield streams
        yield CounterMetricFamily(
            PREFIX + "stalls_total",
            "Times a stream was found silent for many push periods and marked stale.",
            value=hub.stalls_detected,
        )

    def _connections(self, pipeline: Pipeline) -> Iterator[Metric]:
        hub = pipeline.hub
        statuses = [c.status for c in list(hub.connections)]
        totals = hub.connection_totals()
        by_state = collections.Counter((s.market, s.state) for s in statuses)
        with_streams = {k.market for k in list(hub.streams)}
        connections = GaugeMetricFamily(
            PREFIX + "connections",
            "WebSocket connections open or being opened, by market and state.",
            labels=["market", "state"],
        )
        for market in _markets(with_streams | {s.market for s in statuses}):
            for state in ConnectionState:
                connections.add_metric([market.value, state.value], by_state[market, state])
        yield connections
        frames = CounterMetricFamily(
            PREFIX + "frames_received_total",
            "WebSocket frames received, by market (connections since closed included).",
            labels=["market"],
        )
        malformed = CounterMetricFamily(
            PREFIX + "frames_malformed_total",
            "Frames dropped as malformed or impossible candles, by market.",
            labels=["market"],
        )
        reconnects = CounterMetricFamily(
            PREFIX + "reconnects_total",
            "Times a connection was lost or refused and tried again, by market.",
            labels=["market"],
        )
        for market in _markets(set(totals) | with_streams):
            total = totals.get(market)
            labels = [market.value]
            frames.add_metric(labels, total.frames if total else 0)
            malformed.add_metric(labels, total.malformed if total else 0)
            reconnects.add_metric(labels, total.reconnects if total else 0)
        yield frames
        yield malformed
        yield reconnects
        yield CounterMetricFamily(
            PREFIX + "connection_rotations_total",
            "Connections replaced make-before-break (before the 24 h cut, on a shutdown notice, "
            "or when all their streams went silent).",
            value=hub.rotations,
        )
        lag = GaugeMetricFamily(
            PREFIX + "event_lag_seconds",
            "The worst delay, among a market's live connections, between an event's exchange "
            "time and its receipt (on the exchange clock as known here; sampled twice a second).",
            labels=["market"],
            unit="seconds",
        )
        worst: dict[Market, float] = {}
        for s in statuses:
            if s.state is ConnectionState.LIVE and s.lag_ms is not None:
                # Measured in exchange ms; a clock that runs fast (the demo's) is brought back to
                # real time, as the UI shows it.
                rate = pipeline.rest.clock(s.market).rate
                lag_ms = s.lag_ms / rate if math.isfinite(rate) and rate > 0 else s.lag_ms
                worst[s.market] = max(worst.get(s.market, lag_ms), lag_ms)
        for market in _markets(set(worst)):
            lag.add_metric([market.value], worst[market] / 1000)
        yield lag

    # -- ledger ----------------------------------------------------------------------------------

    def _candles(self, pipeline: Pipeline) -> Iterator[Metric]:
        totals, missing = self._ledger_totals.read(pipeline.ledger)
        missing_family = GaugeMetricFamily(
            PREFIX + "candles_missing",
            "Closed candles known to be missing (to be fetched from REST), by market.",
            labels=["market"],
        )
        for market in _markets(set(missing)):
            missing_family.add_metric([market.value], missing[market])
        yield missing_family
        families = [
            ("candles_live_total", "Closed candles taken live from the WebSocket", "live"),
            (
                "candles_polled_total",
                "Closed candles of kinds with no WebSocket stream, polled from REST at their close",
                "polled",
            ),
            ("candles_backfilled_total", "Missing candles fetched from REST", "backfilled"),
            (
                "candles_duplicates_dropped_total",
                "Closed candles dropped because they were already held",
                "duplicates",
            ),
            (
                "candles_absent_total",
                "Missing candles given up because the exchange does not have them",
                "absent",
            ),
        ]
        markets = _markets(set(totals))
        for name, text, attr in families:
            family = CounterMetricFamily(PREFIX + name, text + ", by market.", labels=["market"])
            for market in markets:
                family.add_metric([market.value], getattr(totals[market], attr))
            yield family
        yield CounterMetricFamily(
            PREFIX + "backfill_failures_total",
            "REST fetches of missing candles that failed (each retried later).",
            value=pipeline.backfiller.failures,
        )

    # -- sink ------------------------------------------------------------------------------------

    def _sink(self, pipeline: Pipeline) -> Iterator[Metric]:
        stats = pipeline.sink.stats
        written = CounterMetricFamily(
            PREFIX + "candles_written_total",
            "Rows written to the dataset, by market and by their `source` column.",
            labels=["market", "source"],
        )
        for (market, source), rows in sorted(stats.written_by.items()):
            written.add_metric([market.value, source], rows)
        yield written
        yield CounterMetricFamily(
            PREFIX + "files_written_total", "Parquet part files written.", value=stats.files_written
        )
        yield GaugeMetricFamily(
            PREFIX + "rows_buffered",
            "Closed candles in memory, waiting for the next flush.",
            value=stats.rows_buffered,
        )
        yield CounterMetricFamily(
            PREFIX + "rows_dropped_total",
            "Closed candles refused because the buffer was full while the disk refused writes "
            "(fetched again at the next start).",
            value=stats.dropped,
        )
        yield CounterMetricFamily(
            PREFIX + "dead_letters_total",
            "Rows no column can hold, set aside in the dead-letter file.",
            value=stats.dead_letters,
        )
        yield CounterMetricFamily(
            PREFIX + "flush_errors_total",
            "Flushes the disk refused (full, read-only): their rows stay buffered and are retried.",
            value=stats.errors,
        )
        yield GaugeMetricFamily(
            PREFIX + "flush_failing",
            "1 while the disk refuses writes (the last flush failed), else 0.",
            value=1 if stats.failing else 0,
        )
        yield SummaryMetricFamily(
            PREFIX + "flush_duration_seconds",
            "Time each flush took, from taking the buffer to the parts being on disk.",
            count_value=stats.flushes,
            sum_value=stats.flush_seconds,
            unit="seconds",
        )
        if stats.last_flush_at is not None:  # absent until the first flush, rather than 1970
            yield GaugeMetricFamily(
                PREFIX + "last_flush_timestamp_seconds",
                "When the last flush ended (Unix time, whether or not the disk took it).",
                value=stats.last_flush_at,
                unit="seconds",
            )

    # -- REST ------------------------------------------------------------------------------------

    def _rest(self, rest: RestClient) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            PREFIX + "rest_weight_used",
            "REST request weight used in the exchange's current minute, by weight pool.",
            labels=["budget"],
        )
        limit = GaugeMetricFamily(
            PREFIX + "rest_weight_limit",
            "The exchange's REST request-weight limit per minute, by weight pool (the recorder "
            "holds requests back at 90 % of it).",
            labels=["budget"],
        )
        blocked = GaugeMetricFamily(
            PREFIX + "rest_blocked_seconds",
            "Seconds before REST may send again after a 429 or 418 (Retry-After), by pool.",
            labels=["budget"],
            unit="seconds",
        )
        pools: dict[str, WeightLimiter] = {}
        for market in Market:
            limiter = rest.limiters.get(market)
            if limiter is not None:
                pools.setdefault(MARKETS[market].weight_pool, limiter)
        now = time.monotonic()
        for pool, limiter in sorted(pools.items()):
            used.add_metric([pool], _weight_used(limiter))
            limit.add_metric([pool], limiter.budget)
            blocked.add_metric([pool], max(0.0, limiter.blocked_until - now))
        yield used
        yield limit
        yield blocked
        yield CounterMetricFamily(
            PREFIX + "rest_rows_rejected_total",
            "Kline rows in REST answers dropped as impossible candles.",
            value=rest.rejected_rows,
        )


def _weight_used(limiter: WeightLimiter) -> int:
    """The weight used in the exchange's current minute: what the last answer said, or 0 once
    that minute has passed (the limiter itself resets only at its next request)."""
    now = limiter.server_now_ms()
    if now is not None and limiter.minute >= 0 and now // _MINUTE_MS > limiter.minute:
        return 0
    return limiter.used


def _markets(present: set[Market]) -> list[Market]:
    """The markets in `present`, in the enum's order (a stable order for every scrape)."""
    return [m for m in Market if m in present]


def _version() -> str:
    try:
        return importlib.metadata.version("kline-tui")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"
