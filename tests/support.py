"""Running the recorder in tests: in process (settings and a pipeline pointed at a simulator,
waiting for a condition) and as the `kline-tui` command (its environment, its config file, a
timed run)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from kline_tui.binance.markets import Endpoints
from kline_tui.config import Settings
from kline_tui.model import Market, StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.recorder.pipeline import Pipeline
from kline_tui.retry import Backoff

# -- in process --------------------------------------------------------------------------------

WATCH = ["spot:BTCUSDT:1m", "usdm:ETHUSDT:1m", "coinm:BTCUSD_PERP:1m"]  # a stream on each market
KEYS = [StreamKey.parse(s) for s in WATCH]


def make_settings(sim, data_dir: Path, watch: list[str], **kw) -> Settings:
    """Settings without a config file, pointed at the simulator, flushing rows a second old."""
    return Settings(
        config_path=data_dir / "absent.toml",
        config_exists=False,
        data_dir=data_dir,
        watch=tuple(StreamKey.parse(s) for s in watch),
        endpoints=dict(sim.endpoints),
        flush_age_s=kw.pop("flush_age_s", 1.0),
        **kw,
    )


def fast_pipeline(sim, tmp_path: Path, watch=WATCH, pipeline=None, **kw) -> Pipeline:
    """A pipeline that fetches 5 candles of history (unless `history` says otherwise) and
    reconnects within a second; `kw` goes to its settings, `pipeline` to the pipeline."""
    settings = make_settings(sim, tmp_path, watch, history=kw.pop("history", 5), **kw)
    return Pipeline(settings, backoff=Backoff(base=0.2, cap=1.0), **(pipeline or {}))


async def wait_until(
    predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def cut_off(sim, pipeline: Pipeline, seconds: float) -> None:
    """Drop every connection and refuse new ones for `seconds`; return once every stream is
    reconnecting."""
    sim.faults.refuse_connections(seconds)
    await sim.faults.drop()
    streams = pipeline.hub.streams.values()
    await wait_until(
        lambda: all(s.status is StreamStatus.RECONNECTING for s in streams), what="reconnecting"
    )


# -- the command ---------------------------------------------------------------------------

KLINE_TUI = str(Path(sys.executable).parent / "kline-tui")


def env_for(tmp_path: Path) -> dict[str, str]:
    """Config and data folders inside the test's temporary folder, never the user's."""
    env = dict(os.environ)
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    return env


def write_config(
    path: Path,
    endpoints: Mapping[Market, Endpoints] | Mapping[str, Endpoints],
    *,
    data_dir: Path | None = None,
    watch: Iterable[str] | None = None,
    recorder: Mapping[str, object] | None = None,
) -> Path:
    """A config file at `path`: the data folder and the watch list if given, a table for each
    market's endpoints, and the `[recorder]` keys if given."""
    lines = []
    if data_dir is not None:
        lines.append(f'data_dir = "{data_dir}"')
    if watch is not None:
        lines.append("watch = [" + ", ".join(f'"{w}"' for w in watch) + "]")
    for market, ep in endpoints.items():
        lines += [f"[endpoints.{market}]", f'ws = "{ep.ws}"', f'rest = "{ep.rest}"']
    if recorder:
        lines += ["[recorder]", *(f"{key} = {value}" for key, value in recorder.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_record(
    config: Path, *args: str, log: Path | None = None, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`kline-tui record --config <config> <args>` as a child process, unbuffered: its standard
    error appended to `log` if given, else a pipe."""
    with open(log, "a") if log else contextlib.nullcontext(asyncio.subprocess.PIPE) as stderr:
        return await asyncio.create_subprocess_exec(  # the child has its own copy of `log`
            KLINE_TUI,
            "record",
            "--config",
            str(config),
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=env or dict(os.environ, PYTHONUNBUFFERED="1"),
        )


def run_for(args: list[str], seconds: float, env: dict[str, str]) -> tuple[int, str]:
    """Run `args` for `seconds`, then SIGTERM it: (exit code, standard error)."""
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    time.sleep(seconds)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def run_to_end(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `args` until it exits, its output captured as text."""
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
