"""The pipeline against the simulator over real loopback sockets."""

from __future__ import annotations

import asyncio

import polars as pl

from kline_tui.binance.markets import MARKETS
from kline_tui.model import Interval, Market, StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.recorder.pipeline import Pipeline, StreamRefused

from .checks import assert_exact_recording
from .datasets import read_dataset
from .support import make_settings, wait_until


def tradable(market: Market) -> list[str]:
    from kline_tui.sim import universe

    return sorted(s for s, info in universe(market).items() if info.status == "TRADING")


async def test_records_exact_candles_from_three_markets(sim, tmp_path):
    watch = ["usdm:BTCUSDT:1m", "spot:ETHUSDT:1s", "coinm:BTCUSD_PERP:1m"]
    pipeline = Pipeline(make_settings(sim, tmp_path, watch))
    await pipeline.start()
    try:
        await wait_until(
            lambda: all(s.recorded >= 3 for s in pipeline.hub.streams.values()),
            what="three closed candles on every stream",
        )
    finally:
        await pipeline.stop()
    keys = [StreamKey.parse(s) for s in watch]
    assert_exact_recording(read_dataset(tmp_path), keys, min_rows=3)
    # every closed candle the hub saw is on disk, and so is every one fetched from REST
    df = read_dataset(tmp_path)
    ledgers = pipeline.ledger.streams.values()
    assert df.filter(pl.col("source") == "ws").height == sum(s.accepted_ws for s in ledgers)
    assert df.filter(pl.col("source") == "rest").height == pipeline.backfiller.backfilled
    assert df.height == sum(s.recorded for s in pipeline.hub.streams.values())


async def test_add_and_remove_streams_on_a_live_connection(sim, tmp_path):
    symbols = tradable(Market.SPOT)[:40]
    pipeline = Pipeline(make_settings(sim, tmp_path, [f"spot:{symbols[0]}:1m"]))
    await pipeline.start()
    try:
        await wait_until(
            lambda: sim.stats[Market.SPOT].connections_opened == 1, what="a connection"
        )
        # A user adding streams one by one, quickly, then removing some.
        added = [StreamKey(Market.SPOT, s, Interval.M1) for s in symbols[1:]]
        for key in added:
            await pipeline.add([key])
            await asyncio.sleep(0.01)
        removed = added[::3]
        for key in removed:
            pipeline.remove([key])
        want = {k.stream_name for k in pipeline.hub.streams}
        conn_stats = lambda: [c for c in sim.stats[Market.SPOT].connections if c.closed_at is None]  # noqa: E731
        await wait_until(
            lambda: len(conn_stats()) == 1 and conn_stats()[0].subscriptions == want,
            what="the simulator to carry exactly the watched streams",
        )
        await wait_until(
            lambda: all(s.status is StreamStatus.LIVE for s in pipeline.hub.streams.values()),
            what="every stream live",
        )
    finally:
        await pipeline.stop()
    stats = sim.stats[Market.SPOT]
    assert stats.connections_opened == 1, "adding or removing a stream reopened a connection"
    assert stats.rate_violations == 0
    limit = MARKETS[Market.SPOT].control_rate
    assert all(c.max_incoming_per_s <= limit for c in stats.connections)
    methods = [m for c in stats.connections for _, m, _ in c.control]
    assert methods.count("SUBSCRIBE") >= 2 and "UNSUBSCRIBE" in methods


async def test_2500_streams_spread_over_three_connections(sim, tmp_path):
    symbols = tradable(Market.USDM)[:1250]
    assert len(symbols) == 1250
    keys = [StreamKey(Market.USDM, s, iv) for s in symbols for iv in (Interval.M1, Interval.M5)]
    settings = make_settings(sim, tmp_path, [], history=0)
    pipeline = Pipeline(settings)
    await pipeline.start(keys)
    try:
        open_conns = lambda: [c for c in sim.stats[Market.USDM].connections if c.closed_at is None]  # noqa: E731
        await wait_until(
            lambda: sum(len(c.subscriptions) for c in open_conns()) == 2500,
            timeout=60,
            what="2,500 subscriptions",
        )
        sizes = sorted(len(c.subscriptions) for c in open_conns())
    finally:
        await pipeline.stop()
    assert len(sizes) == 3 and max(sizes) <= 1024, sizes
    assert sim.stats[Market.USDM].connections_opened == 3
    assert sim.stats[Market.USDM].rate_violations == 0


async def test_malformed_frames_are_dropped_and_nothing_else(sim, tmp_path):
    watch = ["spot:BTCUSDT:1m", "usdm:ETHUSDT:1m", "coinm:ETHUSD_PERP:1m"]
    pipeline = Pipeline(make_settings(sim, tmp_path, watch))
    await pipeline.start()
    good = (
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":0,"T":59999,'
        '"s":"BTCUSDT","i":"1m","f":1,"L":2,"o":"1","c":"1","h":"1","l":"1","v":"1","n":1,"x":true,'
        '"q":"1","V":"1","Q":"1","B":"0"}}}'
    )
    frames = [
        "this is not json",
        b"\x00\x01binary",
        good.replace('"t":0', '"t":"zero"'),
        good.replace('"k":{', '"k":[],"kk":{'),
        good.replace('"o":"1",', ""),
        good.replace('"o":"1"', '"o":"NaN"'),
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}',
        "[" * 10,
        "A" * (200 * 1024),  # big, but under the socket's limit (see the test below)
    ]
    try:
        await wait_until(
            lambda: sum(s.recorded for s in pipeline.hub.streams.values()) >= 3,
            what="first closed candles",
        )
        for frame in frames:
            await sim.faults.inject(frame)
        sim.faults.malformed_rate = 0.5
        await wait_until(
            lambda: pipeline.hub.malformed >= len(frames) * 3 + 10, what="malformed frames"
        )
        sim.faults.malformed_rate = 0.0
        before = {k: s.recorded for k, s in pipeline.hub.streams.items()}
        await wait_until(
            lambda: all(s.recorded >= before[k] + 2 for k, s in pipeline.hub.streams.items()),
            what="recording to go on",
        )
    finally:
        await pipeline.stop()
    # Garbage never closed a connection and never reached the dataset.
    for market in Market:
        assert sim.stats[market].connections_opened == 1
    assert_exact_recording(read_dataset(tmp_path), [StreamKey.parse(s) for s in watch], min_rows=4)


async def test_unknown_symbols_are_refused_before_subscribing(sim, tmp_path):
    pipeline = Pipeline(make_settings(sim, tmp_path, ["spot:BTCUSDT:1m"]))
    await pipeline.start()
    try:
        try:
            await pipeline.add(
                [StreamKey.parse("usdm:NOPEUSDT:1m"), StreamKey.parse("usdm:ETHUSDT:1m")]
            )
        except StreamRefused as exc:
            assert exc.problems == ["unknown symbol NOPEUSDT on usdm (not in its exchangeInfo)"]
        else:
            raise AssertionError("an unknown symbol was accepted")
        assert StreamKey.parse("usdm:ETHUSDT:1m") not in pipeline.hub.streams
        assert sim.stats[Market.USDM].connections_opened == 0
    finally:
        await pipeline.stop()


async def test_a_frame_over_the_size_limit_is_refused_by_the_socket_and_nothing_is_lost(
    sim, tmp_path
):
    """A frame above the decoder's limit is refused by aiohttp's reader before it is buffered
    whole: the connection is dropped (the protocol allows nothing else), a new one replaces it,
    and the window between is fetched from REST."""
    from kline_tui.binance.wire import MAX_FRAME_BYTES
    from kline_tui.retry import Backoff

    key = StreamKey.parse("usdm:BTCUSDT:1m")
    pipeline = Pipeline(
        make_settings(sim, tmp_path, [str(key)], history=3), backoff=Backoff(0.2, 1.0)
    )
    await pipeline.start()
    try:
        ledger = pipeline.ledger
        await wait_until(
            lambda: key in ledger.streams and ledger.streams[key].accepted_ws >= 2,
            what="live candles",
        )
        await sim.faults.inject("A" * (MAX_FRAME_BYTES + 1), Market.USDM)
        await wait_until(
            lambda: sim.stats[Market.USDM].connections_opened == 2, what="a new connection"
        )
        target = ledger.streams[key].accepted_ws + 2
        await wait_until(
            lambda: ledger.streams[key].accepted_ws >= target and not ledger.streams[key].missing,
            timeout=30,
            what="recording to go on",
        )
    finally:
        await pipeline.stop()
    reasons = " ".join(e.message for e in pipeline.events.recent)
    assert "too big" in reasons.lower() or "size" in reasons.lower(), reasons[-2000:]
    assert_exact_recording(read_dataset(tmp_path), [key], min_rows=5)


async def test_a_429_on_the_websocket_handshake_waits_as_long_as_retry_after_says(sim, tmp_path):
    """A rate-limited handshake is retried no sooner than the server's Retry-After, as REST
    is: the reconnect backoff alone (here at most 1 s) would hammer a server that said 3 s."""
    from kline_tui.retry import Backoff

    key = StreamKey.parse("usdm:BTCUSDT:1m")
    pipeline = Pipeline(
        make_settings(sim, tmp_path, [str(key)], history=2), backoff=Backoff(0.2, 1.0)
    )
    await pipeline.start()
    try:
        stats = sim.stats[Market.USDM]
        await wait_until(lambda: stats.connections_opened == 1, what="the first connection")
        sim.faults.refuse_connections(60.0, Market.USDM, status=429, retry_after=3)
        await sim.faults.drop(Market.USDM)
        await wait_until(lambda: stats.handshakes_refused >= 1, what="a refused handshake")
        await asyncio.sleep(2.5)
        assert stats.handshakes_refused == 1, "retried before Retry-After ran out"
        await wait_until(lambda: stats.handshakes_refused == 2, timeout=10, what="a retry")
        conn = pipeline.hub.connections[0]
        assert "429" in (conn.status.last_error or "")
    finally:
        sim.faults.reset()
        await pipeline.stop()


async def test_display_history_is_asked_a_few_streams_at_a_time_and_is_exact(sim, tmp_path):
    """Charts' history: every stream gets the candles that had closed by the exchange's clock,
    exactly the simulator's, with SEED_CONCURRENCY streams asked at once (one at a time, 5,000
    streams a round trip away took minutes), never more."""
    from kline_tui.recorder.pipeline import SEED_CONCURRENCY
    from kline_tui.sim import stream_candle

    watch = [f"spot:{s}:1m" for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")]
    watch += ["usdm:BTCUSDT:1m", "usdm:ETHUSDT:1m", "coinm:BTCUSD_PERP:1m", "coinm:ETHUSD_PERP:1m"]
    keys = [StreamKey.parse(s) for s in watch]
    pipeline = Pipeline(make_settings(sim, tmp_path, watch, history=0), keep_closed=60)
    await pipeline.start()
    try:
        klines, in_flight, peak = pipeline.rest.klines, 0, 0

        async def counted(*args, **kwargs):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await klines(*args, **kwargs)
            finally:
                in_flight -= 1

        pipeline.rest.klines = counted  # type: ignore[method-assign]
        sim.faults.rest_delay_s = 0.05
        for key in keys:
            pipeline.hub.streams[key].closed.clear()  # what came live meanwhile: history only
        await pipeline.seed_history(keys, count=10)
        assert peak == SEED_CONCURRENCY
        for key in keys:
            closed = list(pipeline.hub.streams[key].closed)
            opens = [c.open_time for c in closed]
            assert len(opens) >= 10, (key, opens)  # and a live close that came meanwhile
            assert opens == [opens[0] + i * 60_000 for i in range(len(opens))], key
            assert opens[-1] + 60_000 <= sim.clock.now_ms(), key  # closed at the exchange
            for c in closed:
                assert c.as_row() == stream_candle(key, c.open_time).to_candle().as_row()
    finally:
        sim.faults.rest_delay_s = 0.0
        await pipeline.stop()


async def test_candles_a_full_buffer_dropped_are_fetched_once_the_disk_takes_writes(
    sim, tmp_path, monkeypatch
):
    """The disk refuses writes and the buffer reaches its bound: the rows beyond it are dropped,
    and their candles are missing, not forgotten. Nothing is fetched while the buffer is full;
    once the disk takes it, they are fetched and written: no hole is left for a restart."""
    import errno

    from kline_tui.store import parts

    key = StreamKey.parse("usdm:BTCUSDT:1m")
    settings = make_settings(sim, tmp_path, [str(key)], history=30, max_buffer_rows=10)
    pipeline = Pipeline(settings)
    write_part = parts.write_part

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(parts, "write_part", disk_full)
    await pipeline.start()
    try:
        await wait_until(lambda: pipeline.sink.stats.dropped >= 20, what="rows dropped")
        ledger = pipeline.ledger.streams[key]
        assert ledger.missing_count() >= 20  # to fetch again, not forgotten
        backfilled = pipeline.backfiller.backfilled
        await asyncio.sleep(1.5)
        assert pipeline.backfiller.backfilled == backfilled  # nowhere to put them yet
        monkeypatch.setattr(parts, "write_part", write_part)
        await wait_until(
            lambda: not ledger.missing and pipeline.sink.stats.rows_buffered == 0,
            timeout=30,
            what="the dropped candles fetched and written",
        )
    finally:
        await pipeline.stop()
    assert_exact_recording(read_dataset(tmp_path), [key], min_rows=30)
