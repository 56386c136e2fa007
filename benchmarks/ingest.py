"""1. Ingest ceiling: how many kline frames a second the full pipeline takes from a firehose,
against a bare `websockets.recv()` + `orjson.loads()` loop reading the same firehose.

The firehose (`benchmarks.firehose`) runs in its own process; each client runs in a process of
its own too (`python -m benchmarks.ingest client baseline|baseline-aiohttp|pipeline --url ...`), so
no two share an interpreter. Each round runs the three in turn; the best of each counts (a ceiling).

The pipeline client is kline-tui's real `Pipeline` (Connection -> Hub -> Ledger -> ParquetSink,
flushing every `--flush-age` seconds, history 0); its REST calls (exchangeInfo, for the symbol
check) go to an in-process simulator that is otherwise idle. After the window it stops the
pipeline (final flush) and checks the books: every closed candle accepted, no duplicate, no gap.

The third client is the same bare loop over aiohttp's WebSocket client, the transport kline-tui
reads with: its ratio to the websockets loop is the measurement behind choosing aiohttp, and the
pipeline's ratio to it is what kline-tui costs on top of its own transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.common import PY, Children, Row, child_result, read_until, verdict

STREAMS = 500
TARGET_RATIO = 0.8
BATCH = 256  # frames a bare loop reads between two looks at the clock


def _names(n: int) -> list[str]:
    return [f"s{i:04d}usdt@kline_1m" for i in range(1, n + 1)]


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _subscriptions(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The URL naming the first 100 streams and the SUBSCRIBE messages for the rest, 200 a message,
    as kline-tui's Connection opens a combined stream."""
    import orjson

    names = _names(args.streams)
    first, rest = names[:100], names[100:]
    return f"{args.url}/market/stream?streams={'/'.join(first)}", [
        orjson.dumps({"method": "SUBSCRIBE", "params": rest[i : i + 200], "id": i + 1}).decode()
        for i in range(0, len(rest), 200)
    ]


async def _bare_rate(
    mode: str, args: argparse.Namespace, read_batch: Callable[[], Awaitable[None]]
) -> dict:
    """Frames a second through a bare loop. `read_batch` receives and decodes BATCH frames; the
    clock is read only between batches, so the loop is the transport and the decoder alone. The
    warm-up starts once the first batch is in (the firehose waits for every subscription)."""
    await read_batch()
    start = time.perf_counter() + args.warmup
    while time.perf_counter() < start:
        await read_batch()
    frames, t0, c0 = 0, time.perf_counter(), _cpu_s()
    end = t0 + args.seconds
    while (now := time.perf_counter()) < end:
        await read_batch()
        frames += BATCH
    elapsed, cpu = now - t0, _cpu_s() - c0
    return {
        "mode": mode,
        "frames": frames,
        "seconds": elapsed,
        "msgs_per_s": frames / elapsed,
        "cpu_pct": 100 * cpu / elapsed,
    }


async def _baseline(args: argparse.Namespace) -> dict:
    """The bare loop over websockets: `orjson.loads(await ws.recv())`."""
    import orjson
    from websockets.asyncio.client import connect

    url, subscribe = _subscriptions(args)
    async with connect(
        url,
        max_size=4 * 1024 * 1024,
        max_queue=4096,
        compression=None,
        ping_interval=20,
        ping_timeout=20,
    ) as ws:
        for message in subscribe:
            await ws.send(message)
        loads, recv = orjson.loads, ws.recv

        async def read_batch() -> None:
            for _ in range(BATCH):
                loads(await recv())

        return await _bare_rate("baseline", args, read_batch)


async def _baseline_aiohttp(args: argparse.Namespace) -> dict:
    """The same bare loop over aiohttp's WebSocket client, the transport kline-tui reads with."""
    import aiohttp
    import orjson

    url, subscribe = _subscriptions(args)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, compress=0, max_msg_size=4 * 1024 * 1024, heartbeat=20) as ws,
    ):
        for message in subscribe:
            await ws.send_str(message)
        loads, recv = orjson.loads, ws.receive

        async def read_batch() -> None:
            for _ in range(BATCH):
                loads((await recv()).data)

        return await _bare_rate("baseline-aiohttp", args, read_batch)


async def _pipeline(args: argparse.Namespace) -> dict:
    from kline_tui.binance.markets import Endpoints
    from kline_tui.config import Settings
    from kline_tui.model import Interval, Market, StreamKey
    from kline_tui.recorder.pipeline import Pipeline
    from kline_tui.sim import Simulator

    tmp = Path(tempfile.mkdtemp(prefix="kline-bench-ingest-"))
    sim = Simulator(speed=1.0, extra_symbols=args.streams)
    await sim.start()
    keys = [
        StreamKey(Market.USDM, f"S{i:04d}USDT", Interval.M1) for i in range(1, args.streams + 1)
    ]
    endpoints = dict(sim.endpoints)
    endpoints[Market.USDM] = Endpoints(ws=f"{args.url}/market", rest=endpoints[Market.USDM].rest)
    settings = Settings(
        config_path=tmp / "none.toml",
        config_exists=False,
        data_dir=tmp / "data",
        watch=tuple(keys),
        endpoints=endpoints,
        history=0,
        flush_age_s=args.flush_age,
    )
    pipeline = Pipeline(settings)
    try:
        return await _pipeline_run(args, pipeline, tmp)
    finally:
        await sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _books(pipeline) -> dict:
    """What the ledger holds of the WebSocket's candles: every closed one accepted, no duplicate,
    no gap. Read before the stop, which counts every candle between the firehose's last and the
    exchange's clock as missing: the firehose runs its candles through time far faster than time."""
    ledgers = pipeline.ledger.streams.values()
    return {
        "closed_accepted": sum(s.accepted_ws for s in ledgers),
        "duplicates": sum(s.duplicates for s in ledgers),
        "gaps": sum(s.gaps for s in ledgers),
        "missing": sum(s.missing_count() for s in ledgers),
        "malformed": pipeline.hub.malformed,
    }


async def _pipeline_run(args: argparse.Namespace, pipeline, tmp: Path) -> dict:
    profiler = None
    try:
        await pipeline.start()
        hub = pipeline.hub

        def frames() -> int:
            return sum(c.status.frames for c in hub.connections)

        deadline = time.monotonic() + 30
        while frames() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("no frame from the firehose in 30 s")
            await asyncio.sleep(0.01)
        await asyncio.sleep(args.warmup)
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="disabled")
            profiler.start()

        def accepted() -> int:
            return sum(s.accepted_ws for s in pipeline.ledger.streams.values())

        print("measuring", flush=True)  # for a profiler to attach now
        n0, t0, c0, a0 = frames(), time.perf_counter(), _cpu_s(), accepted()
        flushes0 = pipeline.sink.stats.flushes
        await asyncio.sleep(args.seconds)
        n1, t1, c1, a1 = frames(), time.perf_counter(), _cpu_s(), accepted()
        if profiler is not None:
            profiler.stop()
        flushes = pipeline.sink.stats.flushes - flushes0
        flush_ms = pipeline.sink.stats.last_flush_ms
        books = _books(pipeline)
        # Paused, as the runtime pauses: the stop writes every candle taken and does not drain the
        # months between the firehose's candles and the exchange's clock from the simulator.
        pipeline.recording = False
    finally:
        stop_started = time.perf_counter()
        report = await pipeline.stop()
        stop_s = time.perf_counter() - stop_started
    out = {
        "mode": "pipeline",
        "frames": n1 - n0,
        "seconds": t1 - t0,
        "msgs_per_s": (n1 - n0) / (t1 - t0),
        "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
        **books,
        "closed_per_s": (a1 - a0) / (t1 - t0),
        "flushes_in_window": flushes,
        "last_flush_ms": flush_ms,
        "stop_s": stop_s,
        "unwritten": report.unwritten,
        "rows_written": pipeline.sink.stats.rows_written,
        "rows_buffered": pipeline.sink.stats.rows_buffered,
        "files": len(list((tmp / "data").rglob("*.parquet"))),
    }
    if profiler is not None:
        out["pyinstrument"] = profiler.output_text(unicode=False, color=False, show_all=False)
    return out


def client_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest client")
    p.add_argument("mode", choices=["baseline", "baseline-aiohttp", "pipeline"])
    p.add_argument("--url", required=True, help="the firehose, ws://host:port")
    p.add_argument("--streams", type=int, default=STREAMS)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--flush-age", type=float, default=2.0)
    p.add_argument("--pyinstrument", action="store_true")
    args = p.parse_args(argv)
    run_mode = {
        "baseline": _baseline,
        "baseline-aiohttp": _baseline_aiohttp,
        "pipeline": _pipeline,
    }[args.mode]
    result = asyncio.run(run_mode(args))
    print("result " + json.dumps(result), flush=True)
    return 0


# -- orchestration --------------------------------------------------------------------------------


def start_firehose(children: Children, streams: int = STREAMS) -> tuple[object, str]:
    proc = children.start(
        [PY, "-m", "benchmarks.firehose", "--expect", str(streams), "--max-seconds", "60"]
    )
    line = read_until(proc, "ready", 30)[-1]
    return proc, line.split()[-1]


def run_client(
    children: Children, mode: str, url: str, seconds: float, extra: list[str] = ()
) -> dict:
    """One client process (`mode`: baseline, baseline-aiohttp or pipeline); its result."""
    cmd = [
        PY,
        "-m",
        "benchmarks.ingest",
        "client",
        mode,
        "--url",
        url,
        "--seconds",
        str(seconds),
        *extra,
    ]
    return child_result(children, f"ingest client {mode}", cmd, timeout=seconds + 90)


def run(quick: bool) -> list[Row]:
    seconds = 10.0
    rounds = 2 if quick else 3
    results: dict[str, list[dict]] = {
        mode: [] for mode in ("baseline", "pipeline", "baseline-aiohttp")
    }
    with Children() as children:
        hose, url = start_firehose(children)
        for _ in range(rounds):
            for mode, got in results.items():
                got.append(run_client(children, mode, url, seconds))
        children.stop(hose)
    best = {mode: max(rs, key=lambda r: r["msgs_per_s"]) for mode, rs in results.items()}
    base, pipe, aio = best["baseline"], best["pipeline"], best["baseline-aiohttp"]
    ratio = pipe["msgs_per_s"] / base["msgs_per_s"]
    sane = (
        pipe["duplicates"] == pipe["gaps"] == pipe["malformed"] == pipe["missing"] == 0
        and pipe["rows_written"] == pipe["closed_accepted"]
        and pipe["rows_buffered"] == pipe["unwritten"] == 0
    )

    def rates(rs: list[dict]) -> str:
        return ", ".join(format(r["msgs_per_s"], ",.0f") for r in rs)

    every = "; ".join(f"{mode} [{rates(rs)}]" for mode, rs in results.items())
    return [
        Row(
            "1 ingest: baseline websockets recv+orjson",
            f"{base['msgs_per_s']:,.0f} msg/s",
            "",
            verdict(None),
            [
                f"ingest: {STREAMS} usdm 1m streams on one combined-stream connection, "
                f"1 frame in 20 a closed candle, {seconds:.0f} s windows after 1 s warm-up, "
                f"best round counts; all rounds, msg/s: {every}",
                f"client CPU in the best window: websockets loop {base['cpu_pct']:.0f}%, "
                f"aiohttp loop {aio['cpu_pct']:.0f}%, kline-tui {pipe['cpu_pct']:.0f}% of one core "
                f"(all threads, incl. the Parquet writer)",
            ],
        ),
        Row(
            "1 ingest: bare aiohttp receive+orjson",
            f"{aio['msgs_per_s']:,.0f} msg/s",
            "",
            verdict(None, f"{aio['msgs_per_s'] / base['msgs_per_s']:.2f}x"),
            [
                "the aiohttp loop is the transport kline-tui reads with: "
                "its ratio to the websockets loop is why aiohttp was chosen"
            ],
        ),
        Row(
            "1 ingest: kline-tui pipeline",
            f"{pipe['msgs_per_s']:,.0f} msg/s",
            ">= 0.8x baseline",
            verdict(ratio >= TARGET_RATIO, f"{ratio:.2f}x") + ("" if sane else " INCONSISTENT"),
            [
                "kline-tui pipeline / bare aiohttp loop: "
                f"{pipe['msgs_per_s'] / aio['msgs_per_s']:.2f}x "
                "(what decoding, live state, ledger and sink cost over the transport alone)",
                "kline-tui books after the best run: "
                f"{pipe['closed_accepted']:,} closed candles accepted "
                f"({pipe['closed_per_s']:,.0f}/s in the window), "
                f"{pipe['rows_written']:,} rows written in {pipe['files']} files "
                f"({pipe['flushes_in_window']} flushes in the window, every 2 s; "
                f"stopped in {pipe['stop_s']:.1f} s, {pipe['unwritten']} unwritten), "
                f"duplicates {pipe['duplicates']}, gaps {pipe['gaps']}, "
                f"malformed {pipe['malformed']}, missing {pipe['missing']}: "
                + ("consistent" if sane else "INCONSISTENT"),
            ],
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        sys.exit(client_main(sys.argv[2:]))
    for row in run(quick="--quick" in sys.argv):
        print(row)
