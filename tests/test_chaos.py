"""The chaos suite: `kline-tui record` in a subprocess against the simulator, faults mixed at
random.

Faults: abrupt and clean drops, stalls of everything and of one stream, malformed frames,
duplicated, late and lost closes, serverShutdown, connection lifetimes of seconds, refused
connections, REST 429/418/500 and slow answers, and `kill -9` of the recorder (during flushes
too, which run every second here) followed by a restart. The simulator's clock runs fast and an
hour off the local clock. Afterwards: every candle from the first recorded to the last closed
before the stop is there exactly once with the simulator's values, every file opens, no rate limit
was exceeded, and reconnects stayed within Binance's connection budget.

The short form runs in CI with two fixed seeds; `pytest -m slow -k chaos_long -s` runs the long one
and prints a report. Every run prints its seed. The environment picks others:

- `KLINE_TUI_CHAOS_SEED=5,8,13`: the seeds to run (each a separate test), short and long forms
  alike;
- `KLINE_TUI_CHAOS_SECONDS=60`: how long faults are injected in the long form (default 190).

`KLINE_TUI_CHAOS_SEED=3,4,5 KLINE_TUI_CHAOS_SECONDS=60 pytest -m slow -k chaos_long -s` runs three
seeds at 60 s each. Whatever the seeds, every run kills the recorder with SIGKILL at least once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from kline_tui.binance.markets import MARKETS
from kline_tui.model import Interval, Market, StreamKey

from .checks import assert_exact_recording
from .datasets import read_dataset, stream_rows
from .support import start_record, write_config

CI_SEEDS = (20261201, 7)
LONG_SEEDS = (11,)
FAULT_KINDS = (
    "drop",
    "drop_clean",
    "stall_all",
    "stall_one",
    "malformed",
    "closes",
    "shutdown",
    "lifetime",
    "refuse",
    "rest_429",
    "rest_418",
    "rest_500",
    "rest_slow",
    "kill9",
)


def chaos_seeds(default: tuple[int, ...]) -> list[int]:
    """The seeds to run: `KLINE_TUI_CHAOS_SEED` (comma-separated) if set, else `default`."""
    text = os.environ.get("KLINE_TUI_CHAOS_SEED", "").strip()
    if not text:
        return list(default)
    return [int(part) for part in text.split(",") if part.strip()]


@dataclass
class ChaosReport:
    faults: collections.Counter = field(default_factory=collections.Counter)
    kills: int = 0
    restarts: int = 0
    sim_hours: float = 0.0
    rows: int = 0
    rest_rows: int = 0
    files: int = 0
    stats: dict = field(default_factory=dict)


class Recorder:
    """`kline-tui record` as a child process, killed and restarted at will."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await start_record(self.config, "--status-every", "2", log=self.log)

    async def kill9(self) -> bool:
        """SIGKILL the recorder; True if it was running and that signal is what ended it.

        False means it had already exited on its own (a crash the log should explain)."""
        if self.proc.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        return await self.proc.wait() == -signal.SIGKILL

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 60)


async def _inject_one(
    sim,
    rng: random.Random,
    report: ChaosReport,
    names: list[str],
    rec: Recorder,
    kind: str | None = None,
) -> None:
    """One fault, `kind` or chosen at random; some switch themselves off after a while."""
    market = rng.choice(list(Market))
    kind = kind or rng.choice(FAULT_KINDS)
    report.faults[kind] += 1
    if kind == "drop":
        await sim.faults.drop(market)
    elif kind == "drop_clean":
        await sim.faults.drop(market, clean=True)
    elif kind == "stall_all":
        sim.faults.stall(rng.uniform(3, 12), market=market)
    elif kind == "stall_one":
        sim.faults.stall(rng.uniform(3, 12), market=market, streams=[rng.choice(names)])
    elif kind == "malformed":
        sim.faults.set(market, malformed_rate=0.01 * rng.choice([1, 5]))
    elif kind == "closes":
        sim.faults.set(market, duplicate_close_rate=0.1, late_close_rate=0.1, drop_close_rate=0.05)
    elif kind == "shutdown":
        await sim.faults.server_shutdown(market)
    elif kind == "lifetime":
        sim.faults.set(market, lifetime_s=rng.uniform(3, 8))
    elif kind == "refuse":
        sim.faults.refuse_connections(rng.uniform(1, 5), market=market)
    elif kind == "rest_429":
        sim.faults.rest_fail(429, count=2, retry_after=1, market=market)
    elif kind == "rest_418":
        sim.faults.rest_fail(418, count=1, retry_after=2, market=market)
    elif kind == "rest_500":
        sim.faults.rest_fail(500, count=3, market=market)
    elif kind == "rest_slow":
        sim.faults.set(market, rest_delay_s=rng.uniform(0.5, 2))
    elif kind == "kill9":
        # Flushes run every second: a kill lands during one now and then.
        await asyncio.sleep(rng.uniform(0, 1))
        # Counted only when the signal is what ended a running recorder, so that a recorder
        # which had already died, or one that survived, shows as kills != faults["kill9"].
        if await rec.kill9():
            report.kills += 1
        await asyncio.sleep(rng.uniform(0.2, 2))
        await rec.start()
        report.restarts += 1


def _calm(sim) -> None:
    sim.faults.reset()


async def run_chaos(
    tmp_path: Path,
    *,
    speed: float,
    offset_h: int,
    watch: list[str],
    seconds: float,
    fault_every_s: float,
    seed: int,
    storage: str = "parquet",
) -> tuple[ChaosReport, Path, object]:
    from kline_tui.sim import Simulator

    rng = random.Random(seed)
    report = ChaosReport()
    data = tmp_path / "data"
    config = tmp_path / "chaos.toml"
    log = tmp_path / "recorder.log"
    keys = [StreamKey.parse(w) for w in watch]
    names = [k.stream_name for k in keys]
    async with Simulator(speed=speed, offset_ms=offset_h * 3_600_000) as sim:
        recorder = {"flush_age_s": 1, "history": 20, "reconnect_max_s": 4}
        write_config(config, sim.endpoints, data_dir=data, watch=watch, recorder=recorder)
        if storage != "parquet":
            config.write_text(config.read_text() + f'[storage]\nformat = "{storage}"\n')
        rec = Recorder(config, log)
        await rec.start()
        started_sim = sim.clock.now_ms()
        await asyncio.sleep(3)
        deadline = time.monotonic() + seconds
        halfway = time.monotonic() + seconds / 2
        next_calm = time.monotonic() + 6
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.expovariate(1 / fault_every_s))
            # Every run kills the recorder at least once, whatever the draw.
            forced = "kill9" if time.monotonic() > halfway and not report.faults["kill9"] else None
            await _inject_one(sim, rng, report, names, rec, forced)
            if time.monotonic() > next_calm:  # faults that linger are switched off now and then
                _calm(sim)
                next_calm = time.monotonic() + rng.uniform(4, 10)
        _calm(sim)
        # Let the recorder reconnect and backfill, then stop it the polite way.
        await asyncio.sleep(12)
        stop_sim = sim.clock.now_ms()
        code = await rec.stop()
        report.sim_hours = (stop_sim - started_sim) / 3_600_000
        assert code == 0, log.read_text()[-3000:]
        stats = sim.stats
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]

    # Every file opens; the dataset is exact, contiguous and without duplicates.
    files = sorted(data.rglob("*.parquet"))
    for path in files:
        pl.read_parquet(path)
    df = read_dataset(data) if storage == "parquet" else read_delta_table(data)
    assert_exact_recording(df, keys, min_rows=5)
    for key in keys:
        opens = stream_rows(df, key)["open_time"].dt.epoch("ms")
        # The head is near the start: what the first process recorded before its kill is kept.
        # (Not before it: a process killed before its `history` fetch reached the disk leaves a
        # dataset whose first row is a live one, and a restart does not fetch history again.)
        assert opens.min() <= key.interval.open_time_at(started_sim) + 10 * (
            key.interval.ms or 0
        ), key
        # The tail reaches the stop: at most a few candles (the forming one, a flush) short.
        assert opens.max() >= key.interval.open_time_at(stop_sim) - 4 * (key.interval.ms or 0), key

    for market in Market:
        st = stats[market]
        assert st.rate_violations == 0, f"{market}: control-message rate exceeded"
        # Connection budget: no 5-minute window held more than Binance's 300 new connections.
        opened = sorted(c.opened_at for c in st.connections)
        window = collections.deque()
        for t in opened:
            window.append(t)
            while window[0] < t - 300:
                window.popleft()
            assert len(window) <= 300
        assert MARKETS[market].control_rate >= max(
            (c.max_incoming_per_s for c in st.connections), default=0
        )
    report.rows = df.height
    report.rest_rows = df.filter(pl.col("source") == "rest").height
    report.files = len(files)
    report.stats = stats
    return report, log, df


def read_delta_table(location: Path) -> pl.DataFrame:
    """A Delta table as the folder reads: the same columns, times in ms."""
    df = pl.read_delta(str(location))
    return df.with_columns(pl.col("open_time", "close_time").cast(pl.Datetime("ms", "UTC")))


def _summary(report: ChaosReport, log: Path) -> str:
    text = log.read_text()
    stalls = text.count(", stale")
    detect = [float(x) for x in re.findall(r"silent for (\d+) s, stale", text)]
    # Each process logs cumulative counters every 2 s: add up the last line of each process.
    dups = backfilled = 0
    for run in text.split("watching ")[1:]:
        # The status line's counters (see cli._status_line).
        found = re.findall(r"(\d+) backfilled, (\d+) duplicates dropped", run)
        if found:
            backfilled += int(found[-1][0])
            dups += int(found[-1][1])
    mean_detect = sum(detect) / max(len(detect), 1)
    return (
        f"stall detection: mean {mean_detect:.1f} s, max {max(detect, default=0):.0f} s; "
        f"candles backfilled: {backfilled}; duplicates dropped: {dups}; "
        f"simulated hours: {report.sim_hours:.1f}; faults: {dict(report.faults)}; "
        f"kill -9: {report.kills}; "
        f"rows: {report.rows} ({report.rest_rows} from REST); files: {report.files}; "
        f"stale verdicts: {stalls}; "
        f"connections opened: {sum(s.connections_opened for s in report.stats.values())}; "
        f"handshakes refused: {sum(s.handshakes_refused for s in report.stats.values())}"
    )


def _assert_every_kill_landed(report: ChaosReport, log: Path) -> None:
    assert report.faults["kill9"] >= 1, "the run never killed the recorder"
    assert report.kills == report.faults["kill9"], (
        f"{report.faults['kill9'] - report.kills} of {report.faults['kill9']} kills found the "
        f"recorder already dead or left it alive:\n{log.read_text()[-3000:]}"
    )


@pytest.mark.parametrize("seed", chaos_seeds(CI_SEEDS))
async def test_chaos_short(tmp_path, seed):
    watch = [
        "spot:BTCUSDT:1m",
        "spot:ETHUSDT:1m",
        "usdm:BTCUSDT:1m",
        "usdm:SOLUSDT:1m",
        "coinm:BTCUSD_PERP:1m",
        "coinm:ETHUSD_PERP:1m",
    ]
    print(f"chaos seed {seed} (KLINE_TUI_CHAOS_SEED={seed} replays it)")
    report, log, _ = await run_chaos(
        tmp_path, speed=60, offset_h=1, watch=watch, seconds=25, fault_every_s=1.5, seed=seed
    )
    print(_summary(report, log))
    _assert_every_kill_landed(report, log)


async def test_chaos_short_on_a_delta_table(tmp_path):
    """The same faults, kill -9 included, with the recorder writing a local Delta table."""
    watch = ["spot:BTCUSDT:1m", "usdm:BTCUSDT:1m", "usdm:SOLUSDT:1m", "coinm:BTCUSD_PERP:1m"]
    seed = chaos_seeds(CI_SEEDS)[0]
    print(f"chaos seed {seed} on Delta (KLINE_TUI_CHAOS_SEED={seed} replays it)")
    report, log, df = await run_chaos(
        tmp_path,
        speed=60,
        offset_h=1,
        watch=watch,
        seconds=25,
        fault_every_s=1.5,
        seed=seed,
        storage="delta",
    )
    print(_summary(report, log))
    _assert_every_kill_landed(report, log)
    assert (tmp_path / "data" / "_delta_log").is_dir()
    assert df.select("market", "interval", "symbol", "open_time").is_duplicated().sum() == 0


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", chaos_seeds(LONG_SEEDS))
async def test_chaos_long(tmp_path, seed):
    from kline_tui.sim import universe

    watch = []
    for market, n in ((Market.SPOT, 20), (Market.USDM, 20), (Market.COINM, 10)):
        symbols = sorted(s for s, i in universe(market).items() if i.status == "TRADING")[:n]
        ivs = [Interval.M1, Interval.M1, Interval.M5, Interval.M15]
        watch += [f"{market.value}:{s}:{ivs[i % len(ivs)].value}" for i, s in enumerate(symbols)]
    seconds = float(os.environ.get("KLINE_TUI_CHAOS_SECONDS", 190))
    print(f"\nchaos seed {seed}, {seconds:.0f} s (KLINE_TUI_CHAOS_SEED={seed} replays it)")
    report, log, _ = await run_chaos(
        tmp_path, speed=600, offset_h=-1, watch=watch, seconds=seconds, fault_every_s=2.0, seed=seed
    )
    print("CHAOS LONG:", _summary(report, log))
    _assert_every_kill_landed(report, log)
