"""`kline-tui record` against a hostile server: it lies, it floods, and it will not let go.

The recorder runs as a subprocess (as in the chaos suite) against the in-process simulator with
the hostile switches on (`kline_tui.sim.faults`): impossible kline events of every shape on one
stream of two markets, beside the real ones; pings and stray replies flooding every connection,
which also leaves the recorder's close frames unanswered; impossible rows in REST answers.

Whatever the server does, nothing it sends is stored unless it is the exchange's candle, every
stream keeps recording, poisoned frames cost no REST calls, and SIGTERM ends the process with
exit 0 within `stop_timeout_s`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import polars as pl

from kline_tui.model import Market, StreamKey

from .checks import assert_exact_recording
from .datasets import read_dataset, stream_rows
from .support import start_record, write_config

STOP_TIMEOUT_S = 8
EXIT_SLACK_S = 2.0  # interpreter teardown after the deadline's last write
WATCH = [
    "spot:BTCUSDT:1m",
    "spot:ETHUSDT:1m",
    "usdm:BTCUSDT:1m",
    "usdm:ETHUSDT:1m",
    "coinm:BTCUSD_PERP:1m",
    "coinm:ETHUSD_PERP:1m",
]
POISONED_MARKETS = (Market.SPOT, Market.USDM)
POISONED_STREAM = "btcusdt@kline_1m"  # its wrong_symbol frames claim ETHUSDT, recorded too
POISONED_SYMBOL, CLEAN_SYMBOL = "BTCUSDT", "ETHUSDT"  # the baseline: a clean stream beside it


async def _record(
    sim, tmp_path: Path, seconds: float, history: int = 20, before_stop=None
) -> tuple[int, float, int, str]:
    """Run the recorder for `seconds` (then `await before_stop()` if given), then SIGTERM it:
    (exit code, seconds the stop took, exchange time of the stop, log)."""
    recorder = {
        "flush_age_s": 1,
        "history": history,
        "reconnect_max_s": 4,
        "stop_timeout_s": STOP_TIMEOUT_S,
    }
    config = write_config(
        tmp_path / "hostile.toml",
        sim.endpoints,
        data_dir=tmp_path / "data",
        watch=WATCH,
        recorder=recorder,
    )
    log = tmp_path / "recorder.log"
    proc = await start_record(config, "--status-every", "2", log=log)
    try:
        code = await asyncio.wait_for(proc.wait(), seconds)
        return code, 0.0, sim.clock.now_ms(), "exited before the stop:\n" + log.read_text()
    except TimeoutError:
        pass
    if before_stop is not None:
        await before_stop()
        if proc.returncode is not None:
            return (
                proc.returncode,
                0.0,
                sim.clock.now_ms(),
                "exited before the stop:\n" + log.read_text(),
            )
    stop_ms = sim.clock.now_ms()
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S + 20)
    except TimeoutError:
        proc.kill()
        code = await proc.wait()
    took = time.monotonic() - sent
    return code, took, stop_ms, log.read_text()


def _assert_recorded_to_the_stop(df: pl.DataFrame, keys: list[StreamKey], stop_ms: int) -> None:
    """Every stream recorded up to the stop, and nothing after it."""
    for key in keys:
        opens = stream_rows(df, key)["open_time"].dt.epoch("ms")
        assert opens.max() >= key.interval.open_time_at(stop_ms) - 4 * key.interval.ms, (
            f"{key} stopped recording"
        )
        assert opens.max() < stop_ms, f"{key}: a row from the future"


def _assert_only_watched(df: pl.DataFrame, keys: list[StreamKey]) -> None:
    stored = set(df.select("market", "symbol", "interval").unique().iter_rows())
    assert stored <= {(k.market.value, k.symbol, k.interval.path_label) for k in keys}, stored


async def test_poison_and_floods_cost_no_candle_no_rest_call_and_no_stop_time(tmp_path):
    from kline_tui.sim import Simulator

    keys = [StreamKey.parse(w) for w in WATCH]
    async with Simulator(speed=60, offset_ms=3_600_000, seed=9) as sim:
        for market in POISONED_MARKETS:
            sim.faults.poison(rate=3, market=market, streams=[POISONED_STREAM])
        # Paced, not full speed: any steady flood keeps aiohttp's close handshake reading, and
        # this one leaves CPU for the recorder on a small machine.
        sim.faults.set(ping_flood_per_s=300, stray_replies_per_s=300)
        code, took, stop_ms, log = await _record(sim, tmp_path, seconds=15)
        stats = sim.stats
    assert code == 0 and took <= STOP_TIMEOUT_S + EXIT_SLACK_S, (code, took, log[-3000:])
    assert "Traceback" not in log, log[-3000:]

    for market in POISONED_MARKETS:
        assert stats[market].poison_frames_sent >= 30, market  # the server did lie, a lot
        # Poison sets off no backfill: the poisoned symbol costs no more klines calls than its
        # clean neighbour on the same market (same push rate, same history, same stop).
        calls = stats[market].kline_calls_by_symbol
        poisoned, clean = calls[POISONED_SYMBOL], calls[CLEAN_SYMBOL]
        assert 1 <= poisoned <= clean, (market, dict(calls))
    assert all(
        stats[m].flood_pings_sent >= 1000 and stats[m].stray_replies_sent >= 1000 for m in Market
    )

    df = read_dataset(tmp_path / "data")
    _assert_only_watched(df, keys)
    assert_exact_recording(df, keys, min_rows=10)  # every row is the exchange's candle, no gap
    _assert_recorded_to_the_stop(df, keys, stop_ms)


async def test_poisoned_rest_rows_are_never_stored(tmp_path):
    from kline_tui.sim import Simulator

    keys = [StreamKey.parse(w) for w in WATCH]
    async with Simulator(speed=60, offset_ms=-3_600_000, seed=10) as sim:
        sim.faults.poison_rest(rate=0.5)  # one impossible row for every two real ones
        code, took, stop_ms, log = await _record(sim, tmp_path, seconds=8, history=200)
        poisoned_rows = sum(s.poison_rows_sent for s in sim.stats.values())
    assert code == 0 and took <= STOP_TIMEOUT_S + EXIT_SLACK_S, (code, took, log[-3000:])
    assert poisoned_rows >= 300
    df = read_dataset(tmp_path / "data")
    _assert_only_watched(df, keys)
    assert_exact_recording(df, keys, min_rows=150)  # the history came, and only real candles
    _assert_recorded_to_the_stop(df, keys, stop_ms)


async def test_sigterm_one_second_after_every_connection_came_back_under_a_ping_flood(tmp_path):
    """The window lost while every connection was down is known from the first frame after the
    reconnect but waits a grace period for late closes; a SIGTERM inside it, with the server
    flooding pings and not answering the close, must still end with exit 0 within 20 s and a
    dataset contiguous from the first candle to the last one sent."""
    from kline_tui.sim import Simulator

    keys = [StreamKey.parse(w) for w in WATCH]
    async with Simulator(speed=60, offset_ms=3_600_000, seed=11) as sim:

        async def drop_and_come_back() -> None:
            opened = {m: sim.stats[m].connections_opened for m in Market}
            sim.faults.refuse_connections(4.0)  # four simulated minutes with no socket
            await sim.faults.drop()
            deadline = time.monotonic() + 30
            while any(sim.stats[m].connections_opened <= opened[m] for m in Market):
                assert time.monotonic() < deadline, "no reconnect"
                await asyncio.sleep(0.05)
            sim.faults.set(ping_flood_per_s=300)
            await asyncio.sleep(1.0)

        code, took, stop_ms, log = await _record(
            sim, tmp_path, seconds=8, before_stop=drop_and_come_back
        )
    assert code == 0 and took <= 20, (code, took, log[-3000:])
    assert "still missing" not in log, log[-2000:]
    df = read_dataset(tmp_path / "data")
    _assert_only_watched(df, keys)
    assert_exact_recording(df, keys, min_rows=20)  # contiguous, exact: the lost window was drained
    _assert_recorded_to_the_stop(df, keys, stop_ms)
