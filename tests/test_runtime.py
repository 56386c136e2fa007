"""The runtime's promises: supervised tasks, a stop that drains and flushes first, within its
deadline, whatever raised before it. Real sockets against the simulator throughout."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from kline_tui.binance.markets import Endpoints
from kline_tui.model import StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.pipeline import Pipeline
from kline_tui.recorder.supervisor import Supervisor

from .checks import assert_exact_recording
from .datasets import read_dataset
from .support import (
    KEYS,
    KLINE_TUI,
    cut_off,
    env_for,
    fast_pipeline,
    make_settings,
    run_for,
    run_to_end,
    start_record,
    wait_until,
    write_config,
)


def live_candles(pipeline: Pipeline, n: int = 2):
    """Each stream has received n more closed candles live than now."""
    ledgers = pipeline.ledger.streams
    target = {k: ledgers[k].accepted_ws + n for k in pipeline.hub.streams}
    return lambda: all(ledgers[k].accepted_ws >= target[k] for k in pipeline.hub.streams)


def nothing_missing(pipeline: Pipeline):
    return lambda: all(not st.missing for st in pipeline.ledger.streams.values())


# -- the drain ---------------------------------------------------------------------------------


async def test_stop_right_after_a_reconnect_fetches_the_lost_window(sim, tmp_path):
    """The candles lost while disconnected are known as soon as the first frame arrives on the new
    connection, but wait a grace period for a late close. A stop inside that window must fetch
    them before it ends, so the dataset is contiguous."""
    pipeline = fast_pipeline(sim, tmp_path)
    await pipeline.start()
    try:
        await wait_until(nothing_missing(pipeline), what="history fetched")
        await wait_until(live_candles(pipeline, 2), what="first live candles")
        await cut_off(sim, pipeline, 4.0)  # four simulated minutes with no socket
        # Back, and the hole is known: stop at once, well inside the grace period.
        await wait_until(
            lambda: all(pipeline.ledger.streams[k].missing for k in KEYS),
            timeout=30,
            what="holes known",
        )
    finally:
        report = await pipeline.stop()
    assert_exact_recording(read_dataset(tmp_path), KEYS, min_rows=8)
    assert not report.missing and report.drained >= 3 * 3
    assert report.unwritten == 0


async def test_stop_flushes_even_when_closing_the_connections_raises(sim, tmp_path, monkeypatch):
    pipeline = fast_pipeline(sim, tmp_path, flush_age_s=3600.0)  # nothing is flushed by age
    await pipeline.start()
    try:
        await wait_until(nothing_missing(pipeline), what="history fetched")
        await wait_until(live_candles(pipeline, 1), what="live candles")
        buffered = pipeline.sink.stats.rows_buffered
        assert buffered > 0

        async def broken_close(*args, **kwargs):
            raise RuntimeError("a bug in closing")

        monkeypatch.setattr(pipeline.hub, "close", broken_close)
    finally:
        await pipeline.stop()
    assert pipeline.sink.stats.rows_buffered == 0
    assert read_dataset(tmp_path).height >= buffered


# -- supervision -------------------------------------------------------------------------------


def _raise_once(target, name: str, exc: Exception):
    """Patch `target.name` so its next call raises `exc`, and every later call works."""
    original = getattr(target, name)
    state = {"raised": 0}

    def once(*args, **kwargs):
        if not state["raised"]:
            state["raised"] += 1
            raise exc
        return original(*args, **kwargs)

    async def once_async(*args, **kwargs):
        if not state["raised"]:
            state["raised"] += 1
            raise exc
        return await original(*args, **kwargs)

    setattr(target, name, once_async if asyncio.iscoroutinefunction(original) else once)
    return state


@pytest.mark.parametrize(
    "task", ["connection", "backfill loop", "backfill fetch", "sink", "compaction"]
)
async def test_a_task_that_raises_is_restarted_and_nothing_is_lost(sim, tmp_path, task):
    """Each supervised task in turn raises something unexpected once: it is reported once,
    restarted, recording goes on, and the dataset is exact and contiguous at the end."""
    pipeline = fast_pipeline(sim, tmp_path, pipeline={"compact_every_s": 0.5})
    pipeline.supervisor.backoff_base_s = 0.05
    await pipeline.start()
    try:
        await wait_until(nothing_missing(pipeline), what="history fetched")
        await wait_until(live_candles(pipeline, 1), what="live candles")
        bug = ValueError(f"injected into {task}")
        if task == "connection":
            state = _raise_once(pipeline.hub, "on_kline", bug)
        elif task == "backfill loop":
            state = _raise_once(pipeline.backfiller, "_due", bug)
        elif task == "backfill fetch":
            state = _raise_once(pipeline.ledger, "fill", bug)
            sim.faults.refuse_connections(3.0)  # a real hole, for the backfill to fetch
            await sim.faults.drop()
        elif task == "sink":
            state = _raise_once(pipeline.sink, "flush", bug)
        else:
            state = _raise_once(pipeline.compactor, "run_once", bug)
        await wait_until(lambda: state["raised"] == 1, timeout=20, what=f"the {task} bug to fire")
        await wait_until(lambda: pipeline.supervisor.crashes >= 1, what="the crash reported")
        await wait_until(live_candles(pipeline, 3), timeout=30, what="recording going on")
        await wait_until(nothing_missing(pipeline), timeout=30, what="holes filled")
        assert pipeline.supervisor.fatal is None
    finally:
        report = await pipeline.stop()
    assert pipeline.supervisor.crashes == 1
    assert any(f"injected into {task}" in e.message for e in pipeline.events.recent)
    assert report.unwritten == 0
    assert_exact_recording(read_dataset(tmp_path), KEYS, min_rows=8)


async def test_a_task_that_keeps_failing_stops_the_process_cleanly():
    events = EventLog()
    stopped: list[str] = []
    supervisor = Supervisor(events, backoff_base_s=0.01, max_crashes=2, on_fatal=stopped.append)
    calls = 0

    async def always_broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("a bug")

    task = supervisor.spawn("sink", always_broken)
    await asyncio.wait_for(task, 5)
    assert calls == 3  # the first run and two restarts
    assert stopped and "sink keeps failing" in stopped[0] and supervisor.fatal == stopped[0]
    assert supervisor.crashes == 3


async def test_a_traceback_is_logged_once_per_kind_of_failure(caplog):
    supervisor = Supervisor(EventLog(), backoff_base_s=0.001, max_crashes=10)
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise ValueError("same bug")

    with caplog.at_level(logging.ERROR, logger="kline_tui"):
        await asyncio.wait_for(supervisor.spawn("usdm connection 7", flaky), 5)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and supervisor.crashes == 4


# -- the command line --------------------------------------------------------------------------


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        code = None
    return code, time.monotonic() - started


async def test_ctrl_c_while_the_exchange_does_not_answer_stops_within_two_seconds(tmp_path):
    """REST that accepts connections and never answers: start-up is stuck checking symbols, and
    an interrupt must still end the process promptly."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    port = silent.getsockname()[1]
    try:
        endpoints = {"usdm": Endpoints(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}")}
        config = write_config(
            tmp_path / "c.toml",
            endpoints,
            data_dir=tmp_path / "D",
            watch=["usdm:BTCUSDT:1m"],
            recorder={"flush_age_s": 1},
        )
        proc = await start_record(config, env=env_for(tmp_path))
        await asyncio.sleep(2.5)  # well into the symbol check
        assert proc.returncode is None
        proc.send_signal(signal.SIGINT)
        code, took = await _wait_exit(proc, 10)
    finally:
        silent.close()
    assert code is not None and took < 2.0, f"took {took:.1f} s"
    assert not (tmp_path / "D").exists() or not list((tmp_path / "D").rglob("*.parquet"))


async def test_a_second_interrupt_ends_the_process_at_once(tmp_path):
    """The first interrupt asks for a graceful stop; a second one is the user insisting."""
    script = (
        "import asyncio, os, signal, sys\n"
        "from kline_tui.config import Settings\n"
        "from kline_tui.runtime import Runtime\n"
        "async def main():\n"
        "    rt = Runtime(Settings(config_path='x', config_exists=False))\n"
        "    rt.handle_signals(lambda: print('first', flush=True))\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(30)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert (await proc.stdout.readline()).strip() == b"ready"
    proc.send_signal(signal.SIGINT)
    assert (await proc.stdout.readline()).strip() == b"first"
    proc.send_signal(signal.SIGINT)
    code, took = await _wait_exit(proc, 5)
    assert code == 130 and took < 1.0
    assert b"stopped at once" in await proc.stderr.read()


async def test_a_huge_history_of_a_monthly_stream_records_instead_of_crashing(sim, tmp_path):
    """`history = 30000` months reaches before year 1: once a ValueError in the ledger that killed
    the connection, lost the buffer and exited 1. History now starts no earlier than Binance."""
    watch = ["usdm:BTCUSDT:1M", "usdm:ETHUSDT:1m"]
    config = write_config(
        tmp_path / "c.toml",
        sim.endpoints,
        data_dir=tmp_path / "D",
        watch=watch,
        recorder={"flush_age_s": 1, "history": 30000},
    )
    proc = await start_record(config, env=env_for(tmp_path))
    await asyncio.sleep(8)
    proc.send_signal(signal.SIGTERM)
    code, _ = await _wait_exit(proc, 30)
    err = (await proc.stderr.read()).decode()
    assert code == 0, err
    df = read_dataset(tmp_path / "D")
    keys = [StreamKey.parse(s) for s in watch]
    assert_exact_recording(df, keys, min_rows=5)
    monthly = df.filter(pl.col("interval") == "1mo")["open_time"].dt.epoch("ms")
    assert monthly.min() >= 1_483_228_800_000  # 2017-01-01: nothing is asked before Binance


# -- the demo ----------------------------------------------------------------------------------


def _demo(tmp_path: Path, data: Path, seconds: float) -> tuple[int, str]:
    demo = [KLINE_TUI, "record", "--demo", "--demo-speed", "60", "usdm:BTCUSDT:1m"]
    return run_for([*demo, "--data-dir", str(data)], seconds, env_for(tmp_path))


def test_demo_rows_say_sim_and_a_second_fast_run_records(tmp_path):
    data = tmp_path / "demo"
    code, err = _demo(tmp_path, data, 5)
    assert code == 0, err
    first = read_dataset(data)
    assert first.height > 0 and set(first["source"].unique()) == {"sim"}
    # Longer: a loaded machine spends seconds starting before the first candle closes.
    code, err = _demo(tmp_path, data, 8)
    assert code == 0, err
    second = read_dataset(data)
    newest = first["open_time"].max()
    assert second.filter(pl.col("open_time") > newest).height >= 3, (
        "the second run recorded nothing new"
    )
    opens = second.sort("open_time")["open_time"].dt.epoch("ms").to_list()
    assert len(opens) == len(set(opens)) and all(
        b - a == 60_000 for a, b in itertools.pairwise(opens)
    )


def test_demo_with_a_real_config_never_writes_into_its_data_dir(tmp_path):
    real = tmp_path / "real-data"
    config = write_config(
        tmp_path / "real.toml",
        {},
        data_dir=real,
        watch=["usdm:BTCUSDT:1m"],
        recorder={"flush_age_s": 1},
    )
    demo = [KLINE_TUI, "record", "--demo", "--demo-speed", "60", "--config", str(config)]
    code, err = run_for(demo, 5, env_for(tmp_path))
    assert code == 0, err
    assert not list(real.rglob("*.parquet")), "simulated candles went into the real data folder"
    demo = tmp_path / "xdg-data" / "kline-tui" / "demo-data"
    assert set(read_dataset(demo)["source"].unique()) == {"sim"}


@pytest.mark.parametrize(
    "bad",
    [
        ["--demo-speed", "nan"],
        ["--demo-speed", "inf"],
        ["--demo-speed", "1e308"],
        ["--data-dir", ""],
    ],
)
def test_bad_numbers_and_paths_on_the_command_line_are_one_line_and_exit_2(tmp_path, bad):
    proc = run_to_end([KLINE_TUI, "record", "--demo", "usdm:BTCUSDT:1m", *bad], env_for(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.parquet"))


# -- the runtime alone, as every face drives it -------------------------------------------------


async def test_the_runtime_alone_starts_adds_removes_pauses_flushes_and_stops(sim, tmp_path):
    """No Textual: the life cycle every face shares, driven through its own methods."""
    from kline_tui.runtime import Runtime

    btc, eth = StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("usdm:ETHUSDT:1m")
    settings = make_settings(sim, tmp_path, [str(btc)], history=3, flush_age_s=3600.0)
    runtime = Runtime(settings, keep_closed=0)
    try:
        assert await runtime.start() == [btc]
        pipeline = runtime.pipeline
        ledgers = pipeline.ledger.streams
        await wait_until(
            lambda: ledgers[btc].accepted_ws >= 2 and not ledgers[btc].missing, what="btc live"
        )
        assert await runtime.add([eth, btc]) == [eth]
        # Its history too: a backfill landing just after the flush would be left buffered.
        await wait_until(
            lambda: eth in ledgers and ledgers[eth].accepted_ws >= 2 and not ledgers[eth].missing,
            what="eth live, its history fetched",
        )
        assert await runtime.flush() > 0 and pipeline.sink.stats.rows_buffered == 0
        runtime.pause()
        assert not runtime.recording
        paused_at = ledgers[eth].accepted_ws
        await wait_until(lambda: ledgers[eth].missing, what="a candle held back while paused")
        assert pipeline.sink.stats.rows_buffered == 0  # nothing stored while paused
        runtime.resume()
        await wait_until(
            lambda: ledgers[eth].accepted_ws > paused_at + 1 and not ledgers[eth].missing,
            timeout=30,
            what="the paused candles fetched",
        )
        assert runtime.remove([btc]) == [btc] and btc not in pipeline.hub.streams
    finally:
        report = await runtime.stop()
    assert runtime.exit_code == 0 and report.unwritten == 0 and not report.missing
    assert_exact_recording(read_dataset(tmp_path), [btc, eth], min_rows=4)


def test_the_runtime_never_imports_textual():
    code = (
        "import sys, kline_tui.runtime;"
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
