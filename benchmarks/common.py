"""What every scenario shares: result rows, child processes that always die, CPU/RSS sampling."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Row:
    """One line of the result table."""

    scenario: str
    figure: str  # the measured value, formatted
    target: str = ""  # the target, in words ("" for context figures)
    verdict: str = ""  # "PASS", "FAIL", "info", or a ratio with a verdict
    notes: list[str] = field(default_factory=list)  # printed under the table


def verdict(ok: bool | None, ratio: str = "") -> str:
    word = "info" if ok is None else ("PASS" if ok else "FAIL")
    return f"{ratio} {word}".strip()


def child_env(**extra: str) -> dict[str, str]:
    """The environment for children: the venv first on PATH, the repo importable, no colour."""
    env = dict(os.environ)
    venv_bin = str(Path(PY).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def kline_tui_cmd() -> list[str]:
    """How to run the `kline-tui` entry point of this venv."""
    script = Path(PY).parent / "kline-tui"
    return [str(script)] if script.exists() else [PY, "-m", "kline_tui.cli"]


class Children:
    """Starts child processes in their own process groups and kills exactly those on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(
        self,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text: bool = True,
    ) -> subprocess.Popen:
        proc = subprocess.Popen(
            cmd,
            env=env or child_env(),
            cwd=cwd or REPO,
            stdout=stdout,
            stderr=stderr,
            text=text,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(
        self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0
    ) -> int | None:
        """Signal the child's group, wait, then SIGKILL the group if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        else:
            # The leader is gone; anything it left in its group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc, timeout=5.0)
        self.procs.clear()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def child_result(children: Children, what: str, cmd: list[str], timeout: float) -> dict:
    """Run a measuring child (`what`, for errors) to its end and return what it printed as
    `result {json}`; one that overruns `timeout` is stopped, one that prints no result raises with
    its stderr."""
    proc = children.start(cmd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except Exception:
        children.stop(proc)
        raise
    for line in out.splitlines():
        if line.startswith("result "):
            return json.loads(line[7:])
    raise RuntimeError(f"{what} failed (exit {proc.returncode}): {err[-3000:]}")


def read_until(proc: subprocess.Popen, marker: str, timeout: float) -> list[str]:
    """Lines of the child's stdout up to and including the first one containing `marker`."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
            if marker in line:
                break
        else:
            lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no {marker!r} from {proc.args!r} within {timeout:.0f} s") from None
        if line is None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"{proc.args!r} ended before {marker!r}: {err[-2000:]}")
        got.append(line)
        if marker in line:
            return got


@contextlib.contextmanager
def temp_dir(prefix: str):
    path = Path(tempfile.mkdtemp(prefix=f"kline-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Sampler:
    """Samples one process's CPU (% of one core) and RSS (MB) every `period` seconds, in a
    thread."""

    def __init__(self, pid: int, period: float = 1.0) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.period = period
        self.samples: list[tuple[float, float, float]] = []  # (t since start, cpu %, rss MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        t0 = time.monotonic()
        try:
            last_t, last_cpu = time.monotonic(), sum(self.proc.cpu_times()[:2])
            while not self._stop.wait(self.period):
                now, cpu = time.monotonic(), sum(self.proc.cpu_times()[:2])
                rss = self.proc.memory_info().rss / 1e6
                self.samples.append((now - t0, 100.0 * (cpu - last_cpu) / (now - last_t), rss))
                last_t, last_cpu = now, cpu
        except psutil.Error:
            return

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def window(self, skip_s: float) -> list[tuple[float, float, float]]:
        return [s for s in self.samples if s[0] > skip_s]


def slope_mb_per_min(samples: list[tuple[float, float, float]]) -> float:
    """Least-squares RSS slope over the samples, in MB per minute."""
    if len(samples) < 3:
        return 0.0
    xs = [s[0] for s in samples]
    ys = [s[2] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return 60.0 * sxy / sxx


def machine() -> list[str]:
    """What the figures were measured on."""

    def ver(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        total_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f", {total_kb / 1e6:.0f} GB RAM"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    pkgs = [
        "kline-tui",
        "msgspec",
        "websockets",
        "polars",
        "textual",
        "aiohttp",
        "orjson",
        "pandas",
        "pyarrow",
    ]
    return [
        f"date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine   {os.cpu_count()} cores ({cpu}){mem}; {platform.system()} {platform.release()}",
        f"python    {platform.python_version()} ({platform.python_implementation()}) {PY}",
        "versions  " + ", ".join(f"{p} {ver(p)}" for p in pkgs),
        f"load avg  {load} (at start; the machine is shared, figures are noisy)",
    ]


def synthetic_frame(symbols, minutes, t0_ms: int):  # -> pl.DataFrame
    """Candles for benchmarks, in the dataset's schema: row i is `symbols[i]`'s candle opening
    `minutes[i]` minutes after `t0_ms`, with prices that vary but need not mean anything."""
    import polars as pl

    from kline_tui.store.schema import PARQUET_SCHEMA

    minute_ms = 60_000
    n = len(symbols)
    row = pl.int_range(0, n, eager=True)
    price = 100.0 + (row % 997).cast(pl.Float64) / 10
    return pl.DataFrame(
        {
            "symbol": symbols,
            "open_time": (t0_ms + minutes * minute_ms).cast(pl.Datetime("ms", "UTC")),
            "close_time": (t0_ms + minutes * minute_ms + minute_ms - 1).cast(
                pl.Datetime("ms", "UTC")
            ),
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price + 0.5,
            "volume": price * 3,
            "quote_volume": price * 300,
            "taker_buy_volume": price,
            "taker_buy_quote_volume": price * 100,
            "trades": row % 500,
            "source": pl.repeat("ws", n, eager=True),
        }
    ).cast(PARQUET_SCHEMA)
