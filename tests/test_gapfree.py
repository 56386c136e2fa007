"""Gap-free recording: every fault the network or the exchange throws, and an exact dataset
after."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from kline_tui.model import Market, StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.recorder.pipeline import Pipeline

from .checks import assert_exact_recording
from .datasets import read_dataset
from .support import KEYS, cut_off, fast_pipeline, wait_until


def caught_up(pipeline: Pipeline, n: int = 2):
    """Each stream has n more closed candles than now, and nothing missing."""
    ledgers = pipeline.ledger.streams
    target = {k: ledgers[k].accepted_ws + n for k in pipeline.hub.streams}

    def check() -> bool:
        return all(
            ledgers[k].accepted_ws >= target[k] and not ledgers[k].missing
            for k in pipeline.hub.streams
        )

    return check


@pytest.mark.parametrize("offset_h", [-1, 1])
async def test_reconnect_window_is_backfilled_whatever_the_local_clock(tmp_path, offset_h):
    from kline_tui.sim import Simulator

    async with Simulator(speed=60.0, offset_ms=offset_h * 3_600_000) as sim:
        pipeline = fast_pipeline(sim, tmp_path)
        await pipeline.start()
        try:
            await wait_until(caught_up(pipeline, 2), what="first candles")
            await cut_off(sim, pipeline, 3.0)  # three simulated minutes with no socket
            await wait_until(
                caught_up(pipeline, 3), timeout=30, what="catching up after the reconnect"
            )
        finally:
            await pipeline.stop()
        assert pipeline.backfiller.backfilled >= 3 * 5 + 3  # history + the lost window on each
        for market in Market:
            assert sim.stats[market].connections_opened >= 2
    assert_exact_recording(read_dataset(tmp_path), KEYS, min_rows=10)


async def test_duplicate_late_and_lost_closes(sim, tmp_path):
    sim.faults.set(duplicate_close_rate=0.3, late_close_rate=0.3, drop_close_rate=0.2)
    pipeline = fast_pipeline(sim, tmp_path)
    await pipeline.start()
    try:
        await wait_until(
            lambda: all(s.accepted_ws >= 8 for s in pipeline.ledger.streams.values()),
            what="candles",
        )
        sim.faults.reset()
        await wait_until(caught_up(pipeline, 1), what="the holes filled")
    finally:
        await pipeline.stop()
    assert sum(s.duplicates for s in pipeline.hub.streams.values()) > 0
    assert pipeline.backfiller.backfilled > 3 * 5  # lost closes came from REST
    assert_exact_recording(read_dataset(tmp_path), KEYS, min_rows=12)


async def test_one_silent_stream_is_detected_and_resubscribed(sim, tmp_path):
    watch = ["usdm:BTCUSDT:1m", "usdm:ETHUSDT:1m", "usdm:SOLUSDT:1m"]
    pipeline = fast_pipeline(sim, tmp_path, watch)
    await pipeline.start()
    try:
        await wait_until(caught_up(pipeline, 1), what="first candles")
        sim.faults.stall(60, market=Market.USDM, streams=["ethusdt@kline_1m"])
        eth = pipeline.hub.streams[StreamKey.parse("usdm:ETHUSDT:1m")]
        await wait_until(lambda: eth.status is StreamStatus.STALE, timeout=15, what="stale verdict")

        def methods() -> list[str]:
            connections = sim.stats[Market.USDM].connections
            return [m for c in connections for _, m, p in c.control if p == ["ethusdt@kline_1m"]]

        await wait_until(lambda: methods() == ["UNSUBSCRIBE", "SUBSCRIBE"], what="a resubscription")
        # the healthy streams were not disturbed
        assert sim.stats[Market.USDM].connections_opened == 1
        sim.faults.reset()
        sim.faults[Market.USDM].stream_stalls.clear()
        await wait_until(caught_up(pipeline, 2), timeout=30, what="recovery")
    finally:
        await pipeline.stop()
    assert pipeline.hub.stalls_detected == 1 and 5.0 <= pipeline.hub.stall_detect_s[0] < 8.0
    assert_exact_recording(read_dataset(tmp_path), [StreamKey.parse(s) for s in watch], min_rows=6)


async def test_silent_connection_is_replaced_make_before_break(sim, tmp_path):
    watch = ["usdm:BTCUSDT:1m", "usdm:ETHUSDT:1m"]
    pipeline = fast_pipeline(sim, tmp_path, watch)
    await pipeline.start()
    try:
        await wait_until(caught_up(pipeline, 1), what="first candles")
        sim.faults.stall(7, market=Market.USDM)  # the socket stays up, every stream goes quiet
        await wait_until(
            lambda: sim.stats[Market.USDM].connections_opened == 2, timeout=15, what="a replacement"
        )
        await wait_until(caught_up(pipeline, 2), timeout=30, what="recovery")
    finally:
        await pipeline.stop()
    assert_exact_recording(read_dataset(tmp_path), [StreamKey.parse(s) for s in watch], min_rows=6)


async def test_server_shutdown_and_age_rotation_hand_over_without_loss(sim, tmp_path):
    pipeline = fast_pipeline(sim, tmp_path, rotate_after_h=6.0 / 3600)
    await pipeline.start()
    try:
        await wait_until(caught_up(pipeline, 1), what="first candles")
        await sim.faults.server_shutdown(Market.SPOT)
        await wait_until(lambda: pipeline.hub.rotations >= 6, timeout=30, what="rotations")
        await wait_until(caught_up(pipeline, 2), timeout=30, what="candles after the rotations")
    finally:
        await pipeline.stop()
    for market in Market:
        conns = sorted(sim.stats[market].connections, key=lambda c: c.opened_at)
        assert len(conns) >= 2
        for old, new in itertools.pairwise(conns):
            # make before break: each successor was open before its predecessor closed
            assert old.closed_at is None or new.opened_at < old.closed_at
    assert_exact_recording(read_dataset(tmp_path), KEYS, min_rows=6)


async def test_rest_errors_delay_the_backfill_but_lose_nothing(sim, tmp_path):
    pipeline = fast_pipeline(sim, tmp_path, history=30)
    await pipeline.start()
    # The backfill of the history is the next REST traffic: make it fail every way Binance can.
    sim.faults.rest_fail(500, count=3, market=Market.SPOT)
    sim.faults.rest_fail(429, count=2, retry_after=1, market=Market.USDM)
    sim.faults.rest_fail(418, count=1, retry_after=2, market=Market.COINM)
    try:
        await wait_until(
            lambda: pipeline.rest.limiters[Market.COINM].banned,
            timeout=10,
            what="the 418 ban in force",
        )
        await wait_until(caught_up(pipeline, 2), timeout=40, what="the backfill done")
    finally:
        await pipeline.stop()
    assert sim.stats[Market.USDM].rest_429 >= 2 and sim.stats[Market.COINM].rest_418 >= 1
    assert pipeline.backfiller.backfilled >= 3 * 30
    assert_exact_recording(read_dataset(tmp_path), KEYS, min_rows=32)


async def test_a_pause_leaves_no_hole(sim, tmp_path):
    pipeline = fast_pipeline(sim, tmp_path)
    await pipeline.start()
    try:
        await wait_until(caught_up(pipeline, 2), what="first candles")
        pipeline.recording = False
        written = pipeline.sink.stats.rows_written + pipeline.sink.stats.rows_buffered
        await asyncio.sleep(4)  # four simulated minutes: live candles arrive, none is stored
        assert pipeline.sink.stats.rows_written + pipeline.sink.stats.rows_buffered == written
        assert all(pipeline.ledger.streams[k].missing_count() >= 3 for k in KEYS)
        pipeline.recording = True
        await wait_until(caught_up(pipeline, 1), timeout=30, what="the paused stretch fetched")
    finally:
        await pipeline.stop()
    assert_exact_recording(read_dataset(tmp_path), KEYS, min_rows=10)
