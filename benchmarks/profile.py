"""Profile: where the pipeline spends its time under the ingest firehose, and per-frame costs.

- py-spy (sampling, `--nonblocking`, 250 Hz) attaches to the pipeline client of the ingest test
  once its measuring window starts; self time is aggregated per function.
- pyinstrument (in the client, only over the window) gives the call tree; its top is printed.
- Micro-benchmarks, one process, no socket: the JSON decoders on a real frame, and the pipeline's
  own per-frame cost (Connection._read -> Hub -> Ledger -> sink buffer, frames fed from memory
  through a stand-in for aiohttp's WebSocket).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import timeit
from collections import Counter
from pathlib import Path

from benchmarks.common import PY, Children, Row, child_env, read_until, verdict
from benchmarks.ingest import STREAMS, run_client, start_firehose

_LINE = re.compile(r":\d+\)$")


def _collapse(raw: str, top: int = 14) -> tuple[list[str], list[str]]:
    """Top functions by self time and kline_tui functions by inclusive time, from py-spy's raw
    output."""
    own: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return [], []

    def fmt(counter: Counter, pick) -> list[str]:
        return [f"{100 * c / total:4.1f}%  {f}" for f, c in counter.most_common() if pick(f)][:top]

    return fmt(own, lambda f: f.strip()), fmt(incl, lambda f: "kline_tui/" in f)


def _py_spy(children: Children, url: str, seconds: float, out: Path) -> str | None:
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        return None
    client = children.start(
        [
            PY,
            "-m",
            "benchmarks.ingest",
            "client",
            "pipeline",
            "--url",
            url,
            "--seconds",
            str(seconds + 1),
        ],
        env=child_env(),
    )
    read_until(client, "measuring", 60)
    rec = subprocess.run(
        [
            spy,
            "record",
            "--pid",
            str(client.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    client.communicate(timeout=120)
    if rec.returncode != 0 or not out.exists():
        return f"py-spy failed: {rec.stderr.strip()[-300:]}"
    return out.read_text()


def _frames(n_streams: int = 500, rounds: int = 6) -> list[str]:
    from benchmarks.firehose import Blast

    blast = Blast([f"s{i:04d}usdt@kline_1m" for i in range(1, n_streams + 1)], 20)
    out = []
    for cycle in range(rounds):
        for q in range(20):
            data, i = blast.step(q, cycle), 0
            while i < len(data):
                n, head = data[i + 1], 2
                if n == 126:
                    n, head = int.from_bytes(data[i + 2 : i + 4], "big"), 4
                out.append(data[i + head : i + head + n].decode())
                i += head + n
    return out


def _decoders(frame: str) -> dict[str, float]:
    import orjson

    from kline_tui.binance import wire

    def us(fn) -> float:
        n = 100_000
        return min(timeit.repeat(lambda: fn(frame), number=n, repeat=3)) / n * 1e6

    import json as stdlib_json

    import msgspec

    return {
        "json.loads": us(stdlib_json.loads),
        "orjson.loads": us(orjson.loads),
        "msgspec untyped": us(msgspec.json.decode),
        "msgspec typed, decode only": us(wire._envelope.decode),
        "msgspec typed (kline-tui wire.decode)": us(wire.decode),
    }


def _hot_path_us() -> float:
    """Per-frame µs of Connection._read + Hub + Ledger + sink buffer, frames from memory (in a
    child)."""
    code = f"""
import asyncio, time, tempfile, shutil
from pathlib import Path
from benchmarks.profile import _frames
from kline_tui.binance.connection import Connection
from kline_tui.binance.markets import DEFAULT_ENDPOINTS
from kline_tui.model import Interval, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import Hub, StreamState
from kline_tui.recorder.ledger import Ledger
from kline_tui.recorder.sink import ParquetSink

import aiohttp

class Message:
    __slots__ = ("type", "data", "extra")
    def __init__(self, kind, data):
        self.type, self.data, self.extra = kind, data, None

class Feed:
    # Frames from memory, through the one call Connection._read makes of aiohttp's WebSocket;
    # CLOSED at the end ends the read.
    close_code = None
    def __init__(self, frames): self.it = iter(frames)
    async def receive(self):
        try:
            return Message(aiohttp.WSMsgType.TEXT, next(self.it))
        except StopIteration:
            return Message(aiohttp.WSMsgType.CLOSED, None)

async def main():
    frames = _frames()
    tmp = Path(tempfile.mkdtemp())
    events = EventLog()
    sink = ParquetSink(tmp, events)
    ledger = Ledger(sink.add, events, history=0)
    hub = Hub(DEFAULT_ENDPOINTS, events, ledger)
    keys = [StreamKey(Market.USDM, f"S{{i:04d}}USDT", Interval.M1) for i in range(1, {STREAMS} + 1)]
    conn = Connection(Market.USDM, "ws://unused", hub)
    conn.add(keys)
    for k in keys:
        hub.streams[k] = StreamState(k)
    control = asyncio.get_running_loop().create_future()
    best = None
    for _ in range(3):
        started = time.perf_counter()
        await conn._read(Feed(frames), control)
        took = (time.perf_counter() - started) / len(frames) * 1e6
        best = took if best is None else min(best, took)
        ledger.streams.clear()
        for k in keys:
            hub.streams[k] = StreamState(k)
    shutil.rmtree(tmp, ignore_errors=True)
    print(best)

asyncio.run(main())
"""
    out = subprocess.run(
        [PY, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[Row]:
    seconds = 6.0 if quick else 10.0
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kline-bench-profile-") as tmp, Children() as children:
        hose, url = start_firehose(children)
        raw = _py_spy(children, url, seconds, Path(tmp) / "pyspy.txt")
        pyi = run_client(children, "pipeline", url, seconds, ["--pyinstrument"])
        children.stop(hose)
    if raw is None:
        notes.append("py-spy: not installed (pip install py-spy)")
    elif raw.startswith("py-spy failed"):
        notes.append(raw)
    else:
        own, incl = _collapse(raw)
        notes.append(
            "py-spy, pipeline under the firehose, self time by function:\n      "
            + "\n      ".join(own)
        )
        notes.append(
            "py-spy, kline_tui functions by inclusive time:\n      " + "\n      ".join(incl)
        )
    tree = pyi.get("pyinstrument", "")
    lines = [
        ln
        for ln in tree.splitlines()
        if ln.strip() and not ln.lstrip().startswith(("_", "/", "Program", "Recorded"))
    ]
    notes.append(
        "pyinstrument over the window (top of the tree):\n      " + "\n      ".join(lines[:40])
    )

    frame = _frames(20, 1)[3]
    dec = _decoders(frame)
    fastest = min(dec, key=dec.get)
    notes.append(
        f"decoders, one {len(frame)}-byte kline frame, µs: "
        + ", ".join(f"{k} {v:.2f}" for k, v in dec.items())
        + f" (fastest: {fastest})"
    )
    per_frame = _hot_path_us()
    return [
        Row(
            "profile: decode one frame (msgspec typed)",
            f"{dec['msgspec typed (kline-tui wire.decode)']:.2f} µs",
            "",
            verdict(None),
            [],
        ),
        Row(
            "profile: decode one frame (orjson.loads)",
            f"{dec['orjson.loads']:.2f} µs",
            "",
            verdict(None),
            [],
        ),
        Row(
            "profile: kline-tui per frame, no socket",
            f"{per_frame:.2f} µs",
            "",
            verdict(None),
            notes,
        ),
    ]


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(row)
