"""5. Start-up: `kline-tui --demo` to its first painted frame.

Method: a private tmux server (its own socket, started beforehand so its start-up is not counted)
runs `kline-tui --demo` in a new 200x60 session; the clock starts just before `tmux new-session`
and stops when `capture-pane` first shows the watch table's header (the first frame the app
paints). Polled every 20 ms, so the figure is up to 20 ms late. The first run (cold caches)
is reported apart; the figure is the median of the following runs. Config and data folders are
temporary (XDG_CONFIG_HOME, XDG_DATA_HOME), so nothing of the user's is touched.

Context: the import time of the UI (`python -X importtime -c "import kline_tui.ui.app"`), whose
biggest modules are listed in the notes.
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.common import PY, Row, child_env, kline_tui_cmd, temp_dir, verdict

TARGET_S = 1.5
HEADER = ("Symbol", "vs open")


class Tmux:
    """A tmux server of our own (`-L name`); `kill()` ends that server only."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]
        self.env = env
        self.run("new-session", "-d", "-s", "idle", "-x", "80", "-y", "24", "sleep 3600")

    def run(self, *args: str, check: bool = True) -> str:
        return subprocess.run(
            [*self.base, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=20,
        ).stdout

    def new(self, session: str, command: str, width: int = 200, height: int = 60) -> None:
        self.run("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), command)

    def capture(self, session: str) -> str:
        return self.run("capture-pane", "-p", "-t", session, check=False)

    def pane_pid(self, session: str) -> int:
        return int(self.run("list-panes", "-t", session, "-F", "#{pane_pid}").split()[0])

    def kill_session(self, session: str) -> None:
        self.run("kill-session", "-t", session, check=False)

    def kill(self) -> None:
        self.run("kill-server", check=False)


def app_pid(tmux: Tmux, session: str, timeout: float = 10.0) -> int:
    """The kline-tui process in the session's pane (the pane's shell, or its child)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pane = psutil.Process(tmux.pane_pid(session))
            for proc in [pane, *pane.children(recursive=True)]:
                if "python" in proc.name().lower() or any(
                    "kline" in part for part in proc.cmdline()
                ):
                    return proc.pid
        except (psutil.Error, subprocess.CalledProcessError, ValueError, IndexError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no kline-tui process in tmux session {session}")


def _one_start(tmux: Tmux, n: int, command: str, timeout: float = 30.0) -> float:
    session = f"start{n}"
    started = time.perf_counter()
    tmux.new(session, command)
    try:
        while True:
            screen = tmux.capture(session)
            if all(h in screen for h in HEADER):
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"no table header within {timeout:.0f} s; screen:\n{screen}")
            time.sleep(0.02)
    finally:
        # Quit cleanly: flushes the demo's data.
        tmux.run("send-keys", "-t", session, "q", check=False)
        time.sleep(0.5)
        tmux.kill_session(session)


def _import_profile() -> tuple[float, list[str]]:
    """Import time of the UI module, and its biggest top-level imports."""
    out = subprocess.run(
        [PY, "-X", "importtime", "-c", "import kline_tui.ui.app"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    ).stderr
    by_package: dict[str, int] = {}
    total = 0
    for line in out.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in parts[1]:
            continue
        self_us, name = int(parts[0].split(":")[1]), parts[2]
        total += self_us
        root = name.strip().split(".")[0]
        by_package[root] = by_package.get(root, 0) + self_us
    top = sorted(((us, name) for name, us in by_package.items()), reverse=True)[:7]
    return total / 1e6, [f"{name} {us / 1e3:.0f} ms" for us, name in top]


HISTORY_STREAMS = 500  # spot, 2 weight each: both runs fit in one minute's budget
HISTORY_DELAY_S = 0.05  # a round trip to the exchange: 50 ms is a near one


async def _history_times(streams: int, delay_s: float) -> dict[int, float]:
    """Seconds the charts' history (60 candles a stream) of `streams` spot streams takes to
    load from a simulator answering REST `delay_s` late, asked one stream at a time (the order
    before SEED_CONCURRENCY) and SEED_CONCURRENCY at a time."""
    import tempfile

    from kline_tui.config import Settings
    from kline_tui.model import Interval, Market, StreamKey
    from kline_tui.recorder import pipeline as pipeline_module
    from kline_tui.sim import Simulator, universe

    concurrency = pipeline_module.SEED_CONCURRENCY
    times: dict[int, float] = {}
    async with Simulator(extra_symbols=streams) as sim:
        symbols = [s for s, info in universe(Market.SPOT, streams).items() if info.trading]
        keys = [StreamKey(Market.SPOT, s, Interval.M1) for s in symbols[:streams]]
        with tempfile.TemporaryDirectory() as data:
            settings = Settings(
                config_path=Path(data) / "absent.toml",
                config_exists=False,
                data_dir=Path(data),
                watch=tuple(keys),
                endpoints=dict(sim.endpoints),
                history=0,
            )
            pipeline = pipeline_module.Pipeline(settings, keep_closed=60)
            await pipeline.start()
            try:
                sim.faults.rest_delay_s = delay_s
                for n in (1, concurrency):
                    pipeline_module.SEED_CONCURRENCY = n
                    for state in pipeline.hub.streams.values():
                        state.closed.clear()
                    started = time.perf_counter()
                    await pipeline.seed_history(keys, count=60)
                    times[n] = time.perf_counter() - started
            finally:
                pipeline_module.SEED_CONCURRENCY = concurrency
                sim.faults.rest_delay_s = 0.0
                await pipeline.stop()
    return times


def run(quick: bool) -> list[Row]:
    runs = 4 if quick else 8
    with temp_dir("startup") as root:
        env = child_env(
            XDG_CONFIG_HOME=str(root / "config"),
            XDG_DATA_HOME=str(root / "share"),
            XDG_CACHE_HOME=str(root / "cache"),
            TERM="xterm-256color",
        )
        command = " ".join(shlex.quote(p) for p in [*kline_tui_cmd(), "--demo"])
        tmux = Tmux(f"kline-bench-start-{Path(root).name}", env)
        try:
            times = [
                _one_start(tmux, i, f"cd {shlex.quote(str(root))} && exec {command}")
                for i in range(runs)
            ]
        finally:
            tmux.kill()
    cold, warm = times[0], times[1:]
    med = statistics.median(warm)
    import_s, top = _import_profile()
    return [
        Row(
            "5 start-up: --demo to first frame",
            f"{med:.2f} s (first {cold:.2f} s)",
            "<= 1.5 s",
            verdict(med <= TARGET_S, f"{med / TARGET_S:.2f}x of budget"),
            [
                f"start-up runs (s): {', '.join(f'{t:.2f}' for t in times)}; "
                "tmux capture-pane polled every 20 ms",
                f"import kline_tui.ui.app alone: {import_s:.2f} s; by package (own modules' "
                f"import time): {'; '.join(top)}",
            ],
        ),
        _history_row(),
    ]


def _history_row() -> Row:
    import asyncio

    times = asyncio.run(_history_times(HISTORY_STREAMS, HISTORY_DELAY_S))
    one, (n, many) = times[1], max(times.items())
    return Row(
        f"5 start-up: charts' history, {HISTORY_STREAMS} streams "
        f"{HISTORY_DELAY_S * 1000:.0f} ms away",
        f"{many:.1f} s, {n} streams at a time (one at a time: {one:.1f} s)",
        "",
        verdict(None, f"{one / many:.1f}x faster"),
        [
            "charts' history: 60 closed candles a stream, asked at start (the simulator "
            f"in-process, its REST answers {HISTORY_DELAY_S * 1000:.0f} ms late); one at a "
            "time is the order before SEED_CONCURRENCY"
        ],
    )


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(row)
