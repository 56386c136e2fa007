"""`kline-tui import` of data.binance.vision archives, built here in the archives' exact format."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import polars as pl

from kline_tui.cli.import_ import main as import_main
from kline_tui.model import Interval, StreamKey
from kline_tui.sim import candle_at

from .checks import assert_matches_simulator
from .datasets import day_ms, expected_frame, read_dataset, write_raw_part

HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def opens_of(interval: Interval, first: int, count: int) -> list[int]:
    out, t = [], first
    for _ in range(count):
        out.append(t)
        t = interval.next_open(t)
    return out


def archive_csv(key: StreamKey, opens: list[int], *, micros: bool, header: bool) -> bytes:
    """Rows as Binance writes them: the exchange's own number strings, a trailing `ignore`."""
    lines = [HEADER] if header else []
    for t in opens:
        c = candle_at(key.market, key.symbol, key.interval, t)
        ot, ct = (c.t * 1000, c.T * 1000 + 999) if micros else (c.t, c.T)
        lines.append(f"{ot},{c.o},{c.h},{c.l},{c.c},{c.v},{ct},{c.q},{c.n},{c.V},{c.Q},0")
    return ("\n".join(lines) + "\n").encode()


def make_zip(
    root: Path, folder: str, name: str, csv: bytes, checksum: str | None = "right"
) -> Path:
    """`<root>/<folder>/<name>.zip` holding `<name>.csv`, and its `.CHECKSUM` beside it."""
    where = root / folder
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}.csv", csv)
    if checksum is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if checksum == "wrong":
            digest = digest[::-1]
        (where / f"{name}.zip.CHECKSUM").write_text(f"{digest}  {name}.zip\n")
    return path


CASES = [
    # key, folder under data/, file date, first open, count, micros, header
    ("spot:BTCUSDT:1m", "spot/daily", "2025-01-01", "2025-01-01", 1440, True, False),
    ("spot:ETHUSDT:1h", "spot/monthly", "2024-12", "2024-12-01", 744, False, False),
    ("spot:BTCUSDT:1M", "spot/monthly", "2024-11", "2024-11-01", 1, False, False),
    ("usdm:BTCUSDT:1m", "futures/um/daily", "2025-01-02", "2025-01-02", 1440, False, True),
    ("coinm:BTCUSD_PERP:1d", "futures/cm/monthly", "2024-12", "2024-12-01", 31, False, True),
]


def build_archives(root: Path) -> dict[StreamKey, list[int]]:
    want = {}
    for spec, folder, label, first, count, micros, header in CASES:
        key = StreamKey.parse(spec)
        opens = opens_of(key.interval, day_ms(first), count)
        iv = key.interval.path_label  # the archives name the month `1mo`
        make_zip(
            root,
            f"data/{folder}/klines/{key.symbol}/{iv}",
            f"{key.symbol}-{iv}-{label}",
            archive_csv(key, opens, micros=micros, header=header),
        )
        want[key] = opens
    return want


def test_import_archives_of_all_three_markets(tmp_path, capsys):
    want = build_archives(tmp_path / "vision")
    data = tmp_path / "data"
    # The spot file really is in microseconds and header-less, the futures one has a header.
    spot = tmp_path / "vision/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-01.zip"
    first_line = zipfile.ZipFile(spot).read("BTCUSDT-1m-2025-01-01.csv").split(b"\n")[0]
    assert (
        first_line.startswith(b"1735689600000000,")
        and first_line.split(b",")[6] == b"1735689659999999"
    )

    assert import_main([str(tmp_path / "vision" / "data"), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"imported 5 archive(s): {sum(map(len, want.values()))} candles" in out

    df = read_dataset(data)
    assert set(df["source"]) == {"archive"}
    for key, opens in want.items():
        assert assert_matches_simulator(df, key) == opens, key
    assert (data / "market=spot" / "interval=1mo" / "date=2024-01-01").is_dir()
    assert (data / "market=coinm" / "interval=1d" / "date=2024-01-01").is_dir()

    # Again: everything is held already, nothing is added.
    assert import_main([str(tmp_path / "vision"), "--data-dir", str(data)]) == 0
    assert "0 new" in capsys.readouterr().out
    assert read_dataset(data).height == df.height


def test_a_wrong_checksum_is_refused_before_anything_is_written(tmp_path, capsys):
    root = tmp_path / "vision"
    key = StreamKey.parse("usdm:ETHUSDT:5m")
    opens = opens_of(key.interval, day_ms("2025-02-01"), 288)
    make_zip(
        root,
        "data/futures/um/daily/klines/ETHUSDT/5m",
        "ETHUSDT-5m-2025-02-01",
        archive_csv(key, opens, micros=False, header=True),
    )
    make_zip(
        root,
        "data/futures/um/daily/klines/ETHUSDT/5m",
        "ETHUSDT-5m-2025-02-02",
        archive_csv(
            key, opens_of(key.interval, day_ms("2025-02-02"), 288), micros=False, header=True
        ),
        checksum="wrong",
    )
    data = tmp_path / "data"
    assert import_main([str(root), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ETHUSDT-5m-2025-02-02.zip: checksum mismatch" in err[0]
    assert list(data.rglob("*.parquet")) == [] if data.exists() else True


def test_a_plain_csv_with_flags_skips_what_is_held(tmp_path, capsys):
    key = StreamKey.parse("usdm:ETHUSDT:5m")
    opens = opens_of(key.interval, day_ms("2025-03-01"), 288)
    data = tmp_path / "data"
    held = opens[100:150]
    write_raw_part(data, key.market, key.interval, expected_frame(key, held, "ws"))
    csv = tmp_path / "export.csv"
    csv.write_bytes(archive_csv(key, opens, micros=False, header=True))

    assert (
        import_main(
            [
                str(csv),
                "--market",
                "usdm",
                "--symbol",
                "ETHUSDT",
                "--interval",
                "5m",
                "--data-dir",
                str(data),
            ]
        )
        == 0
    )
    assert "export.csv: usdm:ETHUSDT:5m, 288 candles, 238 new" in capsys.readouterr().out
    df = read_dataset(data)
    assert assert_matches_simulator(df, key) == opens
    held_rows = df.filter(pl.col("open_time").dt.epoch("ms").is_in(held))
    assert set(held_rows["source"]) == {"ws"}  # the live rows were kept, not doubled


def test_import_mistakes_end_in_one_line(tmp_path, capsys):
    key = StreamKey.parse("usdm:BTCUSDT:1m")
    csv = archive_csv(
        key, opens_of(key.interval, day_ms("2025-01-02"), 10), micros=False, header=True
    )
    in_tree = make_zip(
        tmp_path, "data/futures/um/daily/klines/BTCUSDT/1m", "BTCUSDT-1m-2025-01-02", csv
    )
    loose = make_zip(tmp_path, "downloads", "BTCUSDT-1m-2025-01-02", csv, checksum=None)
    junk = tmp_path / "junk.csv"
    junk.write_text("hello,world\n1,2\n")
    data = str(tmp_path / "data")
    cases = [
        ([str(tmp_path / "nope.zip")], "no such file"),
        ([str(in_tree), "--market", "spot"], "its path says market usdm, but --market spot"),
        ([str(loose)], "cannot tell the market from the path; pass --market"),
        (
            [str(junk), "--market", "spot", "--symbol", "BTCUSDT", "--interval", "1m"],
            "not a kline archive",
        ),
        ([str(loose), "--market", "usdm", "--interval", "1s"], "its path says interval 1m"),
        ([str(tmp_path / "downloads"), "--market", "coinm"], "coinm"),
    ]
    for args, words in cases:
        assert import_main([*args, "--data-dir", data]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (args, err)
        assert "Traceback" not in err[0]
    assert import_main([str(loose), "--market", "usdm", "--data-dir", data]) == 0
