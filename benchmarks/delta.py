"""6. The Delta table: flush latency as the table grows, commit conflicts between twins and
between shards, and full-market CPU against the Parquet folder.

- **flush**: one 1,000-row flush (1,000 usdm 1m symbols, one minute) through the real sink into
  a local Delta table holding 0, 1M and 10M rows: p50 and p95 of `repeat` flushes per level. The
  stored rows are appended as commits of 100,000 rows (1,000 symbols x 100 minutes, each commit
  one file), so 10M rows are 100 files over a week of day partitions plus the log's
  checkpoints; the flushes land in the newest partition. Each flush is one MERGE restricted to
  its partition; delta-rs also prunes that partition's files by their open_time statistics, so
  the cost follows the batch, not the table.
- **conflicts**: two processes on one local table flush at the same ticks (a twin or a shard
  receives the same closes at the same moment; jitter up to 50 ms), `rounds` flushes each, as
  an hour of one-minute flushes compressed to one flush a second. Twins flush the same 1,000
  rows; shards 1,000 rows each of different symbols in the same partitions. Reported: commit
  conflicts (each a retry) per hour, flush p95 with them, and rows written twice (from the
  table: must be 0).
- **full market**: `kline-tui record` on 2,160 streams at real pacing (benchmarks.fullmarket),
  once into a Parquet folder and once into a local Delta table, CPU compared in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue
import random
import statistics
import time
from collections.abc import Iterator

from benchmarks.common import Children, Row, temp_dir, verdict

SYMBOLS = 1000  # per flush
STORED_SYMBOLS = 2000  # in the grown table, and the streams a resume asks about
RESUME_S = 5.0
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MINUTE = 60_000
LEVELS = (0, 1_000_000, 10_000_000)
COMMIT_ROWS = 100_000
FLUSH_P95_MS = 300.0
CPU_RATIO = 1.5
WARMUP = 3


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- flush latency as the table grows ----------------------------------------------------------


def _grow(location: str, have: int, want: int) -> None:
    import polars as pl
    from deltalake import write_deltalake

    from benchmarks.common import synthetic_frame
    from kline_tui.store.delta import DELTA_SCHEMA, PARTITIONS

    minutes = COMMIT_ROWS // STORED_SYMBOLS
    names = [f"S{i:04d}USDT" for i in range(1, STORED_SYMBOLS + 1)]
    sym = pl.Series("symbol", names * minutes)
    m = pl.int_range(0, COMMIT_ROWS, eager=True) // STORED_SYMBOLS
    for c in range(have // COMMIT_ROWS, want // COMMIT_ROWS):
        frame = synthetic_frame(sym, m + c * minutes, T0).with_columns(
            pl.col("open_time", "close_time").cast(pl.Datetime("us", "UTC")),
            market=pl.lit("usdm"),
            interval=pl.lit("1m"),
            date=pl.col("open_time").dt.date(),
        )
        write_deltalake(
            location, frame.select(list(DELTA_SCHEMA)), partition_by=PARTITIONS, mode="append"
        )


def flush_rows(quick: bool) -> list[Row]:
    from benchmarks import flush
    from kline_tui.model import Interval, Market, StreamKey
    from kline_tui.store.delta import DeltaDataset

    repeat = 10 if quick else 30
    out: dict[int, tuple[float, float]] = {}
    resume: dict[int, float] = {}
    keys = [
        StreamKey(Market.USDM, f"S{i:04d}USDT", Interval.M1) for i in range(1, STORED_SYMBOLS + 1)
    ]
    grow_s = 0.0
    with temp_dir("delta-flush") as root:
        location = str(root / "table")
        dataset = DeltaDataset(location)
        dataset.acquire()
        have = 0
        for level in LEVELS:
            started = time.perf_counter()
            _grow(location, have, level)
            grow_s += time.perf_counter() - started
            have = level
            times = asyncio.run(flush._flushes(dataset, level // STORED_SYMBOLS + 10_000, repeat))
            out[level] = (statistics.median(times), _p(times, 0.95))
            started = time.perf_counter()
            held = DeltaDataset(location).held(keys)  # a fresh process's view: no cache
            resume[level] = time.perf_counter() - started
            assert level == 0 or len(held) == STORED_SYMBOLS
    flat = max(p95 for _, p95 in out.values()) / max(min(p95 for _, p95 in out.values()), 1e-9)
    rows = [
        Row(
            f"6 delta flush 1k rows, {level:,} stored",
            f"p50 {med:.0f} ms / p95 {p95:.0f} ms",
            f"p95 <= {FLUSH_P95_MS:.0f} ms",
            verdict(p95 <= FLUSH_P95_MS, f"{p95 / FLUSH_P95_MS:.2f}x of budget"),
        )
        for level, (med, p95) in out.items()
    ]
    rows.append(
        Row(
            f"6 delta resume: held + holes of {STORED_SYMBOLS:,} streams, {LEVELS[-1]:,} rows",
            f"{resume[LEVELS[-1]]:.2f} s",
            f"<= {RESUME_S:.0f} s",
            verdict(resume[LEVELS[-1]] <= RESUME_S, f"{resume[LEVELS[-1]] / RESUME_S:.2f}x"),
            [
                "delta resume at each level: "
                + ", ".join(f"{lvl:,} rows {s:.2f} s" for lvl, s in resume.items())
            ],
        )
    )
    rows.append(
        Row(
            "6 delta flush flatness",
            f"max/min p95 {flat:.2f}",
            "flat (<= 1.5)",
            verdict(flat <= 1.5),
            [
                f"delta flush: {repeat} flushes of 1,000 rows per level through ParquetSink into "
                f"a local DeltaDataset (one MERGE each); table grown in {grow_s:.0f} s by "
                f"commits of {COMMIT_ROWS:,} rows"
            ],
        )
    )
    return rows


# -- twins and shards ---------------------------------------------------------------------------


def _writer(
    location: str,
    options: dict,
    who: int,
    kind: str,
    rounds: int,
    tick_s: float,
    start_at: float,
    q,
):
    """One recorder's flushes: at each tick (plus jitter), 1,000 rows as one MERGE."""
    import polars as pl

    from benchmarks.common import synthetic_frame
    from kline_tui.model import Interval, Market
    from kline_tui.store.delta import DeltaDataset

    dataset = DeltaDataset(location, options)
    offset = 0 if kind == "twins" else who * SYMBOLS
    symbols = pl.Series("symbol", [f"S{offset + i:04d}USDT" for i in range(1, SYMBOLS + 1)])
    rng = random.Random(who)
    latencies, inserted = [], 0
    for r in range(rounds):
        wake = start_at + r * tick_s + rng.uniform(0, 0.05)
        time.sleep(max(0.0, wake - time.time()))
        frame = synthetic_frame(symbols, pl.repeat(r, SYMBOLS, dtype=pl.Int64, eager=True), T0)
        started = time.perf_counter()
        inserted += dataset.write_rows(Market.USDM, Interval.M1, "2026-01-01", frame)
        latencies.append((time.perf_counter() - started) * 1000)
    q.put((who, latencies, dataset.stats.conflicts, dataset.stats.commits, inserted))


@contextlib.contextmanager
def _s3() -> Iterator[dict[str, str]]:
    """moto's S3 API on loopback with a bucket (the test extra has it); storage options."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "aws_endpoint_url": f"http://{host}:{port}",
        "aws_allow_http": "true",
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
        "aws_region": "us-east-1",
    }
    boto3.client(
        "s3",
        endpoint_url=options["aws_endpoint_url"],
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
    ).create_bucket(Bucket="bench")
    try:
        yield options
    finally:
        server.stop()


def conflicts(quick: bool, store: str = "local") -> list[Row]:
    """Twins and shards on one table, `store` a local folder or moto's S3 on loopback."""
    import polars as pl

    from kline_tui.store.delta import DeltaDataset

    rounds = 30 if quick else 60
    # An hour of one-minute flushes compressed to a flush a second locally; on S3 a MERGE takes
    # a good part of a second, so ticks that close would measure a pile-up no real minute sees.
    tick_s = 1.0 if store == "local" else 3.0
    rows = []
    for kind in ("twins", "shards"):
        with (
            temp_dir(f"delta-{kind}") as root,
            _s3() if store == "s3" else contextlib.nullcontext({}) as options,
        ):
            location = f"s3://bench/{kind}" if store == "s3" else str(root / "table")
            DeltaDataset(location, options).acquire()
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            start_at = time.time() + 3.0  # both processes up and imported
            procs = [
                ctx.Process(
                    target=_writer,
                    args=(location, options, w, kind, rounds, tick_s, start_at, q),
                )
                for w in range(2)
            ]
            for p in procs:
                p.start()
            results = []
            deadline = time.monotonic() + rounds * tick_s + 600
            while len(results) < len(procs):
                try:
                    results.append(q.get(timeout=1.0))
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead or time.monotonic() > deadline:
                        for p in procs:
                            p.kill()
                        raise RuntimeError(f"a {kind} writer died or hung") from None
            for p in procs:
                p.join(60)
            table = pl.read_delta(location, storage_options=options or None)
            twice = table.height - table.select("symbol", "open_time").n_unique()
        lat = [x for _, ls, _, _, _ in results for x in ls]
        n_conflicts = sum(c for _, _, c, _, _ in results)
        per_hour = n_conflicts * 60 / rounds  # one flush a minute per recorder
        inserted = sum(i for *_, i in results)
        rows.append(
            Row(
                f"6 delta {kind} ({store}): conflicts",
                f"{per_hour:.0f}/h ({n_conflicts} retries in {2 * rounds} flushes); "
                f"flush p95 {_p(lat, 0.95):.0f} ms",
                "rows written twice = 0",
                verdict(twice == 0, f"{twice} twice"),
                [
                    f"delta {kind}: 2 processes x {rounds} flushes of 1,000 rows at the same "
                    f"ticks {tick_s:g} s apart (jitter <= 50 ms) on a {store} table; "
                    f"p50 {_p(lat, 0.5):.0f} ms, "
                    f"max {max(lat):.0f} ms; rows inserted {inserted:,} of "
                    f"{2 * rounds * SYMBOLS:,} offered; table {table.height:,} rows"
                ],
            )
        )
    return rows


# -- full market: CPU against the folder --------------------------------------------------------


def full_market_cpu(quick: bool) -> list[Row]:
    from benchmarks import fullmarket

    seconds = 60.0 if quick else 300.0
    watch = fullmarket.full_market()
    figures = {}
    with temp_dir("delta-fullmarket") as root, Children() as children:
        sim, endpoints = fullmarket.start_sim(children)
        for fmt in ("parquet", "delta"):
            config = fullmarket.write_config(
                root / f"{fmt}.toml", root / f"data-{fmt}", endpoints, watch
            )
            config.write_text(config.read_text() + f'\n[storage]\nformat = "{fmt}"\n')
            figures[fmt] = fullmarket._headless(children, config, seconds, sim.pid, root)
        children.stop(sim)
    ratio = figures["delta"]["cpu_mean"] / max(figures["parquet"]["cpu_mean"], 1e-9)
    return [
        Row(
            "6 full market CPU, delta vs parquet",
            f"{figures['delta']['cpu_mean']:.1f}% vs {figures['parquet']['cpu_mean']:.1f}% "
            f"({ratio:.2f}x)",
            f"<= {CPU_RATIO}x",
            verdict(ratio <= CPU_RATIO, f"{ratio:.2f}x"),
            [
                f"full market on delta: {len(watch)} streams, {seconds:.0f} s each after the "
                f"warm-up, same simulator; RSS max parquet {figures['parquet']['rss_max']:.0f} "
                f"MB, delta {figures['delta']['rss_max']:.0f} MB; last status (delta): "
                f"{figures['delta']['status']}"
            ],
        )
    ]


def run(quick: bool) -> list[Row]:
    return [*flush_rows(quick), *conflicts(quick), *full_market_cpu(quick)]


if __name__ == "__main__":
    import sys

    only = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--part=")), None)
    parts = {
        "flush": flush_rows,
        "conflicts": conflicts,
        "conflicts-s3": lambda quick: conflicts(quick, "s3"),
        "fullmarket": full_market_cpu,
    }
    chosen = [parts[only]] if only else list(parts.values())
    for part in chosen:
        for row in part("--quick" in sys.argv):
            print(row)
