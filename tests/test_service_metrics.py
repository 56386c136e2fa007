"""GET /metrics: the runtime's counters read at scrape time, checked against the runtime itself
and against the dataset on disk. Real sockets against the simulator; each scrape is rendered and
parsed back with prometheus_client's own parsers, as Prometheus would read it."""

from __future__ import annotations

import asyncio
import collections
import errno
import itertools
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from kline_tui.binance.connection import Connection, ConnectionState
from kline_tui.binance.markets import Endpoints
from kline_tui.config import Settings
from kline_tui.model import Candle, Interval, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import StreamState, StreamStatus
from kline_tui.recorder.pipeline import Pipeline
from kline_tui.recorder.sink import ParquetSink, stored_by_source
from kline_tui.retry import Backoff
from kline_tui.runtime import Runtime
from kline_tui.service.metrics import Metrics
from kline_tui.store import parts

from .datasets import read_dataset
from .support import KEYS, WATCH, make_settings, wait_until

# Every name the alert rules use, with its type as the text format declares it.
REQUIRED = {
    "kline_tui_streams": "gauge",
    "kline_tui_connections": "gauge",
    "kline_tui_frames_received_total": "counter",
    "kline_tui_frames_malformed_total": "counter",
    "kline_tui_reconnects_total": "counter",
    "kline_tui_candles_written_total": "counter",
    "kline_tui_candles_missing": "gauge",
    "kline_tui_candles_backfilled_total": "counter",
    "kline_tui_candles_live_total": "counter",
    "kline_tui_candles_duplicates_dropped_total": "counter",
    "kline_tui_rows_buffered": "gauge",
    "kline_tui_rows_dropped_total": "counter",
    "kline_tui_dead_letters_total": "counter",
    "kline_tui_flush_errors_total": "counter",
    "kline_tui_flush_duration_seconds_count": "summary",
    "kline_tui_flush_duration_seconds_sum": "summary",
    "kline_tui_last_flush_timestamp_seconds": "gauge",
    "kline_tui_rest_weight_used": "gauge",
    "kline_tui_rest_weight_limit": "gauge",
    "kline_tui_event_lag_seconds": "gauge",
    "kline_tui_stalls_total": "counter",
    "kline_tui_task_failures_total": "counter",
    "kline_tui_recording": "gauge",
    "kline_tui_up": "gauge",
    "kline_tui_build_info": "gauge",  # `info` in OpenMetrics, which the text format lacks
    "process_start_time_seconds": "gauge",
    "python_info": "gauge",
}
# Counters whose every series must never go down, whatever happens to connections and streams.
MONOTONIC = [
    "kline_tui_frames_received_total",
    "kline_tui_frames_malformed_total",
    "kline_tui_reconnects_total",
    "kline_tui_candles_written_total",
    "kline_tui_candles_live_total",
    "kline_tui_candles_backfilled_total",
    "kline_tui_candles_duplicates_dropped_total",
    "kline_tui_connection_rotations_total",
    "kline_tui_flush_duration_seconds_count",
]
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Labels = frozenset[tuple[str, str]]


@dataclass
class Scrape:
    """One parsed scrape: each sample name's family type, and its series by label set."""

    content_type: str
    types: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    series: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        return self.series[name][frozenset(labels.items())]

    def by(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """The series of `name` keyed by the values of `labels`."""
        return {
            tuple(dict(key)[label] for label in labels): value
            for key, value in self.series.get(name, {}).items()
        }

    def total(self, name: str) -> float:
        return sum(self.series.get(name, {}).values())


def scrape(metrics: Metrics, accept: str | None = None) -> Scrape:
    body, content_type = metrics.render(accept)
    text = body.decode()
    openmetrics = content_type.startswith("application/openmetrics-text")
    result = Scrape(content_type)
    for family in (parse_openmetrics if openmetrics else parse_text)(text):
        for sample in family.samples:
            result.types[sample.name] = family.type
            result.units[sample.name] = family.unit
            result.series.setdefault(sample.name, {})[frozenset(sample.labels.items())] = (
                sample.value
            )
    return result


def hub_states(pipeline: Pipeline) -> dict[tuple[str, str], int]:
    """Streams by (market, state) as the hub holds them, every state of a market with streams."""
    counts = collections.Counter(
        (s.key.market.value, s.status.value) for s in pipeline.hub.streams.values()
    )
    markets = {k.market.value for k in pipeline.hub.streams}
    return {(m, s.value): counts[m, s.value] for m in markets for s in StreamStatus}


def written_in(df: pl.DataFrame) -> dict[tuple[str, str], int]:
    """Rows of the dataset by (market, source)."""
    return {(m, s): n for m, s, n in df.group_by("market", "source").len().iter_rows()}


def live(pipeline: Pipeline, n: int) -> bool:
    """Every stream has taken `n` closed candles live and has nothing missing."""
    ledgers = pipeline.ledger.streams
    return all(
        k in ledgers and ledgers[k].accepted_ws >= n and not ledgers[k].missing
        for k in pipeline.hub.streams
    )


def runtime_for(sim, data_dir: Path, **kw) -> Runtime:
    """A runtime on the simulator that flushes only when asked (unless `flush_age_s` is given)."""
    kw.setdefault("flush_age_s", 3600.0)
    settings = make_settings(sim, data_dir, WATCH, history=5, **kw)
    return Runtime(settings, keep_closed=0, backoff=Backoff(base=0.2, cap=1.0))


# -- before the pipeline runs ------------------------------------------------------------------


def settings_nowhere(data_dir: Path) -> Settings:
    """Settings whose endpoints are a closed loopback port (nothing here connects anyway)."""
    nowhere = Endpoints("ws://127.0.0.1:9", "http://127.0.0.1:9")
    return Settings(
        config_path=data_dir / "absent.toml",
        config_exists=False,
        data_dir=data_dir,
        endpoints=dict.fromkeys(Market, nowhere),
    )


def test_a_runtime_not_started_has_build_and_process_metrics_and_is_down(tmp_path):
    metrics = Metrics(Runtime(settings_nowhere(tmp_path)))
    got = scrape(metrics)
    assert got.get("kline_tui_up") == 0 and got.get("kline_tui_recording") == 0
    assert got.get("kline_tui_task_failures_total") == 0
    [build] = got.series["kline_tui_build_info"]
    assert dict(build).keys() == {"version", "python"} and dict(build)["version"] != ""
    assert got.get("process_start_time_seconds") <= time.time()
    assert "python_info" in got.series
    assert not [n for n in got.series if n.startswith("kline_tui_streams")]


def test_each_runtime_has_its_own_registry(tmp_path):
    """Two runtimes in one process (tests, a shard per runtime) do not clash or share series."""
    first = Metrics(Runtime(settings_nowhere(tmp_path / "a")))
    second = Metrics(Runtime(settings_nowhere(tmp_path / "b")))
    assert first.registry is not second.registry
    first.runtime.supervisor.crashes = 3
    assert scrape(first).get("kline_tui_task_failures_total") == 3
    assert scrape(second).get("kline_tui_task_failures_total") == 0


def test_the_accept_header_chooses_the_format(tmp_path):
    metrics = Metrics(Runtime(settings_nowhere(tmp_path)))
    for accept in (None, "", "*/*", "text/plain;version=0.0.4", "application/json"):
        body, content_type = metrics.render(accept)
        assert content_type.startswith("text/plain"), accept
        assert b"# EOF" not in body
    body, content_type = metrics.render(OPENMETRICS + ",text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    got = scrape(metrics, OPENMETRICS)
    assert got.types["kline_tui_build_info"] == "info"
    assert got.types["kline_tui_up"] == "gauge"
    assert got.types["kline_tui_task_failures_total"] == "counter"


async def test_a_scrape_while_the_start_waits_for_an_unreachable_exchange(sim, tmp_path):
    """The pipeline exists but has not started (its symbols cannot be checked): the scrape works,
    the runtime is down, and there are no streams yet."""
    sim.faults.rest_fail(503, 10_000)
    runtime = runtime_for(sim, tmp_path)
    metrics = Metrics(runtime)
    starting = asyncio.ensure_future(runtime.start(leave_out_refused=True))
    try:
        await wait_until(lambda: runtime.pipeline is not None, what="a pipeline")
        await asyncio.sleep(0.3)  # its first REST calls are failing now
        got = scrape(metrics)
        assert got.get("kline_tui_up") == 0 and got.get("kline_tui_recording") == 0
        assert "kline_tui_streams" not in got.series  # the family, with no series
        assert got.get("kline_tui_rows_buffered") == 0
        assert got.by("kline_tui_rest_weight_limit", "budget") == {
            ("futures",): 2400,
            ("spot",): 6000,
        }
        assert "kline_tui_last_flush_timestamp_seconds" not in got.series  # never flushed
    finally:
        runtime.request_stop("test over")
        assert await starting == []
        await runtime.stop()
    assert scrape(metrics).get("kline_tui_up") == 0


# -- a running recorder ------------------------------------------------------------------------


async def test_the_metrics_match_the_runtime_and_the_dataset(sim, tmp_path, monkeypatch):
    runtime = runtime_for(sim, tmp_path)
    metrics = Metrics(runtime)
    await runtime.start()
    pipeline = runtime.pipeline
    assert pipeline is not None
    try:
        await wait_until(lambda: live(pipeline, 2), timeout=30, what="history and live candles")
        before_flush = time.time()
        assert await runtime.flush() > 0

        # No await from here to the dataset read: nothing can change in between.
        got = scrape(metrics)
        states = hub_states(pipeline)
        totals = pipeline.hub.connection_totals()
        stats = pipeline.sink.stats
        ledgers = list(pipeline.ledger.streams.values())
        dataset = read_dataset(tmp_path)

        missing = [n for n in REQUIRED if n not in got.series]
        assert not missing, f"not in the scrape: {missing}"
        wrong = {n: got.types[n] for n, kind in REQUIRED.items() if got.types[n] != kind}
        assert not wrong, wrong
        assert got.get("kline_tui_up") == 1 and got.get("kline_tui_recording") == 1

        # Written candles: the dataset's rows, in all, by market and by source.
        assert got.total("kline_tui_candles_written_total") == dataset.height > 0
        assert got.by("kline_tui_candles_written_total", "market", "source") == written_in(dataset)
        assert {s for _, s in written_in(dataset)} == {"ws", "rest"}  # live and history
        # Every candle the ledger took is written or buffered.
        taken = sum(st.accepted_ws + st.accepted_rest for st in ledgers)
        assert taken == got.total("kline_tui_candles_written_total") + stats.rows_buffered
        assert got.get("kline_tui_rows_buffered") == stats.rows_buffered
        assert got.total("kline_tui_candles_live_total") == sum(st.accepted_ws for st in ledgers)
        assert got.total("kline_tui_candles_backfilled_total") == sum(
            st.accepted_rest for st in ledgers
        )
        assert got.by("kline_tui_candles_missing", "market") == {(k.market.value,): 0 for k in KEYS}

        # Streams and connections by state: the hub's, every state present.
        assert got.by("kline_tui_streams", "market", "state") == states
        assert len(states) == 3 * len(StreamStatus)
        by_conn_state = got.by("kline_tui_connections", "market", "state")
        assert len(by_conn_state) == 3 * len(ConnectionState)
        for market in (k.market for k in KEYS):
            assert by_conn_state[market.value, "live"] == sum(
                c.status.state is ConnectionState.LIVE and c.market is market
                for c in pipeline.hub.connections
            )
            assert by_conn_state[market.value, "live"] >= 1
            assert got.get("kline_tui_frames_received_total", market=market.value) == (
                totals[market].frames
            )
            assert totals[market].frames > 0
            assert got.get("kline_tui_reconnects_total", market=market.value) == 0
            assert got.get("kline_tui_frames_malformed_total", market=market.value) == 0
        # The simulator runs an hour ahead (and fast): the lag is what the connections measured,
        # in exchange ms, brought back to real time by each market clock's rate.
        worst = {
            c.market.value: c.status.lag_ms / 1000 / pipeline.rest.clock(c.market).rate
            for c in pipeline.hub.connections
            if c.status.state is ConnectionState.LIVE and c.status.lag_ms is not None
        }
        assert {m: v for (m,), v in got.by("kline_tui_event_lag_seconds", "market").items()} == (
            pytest.approx(worst)
        )

        # Flushes: a summary the sink accumulated, and when the last one ended.
        assert got.get("kline_tui_flush_duration_seconds_count") == stats.flushes >= 1
        assert (
            0
            < got.get("kline_tui_flush_duration_seconds_sum")
            == pytest.approx(stats.flush_seconds)
        )
        assert before_flush <= got.get("kline_tui_last_flush_timestamp_seconds") <= time.time()
        assert got.get("kline_tui_flush_errors_total") == 0
        assert got.get("kline_tui_flush_failing") == 0

        # REST weight, per pool: the history and symbol checks spent some.
        assert got.by("kline_tui_rest_weight_limit", "budget") == {
            ("futures",): 2400,
            ("spot",): 6000,
        }
        for (pool,), used in got.by("kline_tui_rest_weight_used", "budget").items():
            assert 0 <= used <= 2400, pool

        # The same in OpenMetrics, when asked for.
        om = scrape(metrics, OPENMETRICS)
        assert om.content_type.startswith("application/openmetrics-text")
        assert om.types["kline_tui_build_info"] == "info"
        assert om.types["kline_tui_flush_duration_seconds_count"] == "summary"
        assert om.units["kline_tui_flush_duration_seconds_count"] == "seconds"
        assert om.types["kline_tui_frames_received_total"] == "counter"
        assert om.total("kline_tui_candles_written_total") == dataset.height

        runtime.pause()
        assert scrape(metrics).get("kline_tui_recording") == 0
        runtime.resume()
        assert scrape(metrics).get("kline_tui_recording") == 1

        # The disk refuses a flush: counted as an error, nothing counted as written.
        await wait_until(lambda: pipeline.sink.stats.rows_buffered > 0, what="rows to write")
        with monkeypatch.context() as patch:

            def disk_full(*args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")

            patch.setattr(parts, "write_part", disk_full)
            assert await runtime.flush() == 0
            refused = scrape(metrics)
        assert refused.get("kline_tui_flush_errors_total") == 1
        assert refused.get("kline_tui_flush_failing") == 1
        assert refused.get("kline_tui_rows_buffered") == pipeline.sink.stats.rows_buffered > 0
        assert refused.total("kline_tui_candles_written_total") == dataset.height
        # The disk takes writes again: the counters equal the dataset once more.
        assert await runtime.flush() > 0
        again = scrape(metrics)
        assert again.get("kline_tui_flush_failing") == 0
        assert again.total("kline_tui_candles_written_total") == read_dataset(tmp_path).height
    finally:
        await runtime.stop()
    after = scrape(metrics)
    assert after.get("kline_tui_up") == 0 and after.get("kline_tui_recording") == 0
    assert after.total("kline_tui_candles_written_total") == read_dataset(tmp_path).height


async def test_counters_never_go_down_across_drops_replacements_and_removals(sim, tmp_path):
    """Scraped every 50 ms while the simulator sends garbage, drops every connection, announces
    a shutdown (every connection is replaced by a new one) and a market's only stream is
    removed (its connection is closed): no series of a counter ever goes down or vanishes."""
    runtime = runtime_for(sim, tmp_path, flush_age_s=1.0)
    metrics = Metrics(runtime)
    await runtime.start()
    pipeline = runtime.pipeline
    assert pipeline is not None
    hub = pipeline.hub
    scrapes: list[Scrape] = []

    async def scrape_often() -> None:
        while True:
            scrapes.append(scrape(metrics))
            await asyncio.sleep(0.05)

    def all_live() -> bool:
        return all(s.status is StreamStatus.LIVE for s in hub.streams.values())

    scraper = asyncio.ensure_future(scrape_often())
    try:
        await wait_until(lambda: live(pipeline, 1), timeout=30, what="live candles")
        sim.faults.malformed_rate = 0.3
        await wait_until(
            lambda: all(t.malformed for t in hub.connection_totals().values()),
            what="malformed frames on every market",
        )
        sim.faults.malformed_rate = 0.0

        await sim.faults.drop()
        await wait_until(
            lambda: all(t.reconnects for t in hub.connection_totals().values()) and all_live(),
            timeout=30,
            what="every market reconnected",
        )

        first = {c.status.conn_id for c in hub.connections}
        await sim.faults.server_shutdown()
        await wait_until(
            lambda: not first & {c.status.conn_id for c in hub.connections} and all_live(),
            timeout=30,
            what="every connection replaced",
        )

        coinm = next(k for k in KEYS if k.market is Market.COINM)
        before_removal = scrapes[-1]
        runtime.remove([coinm])
        await wait_until(
            lambda: not [c for c in hub.connections if c.market is Market.COINM],
            what="the COIN-M connection closed",
        )
        await asyncio.sleep(1.0)  # its close ends, it is folded into the totals
    finally:
        scraper.cancel()
        await runtime.stop()
    scrapes.append(scrape(metrics))  # after the stop: every connection closed and folded in

    for name in MONOTONIC:
        for earlier, later in itertools.pairwise(scrapes):
            old, new = earlier.series.get(name, {}), later.series.get(name, {})
            for labels, value in old.items():
                assert labels in new, f"{name}{dict(labels)} vanished"
                assert new[labels] >= value, f"{name}{dict(labels)} went {value} -> {new[labels]}"
    last = scrapes[-1]
    for market in ("spot", "usdm", "coinm"):
        assert last.get("kline_tui_reconnects_total", market=market) >= 1
        assert last.get("kline_tui_frames_malformed_total", market=market) > 0
    assert last.get("kline_tui_connection_rotations_total") >= 3
    # What the removed stream's market did before the removal is still counted.
    for name in ("kline_tui_frames_received_total", "kline_tui_candles_live_total"):
        assert last.get(name, market="coinm") >= before_removal.get(name, market="coinm") > 0
    assert "coinm" not in {m for m, _ in last.by("kline_tui_streams", "market", "state")}
    assert last.total("kline_tui_candles_written_total") == read_dataset(tmp_path).height


# -- the sink's part ---------------------------------------------------------------------------

T0 = 1_764_028_800_000  # 2025-11-25 00:00 UTC


async def test_the_sink_counts_only_rows_on_disk_by_market_and_source(tmp_path, monkeypatch):
    def candle(t: int, trades: int = 7) -> Candle:
        return Candle(t, t + 59_999, 1.0, 2.0, 0.5, 1.5, 2.0, 200.0, 1.0, 100.0, trades)

    sink = ParquetSink(tmp_path, EventLog(), flush_rows=10_000, flush_age_s=3600)
    btc, eth = StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("spot:ETHUSDT:1m")
    for i in range(6):
        sink.add(btc, candle(T0 + i * 60_000), "ws" if i % 2 else "rest")
    sink.add(btc, candle(T0 + 6 * 60_000, trades=2**70), "ws")  # no Int64 holds it: set aside
    sink.add(eth, candle(T0), "ws")
    with monkeypatch.context() as patch:

        def disk_full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        patch.setattr(parts, "write_part", disk_full)
        assert not await sink.flush()
    assert sink.stats.written_by == {} and sink.stats.flushes == 1
    assert await sink.flush()
    await sink.close()
    assert sink.stats.written_by == {
        (Market.USDM, "ws"): 3,
        (Market.USDM, "rest"): 3,
        (Market.SPOT, "ws"): 1,
    }
    assert written_in(read_dataset(tmp_path)) == {("usdm", "ws"): 3, ("usdm", "rest"): 3} | {
        ("spot", "ws"): 1
    }
    assert sink.stats.dead_letters == 1
    assert sink.stats.flushes == 2 and sink.stats.flush_seconds > 0


def test_rows_a_twin_stored_first_are_not_counted_again():
    """A Delta MERGE stores only what the table lacks: the per-source counts follow what was
    stored, exactly when all, none or one source's rows were, the total always."""
    chunk = [("x", "ws")] * 6 + [("x", "rest")] * 4
    assert stored_by_source(chunk, 10) == {"ws": 6, "rest": 4}
    assert stored_by_source(chunk, 0) == {}
    assert stored_by_source(chunk[:6], 2) == {"ws": 2}
    split = stored_by_source(chunk, 5)
    assert sum(split.values()) == 5 and split == {"ws": 3, "rest": 2}
    assert sum(stored_by_source(chunk, 1).values()) == 1


async def test_twin_sinks_on_one_delta_table_count_each_candle_once(tmp_path):
    """Two recorders writing the same candles to one Delta table: what their counters say they
    wrote adds up to what the table holds, by source (it counted rows offered to the MERGE)."""
    pytest.importorskip("deltalake")
    from kline_tui.store.dataset import StorageSpec, open_dataset

    def candle(t: int) -> Candle:
        return Candle(t, t + 59_999, 1.0, 2.0, 0.5, 1.5, 2.0, 200.0, 1.0, 100.0, 7)

    def twin() -> ParquetSink:
        dataset = open_dataset(StorageSpec(str(tmp_path / "table"), "delta"))
        dataset.acquire()
        return ParquetSink(dataset, EventLog(), flush_rows=10_000, flush_age_s=3600)

    btc = StreamKey.parse("usdm:BTCUSDT:1m")
    first = twin()
    for i in range(4):  # the first twin: 4 live candles
        first.add(btc, candle(T0 + i * 60_000), "ws")
    assert await first.flush()
    second = twin()
    for i in range(6):  # the second: the same 4 live ones, and 2 more fetched from REST
        second.add(btc, candle(T0 + i * 60_000), "ws" if i < 4 else "rest")
    assert await second.flush()
    await first.close()
    await second.close()
    assert first.stats.written_by == {(Market.USDM, "ws"): 4}
    assert second.stats.written_by == {(Market.USDM, "rest"): 2}
    table = pl.read_delta(str(tmp_path / "table"))
    assert table.height == 6 and table["source"].value_counts().sort("source").rows() == [
        ("rest", 2),
        ("ws", 4),
    ]


# -- cost --------------------------------------------------------------------------------------

COUNTS = {Market.SPOT: 1000, Market.USDM: 600, Market.COINM: 400}


def two_thousand_streams(tmp_path: Path) -> tuple[Runtime, dict[str, object]]:
    """A runtime whose pipeline holds 2,000 streams in real Hub, StreamState, ledger and
    Connection objects (never connected), in every state; and what a scrape must say of them."""
    settings = settings_nowhere(tmp_path)
    runtime = Runtime(settings)
    pipeline = Pipeline(settings, events=runtime.events, supervisor=runtime.supervisor)
    runtime.pipeline, runtime.started = pipeline, True
    hub, ledger = pipeline.hub, pipeline.ledger
    states = list(StreamStatus)
    expected_states: collections.Counter[tuple[str, str]] = collections.Counter()
    expected_live: collections.Counter[str] = collections.Counter()
    expected_missing: collections.Counter[str] = collections.Counter()
    i = 0
    for market, count in COUNTS.items():
        suffix = "USD_PERP" if market is Market.COINM else "USDT"
        for n in range(count):
            key = StreamKey(market, f"S{n + 1:04d}{suffix}", Interval.M1)
            status = states[i % len(states)]
            hub.streams[key] = StreamState(key, status=status)
            st = ledger.begin(key, T0)
            st.accepted_ws, st.accepted_rest = i, 1
            if i % 4 == 0:
                st.add_missing(T0 - 10 * 60_000, T0 - 60_000)  # 10 candles
                expected_missing[market.value] += 10
            expected_states[market.value, status.value] += 1
            expected_live[market.value] += i
            i += 1
        for c in range(-(-count // 1024)):
            conn = Connection(market, "ws://127.0.0.1:9", hub)
            conn.status.state = ConnectionState.LIVE
            conn.status.frames, conn.status.lag_ms = 1000 * (c + 1), 40.0 * (c + 1)
            hub.connections.append(conn)
    return runtime, {
        "states": expected_states,
        "live": expected_live,
        "missing": expected_missing,
    }


async def test_a_scrape_of_2000_streams_is_right_and_cheap(tmp_path):
    runtime, expected = two_thousand_streams(tmp_path)
    pipeline = runtime.pipeline
    assert pipeline is not None
    metrics = Metrics(runtime)
    try:
        got = scrape(metrics)
        assert got.by("kline_tui_streams", "market", "state") == expected["states"]
        assert got.by("kline_tui_candles_live_total", "market") == {
            (m,): n for m, n in expected["live"].items()
        }
        assert got.by("kline_tui_candles_missing", "market") == {
            (m,): n for m, n in expected["missing"].items()
        }
        assert got.by("kline_tui_frames_received_total", "market") == {
            ("spot",): 1000,
            ("usdm",): 1000,
            ("coinm",): 1000,
        }
        assert got.get("kline_tui_event_lag_seconds", market="spot") == pytest.approx(0.04)

        times = []
        for _ in range(30):
            started = time.perf_counter()
            metrics.render(None)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(
            f"scrape of 2,000 streams: median {median * 1000:.2f} ms, max {max(times) * 1000:.2f}"
        )
        # O(streams) and nothing more: a few milliseconds, far below a scrape interval, even on a
        # busy machine.
        assert median < 0.05, f"{median * 1000:.1f} ms"
    finally:
        await pipeline.rest.close()
        pipeline.sink._writer.shutdown(wait=False)


async def test_polled_candles_are_counted_apart_from_live_and_backfilled(sim, tmp_path):
    """Streams of kinds with no WebSocket stream (USD-M mark, premium) are polled at each close:
    their candles are `candles_polled_total`, not live, and equal the ledger's counts."""
    specs = ["usdm:BTCUSDT:1m:mark", "usdm:ETHUSDT:1m:premium", "usdm:BTCUSDT:1m"]
    settings = make_settings(sim, tmp_path, specs, history=5, flush_age_s=3600.0)
    runtime = Runtime(settings, keep_closed=0, backoff=Backoff(base=0.2, cap=1.0))
    metrics = Metrics(runtime)
    assert sorted(await runtime.start()) == sorted(StreamKey.parse(s) for s in specs)
    try:
        pipeline = runtime.pipeline
        assert pipeline is not None
        ledgers = pipeline.ledger.streams
        polled = [StreamKey.parse(s) for s in specs[:2]]
        await wait_until(
            lambda: all(ledgers[k].accepted_poll >= 2 for k in polled), what="polled closes"
        )
        got = scrape(metrics)
        assert got.types["kline_tui_candles_polled_total"] == "counter"
        assert (
            got.get("kline_tui_candles_polled_total", market="usdm")
            == sum(st.accepted_poll for st in ledgers.values())
            >= 4
        )
        assert got.get("kline_tui_candles_live_total", market="usdm") == sum(
            st.accepted_ws for st in ledgers.values()
        )
    finally:
        runtime.request_stop("test over")
        await runtime.stop()
