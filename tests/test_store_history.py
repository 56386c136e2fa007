"""`kline-tui backfill`: history from the simulator's REST, resumable, within the weight budget."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import polars as pl
import pytest

from kline_tui.binance.markets import MARKETS
from kline_tui.binance.rest import RestClient
from kline_tui.cli.backfill import main as backfill_main
from kline_tui.model import Interval, Market, StreamKey
from kline_tui.store.history import backfill
from kline_tui.store.verify import format_time

from .checks import assert_matches_simulator, contiguous
from .datasets import DAY, expected_frame, read_dataset, write_raw_part
from .support import write_config


async def test_backfill_resumes_after_an_interruption(sim, tmp_path):
    key = StreamKey.parse("usdm:BTCUSDT:1m")
    data = tmp_path / "data"
    first = Interval.D1.open_time_at(sim.clock.now_ms()) - 5 * DAY
    last = first + 4 * DAY - 60_000  # four whole days: 5,760 candles
    held = [first + i * 60_000 for i in range(2000, 2300)]  # recorded live already
    write_raw_part(data, key.market, key.interval, expected_frame(key, held, "ws"))
    rest = RestClient(sim.endpoints)
    try:
        chunks = []

        def interrupt_after_two(n):
            chunks.append(n)
            if len(chunks) == 2:
                asyncio.current_task().cancel()  # as Ctrl-C or a kill would, mid-way

        task = asyncio.create_task(
            backfill(
                data, key, rest, first, last, on_progress=interrupt_after_two, chunk_candles=1500
            )
        )
        with pytest.raises(asyncio.CancelledError):
            await task
        partial = read_dataset(data)
        got = assert_matches_simulator(partial, key)  # what was written is right, and once
        assert len(got) == 300 + 2000  # the held rows and the run before them (1,500 + 500)

        await asyncio.sleep(0.2)  # a request the cancelled run had sent reaches the simulator
        calls_before = sim.stats[Market.USDM].rest_calls
        result = await backfill(data, key, rest, first, last, chunk_candles=1500)
        assert (result.held_before, result.missing, result.written) == (2300, 3460, 3460)
        # Only the missing candles were asked for: 3,460 in pages of 1,500, and a time call each.
        assert sim.stats[Market.USDM].rest_calls - calls_before == 1 + 3 * 2

        again = await backfill(data, key, rest, first, last)
        assert (again.held_before, again.missing, again.written) == (5760, 0, 0)
    finally:
        await rest.close()
    df = read_dataset(data)
    opens = assert_matches_simulator(df, key)
    assert (
        len(opens) == 5760
        and opens[0] == first
        and opens[-1] == last
        and contiguous(key.interval, opens)
    )
    sources = df.filter(pl.col("open_time").dt.epoch("ms").is_in(held))["source"]
    assert set(sources) == {"ws"}
    stats = sim.stats[Market.USDM]
    assert stats.rest_429 == 0 and stats.max_used_weight <= MARKETS[Market.USDM].weight_budget


async def test_backfill_cli_killed_then_run_again(sim, tmp_path):
    key = StreamKey.parse("spot:ETHUSDT:1m")
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "config.toml", sim.endpoints)
    end = Interval.D1.open_time_at(sim.clock.now_ms()) - DAY
    start = end - 28 * DAY  # 40,320 candles: five chunks of ten spot pages
    args = [
        key.__str__(),
        "--from",
        format_time(start).replace(" ", "T"),
        "--to",
        format_time(end - 60_000).replace(" ", "T"),
        "--data-dir",
        str(data),
        "--config",
        str(cfg),
    ]
    script = "import sys\nfrom kline_tui.cli.backfill import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    for _ in range(400):  # kill -9 once the first chunk is on disk
        if list(data.rglob("*.parquet")):
            break
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    written = read_dataset(data).height
    assert 0 < written < 40_320

    code = await asyncio.to_thread(backfill_main, args)
    assert code == 0
    df = read_dataset(data)
    opens = assert_matches_simulator(df, key)
    assert len(opens) == 40_320 and opens[0] == start and contiguous(key.interval, opens)


async def test_backfill_cli_output_and_mistakes(sim, tmp_path, capsys):
    cfg = str(write_config(tmp_path / "config.toml", sim.endpoints))
    data = str(tmp_path / "data")
    # Before the listing (USD-M majors list on 2019-09-08 in the simulator): skipped in a few calls.
    calls = sim.stats[Market.USDM].rest_calls
    args = [
        "usdm:BTCUSDT:1d",
        "--from",
        "2017-01-01",
        "--to",
        "2019-12-31",
        "--data-dir",
        data,
        "--config",
        cfg,
    ]
    assert await asyncio.to_thread(backfill_main, args) == 0
    out = capsys.readouterr().out
    assert (
        "usdm:BTCUSDT:1d: 1095 candles 2017-01-01 00:00 to 2019-12-31 00:00: 0 held, 115 fetched, "
        "980 not available from the exchange" in out
    )
    assert sim.stats[Market.USDM].rest_calls - calls <= 4
    assert await asyncio.to_thread(backfill_main, args) == 0
    assert "115 held, 0 fetched" in capsys.readouterr().out

    cases = [
        (["usdm:BTCUSDT", "--from", "2025-01-01"], "invalid stream"),
        (["usdm:BTCUSDT:1m", "--from", "2025-13-01"], "--from: not a date or time"),
        (["usdm:BTCUSDT:1m", "--from", "2025-02-01", "--to", "2025-01-01"], "is after --to"),
        (["usdm:NOPEUSDT:1m", "--from", "2025-01-01"], "usdm has no symbol NOPEUSDT"),
        (
            ["usdm:BTCUSDT:1m", "--from", "2025-01-01", "--config", str(Path(data) / "no.toml")],
            "no such file",
        ),
    ]
    for argv, words in cases:
        code = await asyncio.to_thread(
            backfill_main,
            [*argv, "--data-dir", data, "--config", cfg]
            if "--config" not in argv
            else [*argv, "--data-dir", data],
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, argv
        assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], (argv, err)
    assert os.path.isdir(data)
