"""3. Full-market load at real pacing: 1,500 spot streams (pushed every 2 s), 600 USD-M and 60
COIN-M (every 250 ms), about 3,400 messages/s, from the simulator in its own process
(`python -m kline_tui.sim --speed 1 --extra-symbols 2000`).

- Headless: `kline-tui record --config C` as a subprocess; its CPU (% of one core, all threads) and
  RSS sampled every second with psutil. The first `WARMUP_S` (connecting, subscribing, paced at
  the market's control rate) are left out of the figures. "Not growing" is judged on the drift:
  the sum of the second-to-second RSS changes below `STEP_MB`, per minute (a one-off step, such as
  the first flush allocating Arrow/polars pools, is reported apart).
- UI: `kline-tui --config C` in a private tmux server (200x60), sampled the same way.
- Closed candle on screen: in-process, `benchmarks.ui_latency` (see there), with ten spot 1s
  streams at the top of the table (they close every second) besides the full market.

The recorder's `history` is 0: the figures are the steady state, not a first-run backfill of
1,000 candles for 2,160 streams. Flushes follow the defaults (50,000 rows or 60 s).
"""

from __future__ import annotations

import itertools
import json
import shlex
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.common import (
    PY,
    Children,
    Row,
    Sampler,
    child_env,
    child_result,
    kline_tui_cmd,
    read_until,
    slope_mb_per_min,
    temp_dir,
    verdict,
)
from benchmarks.startup import Tmux, app_pid

COUNTS = {"spot": 1500, "usdm": 600, "coinm": 60}
# Spot 1s streams for the latency probe.
PROBES = [
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "DOGEUSDT",
    "ADAUSDT",
    "TRXUSDT",
    "LINKUSDT",
    "AVAXUSDT",
]
WARMUP_S = 15.0
CPU_HEADLESS, CPU_UI, RSS_MB, LATENCY_MS = 10.0, 25.0, 150.0, 300.0


def full_market() -> list[str]:
    from kline_tui.model import Market
    from kline_tui.sim.universe import universe

    streams = []
    for market, count in COUNTS.items():
        symbols = [s for s, info in universe(Market(market), 2000).items() if info.trading][:count]
        assert len(symbols) == count, (market, len(symbols))
        streams += [f"{market}:{s}:1m" for s in symbols]
    return streams


def start_sim(children: Children) -> tuple[object, str]:
    proc = children.start([PY, "-m", "kline_tui.sim", "--speed", "1", "--extra-symbols", "2000"])
    lines = read_until(proc, "ready", 60)
    return proc, "\n".join(line for line in lines if line != "ready")


def write_config(path: Path, data_dir: Path, endpoints: str, watch: list[str]) -> Path:
    path.write_text(
        f"data_dir = {json.dumps(str(data_dir))}\nwatch = {json.dumps(watch)}\n\n{endpoints}\n\n"
        "[recorder]\nhistory = 0\n"
    )
    return path


STEP_MB = 5.0  # a one-off jump at least this big (first flush: Arrow/polars pools) is not drift
DRIFT_MB_PER_MIN = 0.5  # "not growing": drift slower than this...
MIN_DRIFT_WINDOW_S = 300.0  # ...judged over at least this long (not with --quick)


def _summary(sampler: Sampler, skip: float) -> dict:
    window = sampler.window(skip)
    if not window:
        raise RuntimeError("no CPU/RSS samples")
    cpu = [c for _, c, _ in window]
    rss = [r for _, _, r in window]
    deltas = [b - a for a, b in itertools.pairwise(rss)]
    steps = [d for d in deltas if abs(d) >= STEP_MB]
    minutes = max((window[-1][0] - window[0][0]) / 60, 1e-9)
    return {
        "cpu_mean": sum(cpu) / len(cpu),
        "cpu_max": max(cpu),
        "rss_start": rss[0],
        "rss_end": rss[-1],
        "rss_max": max(rss),
        "slope": slope_mb_per_min(window),
        "samples": len(window),
        "drift": sum(d for d in deltas if abs(d) < STEP_MB) / minutes,
        "steps": steps,
        "rss_every_10s": [round(r) for r in rss[::10]],
    }


def _headless(children: Children, config: Path, seconds: float, sim_pid: int, root: Path) -> dict:
    """`kline-tui record --config C` as a subprocess, sampled past the warm-up, then stopped."""
    log = root / "record.log"
    with open(log, "w") as err:
        proc = children.start(
            [*kline_tui_cmd(), "record", "--config", str(config), "--status-every", "30"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    sampler = Sampler(proc.pid).start()
    try:
        sim = Sampler(sim_pid).start()
        deadline = time.monotonic() + WARMUP_S + seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"kline-tui record exited {proc.returncode}: {log.read_text()[-2000:]}"
                )
            time.sleep(0.5)
        sim.stop()
    finally:
        sampler.stop()
        code = children.stop(proc, signal.SIGTERM, timeout=60)
    out = _summary(sampler, WARMUP_S)
    out["exit"] = code
    # Event lines are "HH:MM:SS text"; the last status line, or the exit summary ("done in ...").
    texts = [line.split(" ", 1)[-1] for line in log.read_text().splitlines()]
    status = [text for text in texts if text.startswith(("status:", "done"))]
    out["status"] = status[-1] if status else "(no status line)"
    out["sim_cpu"] = _summary(sim, WARMUP_S)["cpu_mean"]
    return out


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ui(config: Path, seconds: float, root: Path) -> dict:
    env = child_env(
        XDG_CONFIG_HOME=str(root / "xdg-config"),
        XDG_DATA_HOME=str(root / "xdg-share"),
        TERM="xterm-256color",
    )
    tmux = Tmux(f"kline-bench-ui-{root.name}", env)
    try:
        cmd = " ".join(shlex.quote(p) for p in [*kline_tui_cmd(), "--config", str(config)])
        tmux.new("ui", f"exec {cmd}")
        sampler = Sampler(app_pid(tmux, "ui")).start()
        # The UI also loads 60 candles of history per stream at start.
        time.sleep(WARMUP_S + 5 + seconds)
        sampler.stop()
        screen = tmux.capture("ui")
        tmux.run("send-keys", "-t", "ui", "q", check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(sampler.proc):
            time.sleep(0.2)
    finally:
        tmux.kill()
    out = _summary(sampler, WARMUP_S + 5)
    out["status_bar"] = next(
        (ln.strip() for ln in screen.splitlines() if "streams" in ln.lower()), ""
    )[:150]
    return out


def _latency(children: Children, config: Path, seconds: float) -> dict:
    cmd = [PY, "-m", "benchmarks.ui_latency", "--config", str(config), "--seconds", str(seconds)]
    return child_result(children, "ui_latency", cmd, timeout=seconds + 180)


def run(quick: bool) -> list[Row]:
    seconds = 60.0 if quick else 600.0
    watch = full_market()
    # Children die before the folder goes.
    with temp_dir("fullmarket") as root, Children() as children:
        sim, endpoints = start_sim(children)
        head = _headless(
            children,
            write_config(root / "headless.toml", root / "data-headless", endpoints, watch),
            seconds,
            sim.pid,
            root,
        )
        ui = _ui(write_config(root / "ui.toml", root / "data-ui", endpoints, watch), seconds, root)
        probes = [f"spot:{s}:1s" for s in PROBES]
        lat = _latency(
            children,
            write_config(root / "latency.toml", root / "data-latency", endpoints, probes + watch),
            60.0 if quick else 180.0,
        )
        children.stop(sim)

    judge_drift = seconds >= MIN_DRIFT_WINDOW_S

    def rss_ok(h: dict) -> bool | None:
        if h["rss_max"] > RSS_MB:
            return False
        # Over a minute the sink's buffer (flushed every 60 s) alone moves RSS by a MB: too short.
        return h["drift"] <= DRIFT_MB_PER_MIN if judge_drift else None

    def rss_figure(h: dict) -> str:
        return (
            f"{h['rss_start']:.0f} -> {h['rss_end']:.0f} MB (max {h['rss_max']:.0f}; drift "
            f"{h['drift']:+.1f} MB/min"
            + (
                f", one-off steps {', '.join(f'{d:+.0f}' for d in h['steps'])} MB"
                if h["steps"]
                else ""
            )
            + ")"
        )

    rows = [
        Row(
            "3 full market, headless: CPU",
            f"{head['cpu_mean']:.1f}% (max {head['cpu_max']:.0f}%)",
            "<= 10% of a core",
            verdict(
                head["cpu_mean"] <= CPU_HEADLESS,
                f"{head['cpu_mean'] / CPU_HEADLESS:.2f}x of budget",
            ),
            [
                f"full market: {len(watch)} streams "
                f"({', '.join(f'{n} {m}' for m, n in COUNTS.items())}, 1m), "
                f"{head['samples']} one-second samples after {WARMUP_S:.0f} s warm-up; "
                f"simulator process {head['sim_cpu']:.0f}% of a core; "
                f"record exit code {head['exit']}",
                f"headless last status: {head['status']}",
                f"headless RSS every 10 s (MB): {head['rss_every_10s']}"
                + (
                    ""
                    if judge_drift
                    else "; drift not judged under a 5-minute window (run without --quick)"
                ),
            ],
        ),
        Row(
            "3 full market, headless: RSS",
            rss_figure(head),
            f"<= 150 MB, drift <= {DRIFT_MB_PER_MIN} MB/min",
            verdict(rss_ok(head)),
        ),
        Row(
            "3 full market, UI (tmux): CPU",
            f"{ui['cpu_mean']:.1f}% (max {ui['cpu_max']:.0f}%)",
            "<= 25% of a core",
            verdict(ui["cpu_mean"] <= CPU_UI, f"{ui['cpu_mean'] / CPU_UI:.2f}x of budget"),
            [
                f"UI: RSS {ui['rss_start']:.0f} -> {ui['rss_end']:.0f} MB "
                f"(max {ui['rss_max']:.0f}); "
                f"status bar: {ui['status_bar']!r}"
            ],
        ),
    ]
    if lat["samples"]:
        rows.append(
            Row(
                "3 full market, UI: closed candle on screen",
                f"p50 {lat['p50_ms']:.0f} / p95 {lat['p95_ms']:.0f} / max {lat['max_ms']:.0f} ms",
                "<= 300 ms",
                verdict(lat["max_ms"] <= LATENCY_MS, f"max {lat['max_ms'] / LATENCY_MS:.2f}x"),
                [
                    f"latency: {lat['samples']} closed candles on visible rows "
                    f"over {lat['seconds']:.0f} s, {lat['msgs_per_s']:,.0f} msg/s into the hub, "
                    f"{lat['live']}/{lat['streams']} streams live, "
                    f"{lat['unpainted']} still unpainted at the end"
                ],
            )
        )
    else:
        rows.append(
            Row(
                "3 full market, UI: closed candle on screen",
                "no sample",
                "<= 300 ms",
                "FAIL",
                [f"latency run: {lat}"],
            )
        )
    return rows


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(row)
