"""Closed candle -> on screen, and key -> on screen, measured inside the app.

    python -m benchmarks.ui_latency --config C --seconds 60          (run by `fullmarket`)
    python -m benchmarks.ui_latency --config C --seconds 60 --keys   (run by this module's `run`)

Scenario 7 (`run`, `python -m benchmarks --only ui`): 5,000 streams (spot 2,000, USD-M 2,000,
COIN-M 1,000, all 1m, from the simulator's symbols) at the simulator's full rate (spot pushes every
2 s, futures every 250 ms: about 13,000 messages/s); keys pressed every 250 ms (moves, pages,
sorts, groups); each key's time from being sent to the frame that shows it (the table's
`generation`, bumped by the key, painted: see `watch_table`), its p95 against 100 ms, the
repaint timer's rate and gaps (it should tick at its fixed 4/s however busy the app is), and the
process's CPU (the UI and the pipeline it runs: one process) as % of a core. Printed beside a
baseline: the same keys on the 8 default streams.

Runs the real `KlineApp` under Textual's Pilot (`run_test(headless=True)`, 200x60) against the
simulator named in the config (another process). Three hooks, all instance attributes, nothing
in kline_tui/ changed:

- `hub.on_kline`: when a closed candle is *accepted* (the row's "Rec" count and sparkline change)
  for a stream whose row is on screen, its arrival time is noted (the oldest unpainted one per row);
- `table.render_line`: when the compositor renders that row afterwards, the row is marked painted
  (it reads the state then, so it shows the candle);
- `app._display`: the compositor's update for the frame; the latency is taken here, when the
  frame is handed to the terminal driver (headless: the driver writes nothing, so the terminal's
  own write, a few ms for a 200x60 frame, is not counted).

Prints `result {json}` with the latency percentiles and the message rate the hub saw.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import statistics
import sys
import time
from pathlib import Path


async def _measure(config: Path, seconds: float, warmup: float) -> dict:
    from kline_tui.config import load_settings
    from kline_tui.recorder.hub import StreamStatus
    from kline_tui.ui.app import KlineApp

    settings = load_settings(config)
    app = KlineApp(settings, save_watch_list=False)
    latencies: list[float] = []
    async with app.run_test(headless=True, size=(200, 60)):
        await app.wait_started()
        hub, table = app.pipeline.hub, app.table
        await _wait_live(app, hub, 60.0)
        await asyncio.sleep(warmup)
        # key -> arrival (perf_counter) of the oldest closed candle not yet painted
        pending: dict = {}
        painted: set = set()
        on_kline, render_line, display = hub.on_kline, table.render_line, app._display
        clock = time.perf_counter

        def visible() -> set:
            top = int(table.scroll_offset.y)
            return set(table.lines[top : top + table._rows_visible()])

        shown = visible()
        shown_at = time.monotonic()

        def hooked_on_kline(key, event_time, kline, *rest):
            nonlocal shown, shown_at
            state = hub.streams.get(key)
            before = state.recorded if state is not None else None
            on_kline(key, event_time, kline, *rest)
            if (
                kline.closed
                and state is not None
                and state.recorded != before
                and key not in pending
            ):
                if time.monotonic() - shown_at > 1.0:
                    shown, shown_at = visible(), time.monotonic()
                if key in shown:
                    pending[key] = clock()

        def hooked_render_line(y):
            strip = render_line(y)
            if y > 0 and pending:
                row = int(table.scroll_offset.y) + y - 1
                if row < len(table.lines) and table.lines[row] in pending:
                    painted.add(table.lines[row])
            return strip

        def hooked_display(screen, renderable):
            display(screen, renderable)
            if painted:
                now = clock()
                for key in painted:
                    arrived = pending.pop(key, None)
                    if arrived is not None:
                        latencies.append(now - arrived)
                painted.clear()

        hub.on_kline, table.render_line, app._display = (
            hooked_on_kline,
            hooked_render_line,
            hooked_display,
        )
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        rate = sum(c.frames_per_s() for c in hub.connection_status())
        live = sum(s.status is StreamStatus.LIVE for s in hub.streams.values())
        hub.on_kline, app._display = on_kline, display
        del table.render_line
        elapsed = time.monotonic() - t0
        await app.shutdown_pipeline()
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float | None:
        return ms[min(len(ms) - 1, int(p * len(ms)))] if ms else None

    return {
        "samples": len(ms),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "max_ms": ms[-1] if ms else None,
        "mean_ms": statistics.fmean(ms) if ms else None,
        "msgs_per_s": rate,
        "streams": len(hub.streams),
        "live": live,
        "seconds": elapsed,
        "unpainted": len(pending),
    }


# Moves, pages, sorts and groups: each changes what the table shows.
KEYS = ("down", "down", "pagedown", "s", "up", "g", "home", "S", "end", "g", "pageup", "g", "s")


async def _wait_live(app, hub, timeout: float = 90.0) -> None:
    from kline_tui.recorder.hub import StreamStatus

    deadline = time.monotonic() + timeout
    while sum(s.status is StreamStatus.LIVE for s in hub.streams.values()) < 0.98 * len(
        hub.streams
    ):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)


def _send_key(app, key: str) -> None:
    """A key as the terminal's driver hands it over, without Pilot's waits for an idle app
    (which a loaded app seldom is)."""
    from textual import events

    event = events.Key(key, key if len(key) == 1 else None)
    event.set_sender(app)
    app._driver.send_message(event)


async def _measure_keys(config: Path, seconds: float, warmup: float) -> dict:
    """Keys pressed every 250 ms: each one's time until a frame shows what it changed."""
    import gc

    from kline_tui.config import load_settings
    from kline_tui.recorder.hub import StreamStatus
    from kline_tui.recorder.pipeline import Pipeline
    from kline_tui.ui.app import KlineApp

    # How long the charts' history takes to load (the app asks it once the streams exist).
    seed, seeded = Pipeline.seed_history, []

    async def timed_seed(self, keys, count=60):
        t = time.perf_counter()
        await seed(self, keys, count=count)
        seeded.append(time.perf_counter() - t)

    Pipeline.seed_history = timed_seed
    app = KlineApp(load_settings(config), save_watch_list=False)
    latencies: list[float] = []
    missed = 0
    pauses: list[float] = []  # garbage collections, the longest ones stop everything
    started: list[float] = []

    def collected(phase: str, _info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pauses.append(time.perf_counter() - started[0])

    ticks: list[float] = []
    async with app.run_test(headless=True, size=(200, 60)):
        await app.wait_started()
        hub, table = app.pipeline.hub, app.table
        await _wait_live(app, hub)
        # The repaint timer's ticks (each redraws the table, panels and header from the
        # pipeline's state), not the redraws keys ask for themselves.
        timer = next(t for t in app._timers if t.name == "repaint")
        tick = timer._callback

        def hooked_tick() -> None:
            ticks.append(time.perf_counter())
            tick()

        timer._callback = hooked_tick
        gc.callbacks.append(collected)
        await asyncio.sleep(warmup)
        display, clock = app._display, time.perf_counter
        waiting: list[tuple[int, float]] = []  # (the generation the key makes, sent at)

        def hooked_display(screen, renderable):
            display(screen, renderable)
            if waiting and table.painted_generation >= waiting[0][0]:
                latencies.append(clock() - waiting.pop()[1])

        app._display = hooked_display
        cpu0, t0 = time.process_time(), time.monotonic()
        ticks.clear()
        n = 0
        while time.monotonic() - t0 < seconds:
            key = KEYS[n % len(KEYS)]
            n += 1
            waiting[:] = [(table.generation + 1, clock())]
            _send_key(app, key)
            deadline = time.monotonic() + 2.0
            while waiting and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if waiting:
                missed += 1
                waiting.clear()
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - t0
        cpu = (time.process_time() - cpu0) / elapsed * 100
        rate = sum(c.frames_per_s() for c in hub.connection_status())
        live = sum(s.status is StreamStatus.LIVE for s in hub.streams.values())
        states = collections.Counter(s.status.value for s in hub.streams.values())
        app._display = display
        repaints = list(ticks)
        timer._callback = tick
        gc.callbacks.remove(collected)
        await app.shutdown_pipeline()
    ms = sorted(x * 1000 for x in latencies)
    gaps = sorted((b - a) * 1000 for a, b in itertools.pairwise(repaints))
    return {
        "repaint_hz": (len(repaints) - 1) / (repaints[-1] - repaints[0]) if gaps else 0.0,
        "repaint_gap_p95_ms": gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))] if gaps else None,
        "repaint_gap_max_ms": gaps[-1] if gaps else None,
        "states": dict(states),
        "history_s": seeded[0] if seeded else None,
        "gc_max_ms": max(pauses, default=0.0) * 1000,
        "gc_ms_total": sum(pauses) * 1000,
        "samples": len(ms),
        "keys": n,
        "missed": missed,
        "p50_ms": ms[len(ms) // 2] if ms else None,
        "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else None,
        "max_ms": ms[-1] if ms else None,
        "cpu_pct": cpu,
        "msgs_per_s": rate,
        "streams": len(hub.streams),
        "live": live,
        "seconds": elapsed,
    }


COUNTS_5000 = {"spot": 2000, "usdm": 2000, "coinm": 1000}
KEY_P95_MS = 100.0


def five_thousand() -> list[str]:
    """5,000 1m streams from the simulator's symbols (its majors first, then synthetic ones)."""
    from kline_tui.model import Market
    from kline_tui.sim.universe import universe

    streams = []
    for market, count in COUNTS_5000.items():
        symbols = [s for s, info in universe(Market(market), 2000).items() if info.trading]
        assert len(symbols) >= count, (market, len(symbols))
        streams += [f"{market}:{s}:1m" for s in symbols[:count]]
    return streams


def run(quick: bool) -> list:
    """Scenario 7: key -> screen with 5,000 streams, beside the 8 default streams."""
    from benchmarks.common import Children, Row, child_result, temp_dir, verdict
    from benchmarks.fullmarket import start_sim, write_config
    from kline_tui.config import DEFAULT_WATCH
    from kline_tui.ui.app import REPAINT_HZ

    seconds = 30.0 if quick else 120.0
    results = {}
    with temp_dir("ui-keys") as root, Children() as children:
        _sim, endpoints = start_sim(children)
        for name, watch in (("baseline", list(DEFAULT_WATCH)), ("5000", five_thousand())):
            config = write_config(root / f"{name}.toml", root / f"data-{name}", endpoints, watch)
            cmd = [sys.executable, "-m", "benchmarks.ui_latency", "--config", str(config)]
            cmd += ["--seconds", str(seconds), "--keys"]
            results[name] = child_result(children, f"ui keys {name}", cmd, seconds + 240)
    base, big = results["baseline"], results["5000"]
    if not big.get("samples"):
        return [Row("7 UI, 5,000 streams: key on screen", "no sample", "", "FAIL", [str(big)])]
    p95 = big["p95_ms"]
    return [
        Row(
            "7 UI, 5,000 streams: key on screen",
            f"p50 {big['p50_ms']:.0f} / p95 {p95:.0f} / max {big['max_ms']:.0f} ms "
            f"(baseline, 8 streams: p95 {base['p95_ms']:.0f} ms)",
            f"p95 <= {KEY_P95_MS:.0f} ms",
            verdict(p95 <= KEY_P95_MS, f"{p95 / KEY_P95_MS:.2f}x of budget"),
            [
                f"keys: {big['samples']} of {big['keys']} shown ({big['missed']} not within 2 s), "
                f"{big['live']}/{big['streams']} streams live, {big['msgs_per_s']:,.0f} msg/s "
                f"into the hub, over {big['seconds']:.0f} s; longest garbage collection "
                f"{big['gc_max_ms']:.0f} ms ({big['gc_ms_total']:.0f} ms in all); baseline "
                f"{base['samples']} keys, p50 {base['p50_ms']:.0f} ms",
                "charts' history (60 candles a stream) loaded in "
                + (
                    f"{big['history_s']:.1f} s"
                    if big.get("history_s") is not None
                    else "more than the run"
                ),
            ],
        ),
        Row(
            "7 UI, 5,000 streams: repaint rate",
            f"{big['repaint_hz']:.2f}/s, gap p95 {big['repaint_gap_p95_ms']:.0f} / max "
            f"{big['repaint_gap_max_ms']:.0f} ms (baseline, 8 streams: {base['repaint_hz']:.2f}/s)",
            f"{REPAINT_HZ:g}/s",
            verdict(
                big["repaint_hz"] >= 0.95 * REPAINT_HZ,
                f"{big['repaint_hz'] / REPAINT_HZ:.2f}x of the rate",
            ),
            [
                "repaint: the app's timer (its ticks while keys are pressed) redrawing the "
                "table, panels and header from the pipeline's state; a gap is the time between "
                "two ticks"
            ],
        ),
        Row(
            "7 UI, 5,000 streams: CPU while keys are pressed",
            f"{big['cpu_pct']:.0f}% of a core (baseline, 8 streams: {base['cpu_pct']:.0f}%)",
            "",
            "info",
            ["CPU: the app's process, which runs the UI and the pipeline (ingest included)"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ui_latency")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--keys", action="store_true", help="key -> screen instead of candle -> screen")
    args = p.parse_args(argv)
    measure = _measure_keys if args.keys else _measure
    result = asyncio.run(measure(args.config, args.seconds, args.warmup))
    print("result " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
