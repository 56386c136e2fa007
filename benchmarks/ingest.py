"""1. Ingest ceiling: how many kline frames a second the full pipeline takes from a firehose,
against a bare `websockets.recv()` + `orjson.loads()` loop reading the same firehose.

The firehose (`benchmarks.firehose`) runs in its own process; each client runs in a process of
its own too (`python -m benchmarks.ingest client baseline|pipeline --url ...`), so the two never
share an interpreter. Rounds alternate baseline and pipeline; the best of each counts (a ceiling).

The pipeline client is kline-tui's real `Pipeline` (Connection -> Hub -> Ledger -> ParquetSink,
flushing every `--flush-age` seconds, history 0); its REST calls (exchangeInfo, for the symbol
check) go to an in-process simulator that is otherwise idle. After the window it stops the
pipeline (final flush) and checks the books: every closed candle accepted, no duplicate, no gap.

Besides the two figures the target compares, the same run measures the prototypes of
`benchmarks.proposed` (`--variant hotpath`; and kline_tui/ with benchmarks/proposed.diff applied)
and, for context, the bare loop over aiohttp's WebSocket client (`client baseline-aiohttp`).
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
from pathlib import Path

from benchmarks.common import PY, Children, Row, child_env, read_until, temp_dir, verdict
from benchmarks.proposed import DiffUnavailable, patched_tree

STREAMS = 500
TARGET_RATIO = 0.8


def _names(n: int) -> list[str]:
    return [f"s{i:04d}usdt@kline_1m" for i in range(1, n + 1)]


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _baseline(args: argparse.Namespace) -> dict:
    import orjson
    from websockets.asyncio.client import connect

    names = _names(args.streams)
    first, rest = names[:100], names[100:]
    async with connect(f"{args.url}/market/stream?streams={'/'.join(first)}", max_size=4 * 1024 * 1024,
                       max_queue=4096, compression=None, ping_interval=20, ping_timeout=20) as ws:
        for i in range(0, len(rest), 200):
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": rest[i:i + 200], "id": i + 1}).decode())
        loads, recv = orjson.loads, ws.recv
        loads(await recv())
        n = 1
        t_first = time.perf_counter()
        start = t_first + args.warmup
        end = start + args.seconds
        n0 = c0 = t0 = None
        while True:
            loads(await recv())
            n += 1
            if not n & 255:
                now = time.perf_counter()
                if n0 is None and now >= start:
                    n0, t0, c0 = n, now, _cpu_s()
                elif n0 is not None and now >= end:
                    break
        frames, elapsed, cpu = n - n0, now - t0, _cpu_s() - c0
    return {"mode": "baseline", "frames": frames, "seconds": elapsed, "msgs_per_s": frames / elapsed,
            "cpu_pct": 100 * cpu / elapsed}


async def _baseline_aiohttp(args: argparse.Namespace) -> dict:
    """The same bare loop over aiohttp's WebSocket client (context: what the transport costs)."""
    import aiohttp
    import orjson

    names = _names(args.streams)
    first, rest = names[:100], names[100:]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{args.url}/market/stream?streams={'/'.join(first)}", compress=0,
                                   max_msg_size=4 * 1024 * 1024, heartbeat=20) as ws:
            for i in range(0, len(rest), 200):
                await ws.send_str(orjson.dumps({"method": "SUBSCRIBE", "params": rest[i:i + 200], "id": i + 1}).decode())
            loads, recv = orjson.loads, ws.receive
            loads((await recv()).data)
            n = 1
            start = time.perf_counter() + args.warmup
            end = start + args.seconds
            n0 = c0 = t0 = None
            while True:
                loads((await recv()).data)
                n += 1
                if not n & 255:
                    now = time.perf_counter()
                    if n0 is None and now >= start:
                        n0, t0, c0 = n, now, _cpu_s()
                    elif n0 is not None and now >= end:
                        break
    frames, elapsed, cpu = n - n0, now - t0, _cpu_s() - c0
    return {"mode": "baseline-aiohttp", "frames": frames, "seconds": elapsed, "msgs_per_s": frames / elapsed,
            "cpu_pct": 100 * cpu / elapsed}


async def _pipeline(args: argparse.Namespace) -> dict:
    from kline_tui.binance.markets import Endpoints
    from kline_tui.config import Settings
    from kline_tui.model import Interval, Market, StreamKey
    from kline_tui.recorder.pipeline import Pipeline
    from kline_tui.sim import Simulator

    tmp = Path(tempfile.mkdtemp(prefix="kline-bench-ingest-"))
    sim = Simulator(speed=1.0, extra_symbols=args.streams)
    await sim.start()
    keys = [StreamKey(Market.USDM, f"S{i:04d}USDT", Interval.M1) for i in range(1, args.streams + 1)]
    endpoints = dict(sim.endpoints)
    endpoints[Market.USDM] = Endpoints(ws=f"{args.url}/market", rest=endpoints[Market.USDM].rest)
    settings = Settings(
        config_path=tmp / "none.toml", config_exists=False, data_dir=tmp / "data", watch=tuple(keys),
        endpoints=endpoints, history=0, flush_age_s=args.flush_age,
    )
    pipeline = Pipeline(settings)
    try:
        return await _pipeline_run(args, pipeline, tmp)
    finally:
        await sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _pipeline_run(args: argparse.Namespace, pipeline, tmp: Path) -> dict:
    import kline_tui

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
    finally:
        await pipeline.stop()
    ledgers = pipeline.ledger.streams.values()
    accepted = sum(s.accepted_ws for s in ledgers)
    out = {
        "mode": "pipeline", "variant": args.variant, "kline_tui": str(Path(kline_tui.__file__).parent), "frames": n1 - n0, "seconds": t1 - t0, "msgs_per_s": (n1 - n0) / (t1 - t0),
        "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
        "closed_accepted": accepted,
        "closed_per_s": (a1 - a0) / (t1 - t0),
        "duplicates": sum(s.duplicates for s in ledgers),
        "gaps": sum(s.gaps for s in ledgers),
        "missing": sum(s.missing_count() for s in ledgers),
        "malformed": pipeline.hub.malformed,
        "rows_written": pipeline.sink.stats.rows_written,
        "rows_buffered": pipeline.sink.stats.rows_buffered,
        "flushes_in_window": flushes,
        "last_flush_ms": flush_ms,
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
    p.add_argument("--variant", default="current",
                   help="pipeline only: 'current' (the package as is) or a prototype from benchmarks.proposed")
    args = p.parse_args(argv)
    if args.mode == "pipeline" and args.variant != "current":
        from benchmarks import proposed

        proposed.apply(args.variant)
    run_mode = {"baseline": _baseline, "baseline-aiohttp": _baseline_aiohttp, "pipeline": _pipeline}[args.mode]
    result = asyncio.run(run_mode(args))
    print("result " + json.dumps(result), flush=True)
    return 0


# -- orchestration --------------------------------------------------------------------------------

def start_firehose(children: Children, streams: int = STREAMS) -> tuple[object, str]:
    proc = children.start([PY, "-m", "benchmarks.firehose", "--expect", str(streams), "--max-seconds", "60"])
    line = read_until(proc, "ready", 30)[-1]
    return proc, line.split()[-1]


def run_client(children: Children, mode: str, url: str, seconds: float, extra: list[str] = (),
               tree: Path | None = None) -> dict:
    """One client process; `tree`: a folder holding a patched kline_tui/ to import instead."""
    env = child_env()
    if tree is not None:
        env["PYTHONPATH"] = f"{tree}:{env['PYTHONPATH']}"
    # `python -m` puts the working folder first on sys.path: run a patched tree from inside it.
    proc = children.start([PY, "-m", "benchmarks.ingest", "client", mode, "--url", url,
                           "--seconds", str(seconds), *extra], env=env, cwd=tree)
    try:
        out, err = proc.communicate(timeout=seconds + 90)
    except Exception:
        children.stop(proc)
        raise
    for line in out.splitlines():
        if line.startswith("result "):
            return json.loads(line[7:])
    raise RuntimeError(f"ingest client {mode} failed (exit {proc.returncode}): {err[-3000:]}")


PROTOTYPES = ("hotpath", "diff")


def run(quick: bool) -> list[Row]:
    seconds = 10.0
    rounds = 2 if quick else 3
    proto_rounds = 1 if quick else 2
    results: dict[str, list[dict]] = {name: [] for name in ("baseline", "current", *PROTOTYPES, "baseline-aiohttp")}
    with temp_dir("ingest-diff") as tmp, Children() as children:
        diff_error = ""
        try:
            tree: Path | None = patched_tree(tmp)
        except DiffUnavailable as exc:
            tree, diff_error = None, str(exc)
            results.pop("diff")
            results.pop("hotpath")  # measured against the package as it was before the diff
        hose, url = start_firehose(children)
        for r in range(rounds):
            results["baseline"].append(run_client(children, "baseline", url, seconds))
            results["current"].append(run_client(children, "pipeline", url, seconds))
            if r < proto_rounds:
                for variant in PROTOTYPES:
                    if variant in results:
                        got = run_client(children, "pipeline", url, seconds, ["--variant", variant],
                                         tree=tree if variant == "diff" else None)
                        if variant == "diff" and not got["kline_tui"].startswith(str(tree)):
                            raise RuntimeError(f"the diff run imported {got['kline_tui']}, not the patched tree")
                        results[variant].append(got)
                results["baseline-aiohttp"].append(run_client(children, "baseline-aiohttp", url, seconds))
        children.stop(hose)
    best = {name: max(rs, key=lambda r: r["msgs_per_s"]) for name, rs in results.items()}
    base, pipe = best["baseline"], best["current"]
    ratio = pipe["msgs_per_s"] / base["msgs_per_s"]

    def sane(r: dict) -> bool:
        return r["duplicates"] == 0 and r["gaps"] == 0 and r["malformed"] == 0 and r["missing"] == 0

    def rates(rs: list[dict]) -> str:
        return ", ".join(format(r["msgs_per_s"], ",.0f") for r in rs)

    every = "; ".join(f"{name} [{rates(rs)}]" for name, rs in results.items())
    rows = [
        Row("1 ingest: baseline recv+orjson", f"{base['msgs_per_s']:,.0f} msg/s", "", verdict(None),
            [f"ingest: {STREAMS} usdm 1m streams on one combined-stream connection, 1 frame in 20 a closed "
             f"candle, {seconds:.0f} s windows after 1 s warm-up, best round counts; all rounds, msg/s: {every}",
             f"client CPU in the best window: baseline {base['cpu_pct']:.0f}%, kline-tui {pipe['cpu_pct']:.0f}% "
             f"of one core (all threads, incl. the Parquet writer)"]),
        Row("1 ingest: kline-tui pipeline", f"{pipe['msgs_per_s']:,.0f} msg/s", ">= 0.8x baseline",
            verdict(ratio >= TARGET_RATIO, f"{ratio:.2f}x"),
            [f"kline-tui books after the best run: {pipe['closed_accepted']:,} closed candles accepted "
             f"({pipe['closed_per_s']:,.0f}/s in the window), {pipe['rows_written']:,} rows written in "
             f"{pipe['files']} files ({pipe['flushes_in_window']} flushes in the window, every 2 s), duplicates "
             f"{pipe['duplicates']}, gaps {pipe['gaps']}, malformed {pipe['malformed']}, missing "
             f"{pipe['missing']}: " + ("consistent" if sane(pipe) else "INCONSISTENT")]),
    ]
    aio = best["baseline-aiohttp"]
    rows.append(Row("1 ingest: context, aiohttp recv+orjson", f"{aio['msgs_per_s']:,.0f} msg/s", "",
                    verdict(None, f"{aio['msgs_per_s'] / base['msgs_per_s']:.2f}x"),
                    ["prototypes: 'diff' runs kline_tui/ with benchmarks/proposed.diff applied (aiohttp's WebSocket "
                     "client in Connection, and the hot-path edits); 'hotpath' patches the hot-path edits alone "
                     "in, websockets kept (benchmarks/proposed.py)"]))
    for variant in PROTOTYPES:
        if variant not in best:
            rows.append(Row(f"1 ingest: prototype {variant}", "not run", ">= 0.8x baseline", "skipped",
                            [diff_error] if variant == "diff" else []))
            continue
        r = best[variant]
        x = r["msgs_per_s"] / base["msgs_per_s"]
        rows.append(Row(f"1 ingest: prototype {variant}", f"{r['msgs_per_s']:,.0f} msg/s", ">= 0.8x baseline",
                        verdict(x >= TARGET_RATIO, f"{x:.2f}x") + ("" if sane(r) else " INCONSISTENT")))
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        sys.exit(client_main(sys.argv[2:]))
    for row in run(quick="--quick" in sys.argv):
        print(row)
