"""The Delta table on a real S3 API on loopback (moto's ThreadedMotoServer, started here), written
by `kline-tui record` processes against the simulator: one recorder, twins (one SIGKILLed and
restarted) with a backfill beside them, shards; read back with Polars and delta-rs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from moto.server import ThreadedMotoServer

from kline_tui.model import StreamKey
from kline_tui.store import scan

from .checks import assert_exact_recording, contiguous
from .datasets import stream_rows
from .support import KLINE_TUI, start_record

SECRET = "s3cr3t-" + uuid.uuid4().hex  # must never show in a log line
WATCH = ["spot:BTCUSDT:1m", "usdm:ETHUSDT:1m", "usdm:BTCUSDT:1m", "coinm:BTCUSD_PERP:1m"]
KEYS = [StreamKey.parse(s) for s in WATCH]


@pytest.fixture(scope="module")
def s3():
    """An S3 API on 127.0.0.1 (port chosen by the system) with a bucket; (endpoint, options)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="klines")
    options = {
        "aws_endpoint_url": endpoint,
        "aws_allow_http": "true",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": SECRET,
        "aws_region": "us-east-1",
    }
    yield endpoint, options
    server.stop()


@pytest.fixture
def aws_env(s3, monkeypatch, tmp_path):
    """The standard AWS variables pointing at the server, for the recorders started here (their
    config files then name no credentials)."""
    endpoint, _ = s3
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def config_for(tmp_path: Path, sim, url: str, options: dict | None = None, name="c.toml") -> Path:
    lines = [f'data_dir = "{url}"', "watch = [" + ", ".join(f'"{w}"' for w in WATCH) + "]"]
    for market, ep in sim.endpoints.items():
        lines += [f"[endpoints.{market}]", f'ws = "{ep.ws}"', f'rest = "{ep.rest}"']
    lines += ["[recorder]", "flush_age_s = 1", "history = 20", "reconnect_max_s = 2"]
    lines += ["[storage]", 'format = "delta"']
    if options:
        lines += ["[storage.options]", *(f'{k} = "{v}"' for k, v in options.items())]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_tool(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KLINE_TUI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def stop(proc: asyncio.subprocess.Process) -> int:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 60)


def read_table(url: str, options: dict) -> pl.DataFrame:
    """The table as Polars reads it, in the folder's column types (times in ms); and the same
    rows through delta-rs, checked equal."""
    df = pl.read_delta(url, storage_options=options)
    table = DeltaTable(url, storage_options=options)
    assert table.count() == df.height if hasattr(table, "count") else True
    via_scan = pl.scan_delta(url, storage_options=options).select(pl.len()).collect().item()
    assert via_scan == df.height
    return df.with_columns(pl.col("open_time", "close_time").cast(pl.Datetime("ms", "UTC")))


def assert_one_exact_copy(df: pl.DataFrame, keys: list[StreamKey], min_rows: int) -> None:
    assert df.select("market", "interval", "symbol", "open_time").is_duplicated().sum() == 0
    assert_exact_recording(df, keys, min_rows=min_rows)
    for key in keys:
        assert contiguous(
            key.interval, stream_rows(df, key)["open_time"].dt.epoch("ms").sort().to_list()
        )


async def test_record_verify_and_compact_a_table_on_s3(sim, s3, tmp_path):
    _, options = s3
    url = "s3://klines/one"
    config = config_for(tmp_path, sim, url, options)  # everything in [storage.options]
    log = tmp_path / "record.log"
    rec = await start_record(config, "--status-every", "2", log=log)
    await asyncio.sleep(6)
    assert await stop(rec) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and SECRET not in text
    assert f"recording to {url}" in text
    df = read_table(url, options)
    assert_one_exact_copy(df, KEYS, min_rows=3)
    assert df.schema["open_time"] == pl.Datetime("ms", "UTC")
    assert set(df["source"]) <= {"ws", "rest"}

    code, out, err = await run_tool("verify", "--config", str(config))
    assert code == 0 and out.strip().endswith("clean"), out + err
    code, out, err = await run_tool("compact", "--all", "--config", str(config))
    assert code == 0, out + err
    assert "compacted" in out and "vacuum deleted 0 file(s)" in out and SECRET not in out + err
    after = read_table(url, options)
    assert after.sort("market", "interval", "symbol", "open_time").equals(
        df.sort("market", "interval", "symbol", "open_time")
    )
    # compacted: one file per partition, sorted by (symbol, open_time)
    table = DeltaTable(url, storage_options=options)
    per_folder: dict[str, int] = {}
    for uri in table.file_uris():
        folder = uri.rsplit("/", 1)[0]
        per_folder[folder] = per_folder.get(folder, 0) + 1
    assert set(per_folder.values()) == {1}
    # kline_tui.store.scan on the URL: the same rows as the folder reader's columns
    lf = scan(url, market="usdm", symbol="ETHUSDT", storage_options=options)
    got = lf.collect()
    assert got.height == stream_rows(df, KEYS[1]).height
    assert got.columns[:3] == ["market", "interval", "symbol"]


async def test_a_url_the_store_refuses_is_one_line_before_anything_is_subscribed(
    sim, s3, tmp_path, aws_env
):
    config = config_for(tmp_path, sim, "s3://no-such-bucket/klines")
    code, _, err = await run_tool("record", "--config", str(config))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "cannot use the Delta table at s3://no-such-bucket/klines" in err
    assert SECRET not in err
    assert all(st.connections_opened == 0 for st in sim.stats.values())


async def test_twins_one_killed_and_a_backfill_beside_them_give_one_exact_copy(
    sim, s3, tmp_path, aws_env
):
    _, options = s3
    url = "s3://klines/twins"
    config = config_for(tmp_path, sim, url)  # credentials and endpoint from the environment
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = await start_record(config, "--status-every", "2", log=logs[0])
    b = await start_record(config, "--status-every", "2", log=logs[1])
    await asyncio.sleep(5)
    b.send_signal(signal.SIGKILL)
    assert await b.wait() == -signal.SIGKILL
    # a backfill of an hour before beside the live twin, through the same MERGE
    first = (await sim_now(sim)) - 90 * 60_000
    backfill = asyncio.ensure_future(
        run_tool("backfill", "usdm:ETHUSDT:1m", "--from", iso(first), "--config", str(config))
    )
    await asyncio.sleep(2)
    b = await start_record(config, "--status-every", "2", log=logs[1])
    code, out, err = await backfill
    assert code == 0, out + err
    await asyncio.sleep(5)
    assert await stop(a) == 0, logs[0].read_text()[-3000:]
    assert await stop(b) == 0, logs[1].read_text()[-3000:]
    for path in logs:
        text = path.read_text()
        assert "Traceback" not in text and SECRET not in text
    df = read_table(url, options)
    assert_one_exact_copy(df, KEYS, min_rows=5)
    eth = stream_rows(df, StreamKey.parse("usdm:ETHUSDT:1m"))
    assert eth["open_time"].dt.epoch("ms").min() <= first + 60_000
    code, out, err = await run_tool("verify", "--config", str(config))
    assert code == 0, out + err


async def test_shards_fill_one_table_each_with_its_streams(sim, s3, tmp_path, aws_env):
    _, options = s3
    url = "s3://klines/shards"
    config = config_for(tmp_path, sim, url)
    logs = [tmp_path / f"shard{i}.log" for i in (1, 2)]
    procs = [
        await start_record(config, "--shard", f"{i}/2", "--status-every", "2", log=logs[i - 1])
        for i in (1, 2)
    ]
    await asyncio.sleep(6)
    for proc, log in zip(procs, logs, strict=True):
        assert await stop(proc) == 0, log.read_text()[-3000:]
    df = read_table(url, options)
    assert_one_exact_copy(df, KEYS, min_rows=3)
    for i, log in enumerate(logs, start=1):
        mine = [k for k in KEYS if k.shard(2) == i]
        assert f"watching {len(mine)} streams" in log.read_text()


async def sim_now(sim) -> int:
    return sim.clock.now_ms()


def iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M")


def test_writers_committing_at_once_on_s3_lose_nothing_and_write_nothing_twice(s3):
    """Commits race on the object store itself: each commit file is created with a conditional
    put, so a writer that loses the race retries rather than overwriting the winner's commit."""
    import threading

    from kline_tui.model import Interval, Market
    from kline_tui.store.delta import DeltaDataset

    from .datasets import MINUTE, day_ms, synthetic_rows

    _, options = s3
    url = "s3://klines/race"
    DeltaDataset(url, options).acquire()
    writers = [DeltaDataset(url, options) for _ in range(4)]
    start = day_ms("2025-03-01")
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for step in range(5):  # each writer its own symbol: every commit must survive
                rows = synthetic_rows([f"SYM{i}USDT"], Interval.M1, start + step * 10 * MINUTE, 10)
                writers[i].write_rows(Market.USDM, Interval.M1, "2025-03-01", rows)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    df = pl.read_delta(url, storage_options=options)
    assert df.height == 4 * 50
    assert df.select("symbol", "open_time").is_duplicated().sum() == 0
    assert sum(w.stats.conflicts for w in writers) > 0  # they did race
