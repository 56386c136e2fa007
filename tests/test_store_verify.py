"""verify finds planted gaps, duplicates and a corrupt file; --repair fixes them from the
simulator's REST, with the simulator's exact candles."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl

from kline_tui.cli.verify import main as verify_main
from kline_tui.model import Interval, StreamKey
from kline_tui.store import layout
from kline_tui.store.read import part_files
from kline_tui.store.verify import verify_dataset

from .checks import assert_matches_simulator, contiguous
from .datasets import DAY, expected_frame, read_dataset, write_raw_part
from .support import write_config

BTC = StreamKey.parse("spot:BTCUSDT:1m")
ETH = StreamKey.parse("usdm:ETHUSDT:5m")


def build(
    data: Path, key: StreamKey, first: int, count: int, per_part: int, skip: range = range(0)
) -> list[int]:
    """The simulator's candles of `key` in parts of `per_part`, leaving out the indexes in
    `skip`."""
    step = key.interval.ms
    opens = [first + i * step for i in range(count) if i not in skip]
    for i in range(0, len(opens), per_part):
        write_raw_part(
            data, key.market, key.interval, expected_frame(key, opens[i : i + per_part], "ws")
        )
    return opens


async def test_verify_finds_and_repair_fixes(sim, tmp_path, capsys):
    data = tmp_path / "data"
    now = sim.clock.now_ms()
    first = Interval.D1.open_time_at(now) - 3 * DAY  # three whole days, all closed
    # BTC: 3 days of 1m in parts of 200, with a 25-candle gap on day 2.
    gap = range(1440 + 100, 1440 + 125)
    build(data, BTC, first, 3 * 1440, 200, skip=gap)
    # ETH: 3 days of 5m, with two gaps, and duplicates (a REST copy of 30 candles).
    build(data, ETH, first, 3 * 288, 100, skip=range(10, 13))
    eth_opens = [first + i * 300_000 for i in range(3 * 288)]
    write_raw_part(data, ETH.market, ETH.interval, expected_frame(ETH, eth_opens[400:430], "rest"))
    # A corrupt file: a BTC part of day 3 whose candles are held nowhere else.
    day3 = layout.partition_dir(
        data, BTC.market, BTC.interval, layout.bucket_of(BTC.interval, first + 2 * DAY)
    )
    corrupt = part_files(day3)[2]
    corrupt_rows = pl.read_parquet(corrupt).height
    raw = bytearray(corrupt.read_bytes())
    raw[len(raw) // 3 : len(raw) // 3 + 64] = b"\x00" * 64
    corrupt.write_bytes(bytes(raw))

    report = verify_dataset(data)
    btc, eth = report.streams[BTC], report.streams[ETH]
    assert report.unreadable == [corrupt]
    assert btc.gaps[0] == (first + gap.start * 60_000, first + (gap.stop - 1) * 60_000)
    assert len(btc.gaps) == 2 and btc.missing == len(gap) + corrupt_rows  # the corrupt file's rows
    assert btc.first == first and btc.duplicates == 0
    assert eth.gaps == [(first + 10 * 300_000, first + 12 * 300_000)]
    assert eth.duplicates == 30 and eth.candles == 3 * 288 - 3
    assert eth.first == first and eth.last == first + (3 * 288 - 1) * 300_000

    assert await asyncio.to_thread(verify_main, ["--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert "usdm:ETHUSDT:5m" in out and "30 duplicates" in out and "1 gap (3 missing)" in out
    assert f"unreadable file: {corrupt.relative_to(data)}" in out
    # One stream alone: the other's problems are not reported.
    assert await asyncio.to_thread(verify_main, ["usdm:ETHUSDT:5m", "--data-dir", str(data)]) == 1
    assert "spot:BTCUSDT" not in capsys.readouterr().out

    cfg = write_config(tmp_path / "config.toml", sim.endpoints)
    code = await asyncio.to_thread(
        verify_main, ["--repair", "--data-dir", str(data), "--config", str(cfg)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.rstrip().endswith("clean")

    df = read_dataset(data)
    for key, count in ((BTC, 3 * 1440), (ETH, 3 * 288)):
        opens = assert_matches_simulator(df, key)  # every row the simulator's, none twice
        assert len(opens) == count and opens[0] == first and contiguous(key.interval, opens)
    assert set(df.filter(pl.col("symbol") == "BTCUSDT")["source"]) == {"ws", "rest"}
    assert not corrupt.exists()
    assert [p.name for p in layout.quarantine_dir(data).iterdir()] == [
        "." + corrupt.relative_to(data).as_posix().replace("/", "__") + ".corrupt"
    ]
    assert verify_dataset(data).clean


def test_verify_usage_errors(tmp_path, capsys):
    assert verify_main(["spot:BTCUSDT", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "invalid stream" in err and len(err.strip().splitlines()) == 1
    assert verify_main(["--data-dir", str(tmp_path / "missing")]) == 2
    assert "no data directory" in capsys.readouterr().err
    assert verify_main(["--config", str(tmp_path / "none.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_verify_clean_and_absent_streams(tmp_path, capsys):
    data = tmp_path / "data"
    first = 1_767_225_600_000
    build(data, BTC, first, 100, 50)
    assert verify_main(["--data-dir", str(data)]) == 0
    assert (
        "spot:BTCUSDT:1m  2026-01-01 00:00 to 2026-01-01 01:39  100 candles  ok"
        in capsys.readouterr().out
    )
    assert verify_main(["spot:BTCUSDT:1m", "spot:ETHUSDT:1m", "--data-dir", str(data)]) == 1
    assert "spot:ETHUSDT:1m  no candles held" in capsys.readouterr().out


async def test_repair_reports_a_rest_error_in_one_line(sim, tmp_path, capsys):
    data = tmp_path / "data"
    unknown = StreamKey.parse("spot:NOPEUSDT:1m")
    first = Interval.D1.open_time_at(sim.clock.now_ms()) - 2 * DAY
    frame = expected_frame(BTC, [first + i * 60_000 for i in range(300) if not 50 <= i < 60], "ws")
    write_raw_part(
        data, unknown.market, unknown.interval, frame.with_columns(symbol=pl.lit("NOPEUSDT"))
    )
    cfg = write_config(tmp_path / "config.toml", sim.endpoints)
    code = await asyncio.to_thread(
        verify_main, ["--repair", "--data-dir", str(data), "--config", str(cfg)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "kline-tui verify: spot /api/v3/klines: HTTP 400 Invalid symbol."
    ]


def test_verify_beside_a_running_compaction_reports_no_phantoms(tmp_path):
    """Files swapped away while verify reads them are not 'unreadable', and nothing is missed."""
    import threading

    from kline_tui.store.compact import Compactor

    data = tmp_path / "data"
    first = 1_767_225_600_000
    for day in range(6):
        build(data, BTC, first + day * DAY, 1440, 40)  # 36 parts a day
    reports = []
    done = threading.Event()

    def compact():
        Compactor(data).run(None)
        done.set()

    thread = threading.Thread(target=compact)
    thread.start()
    while not done.is_set():
        reports.append(verify_dataset(data))
    thread.join()
    reports.append(verify_dataset(data))
    for report in reports:
        assert report.unreadable == []
        assert report.streams[BTC].candles == 6 * 1440 and report.streams[BTC].clean
    assert len(list(data.rglob("*.parquet"))) == 6
