"""Every kind of kline in the dataset (issue 13): the `market=usdm-mark` partitions beside trade
rows written as before, read by the plain readers with no options, `scan(kind=)`, resume,
compaction, verify and repair, the Delta table, and the import of each kind's archives."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import duckdb
import polars as pl
import pytest

from kline_tui.binance.rest import RestClient
from kline_tui.cli.import_ import main as import_main
from kline_tui.cli.verify import main as verify_main
from kline_tui.model import Interval, Kind, Market, SpecError, StreamKey
from kline_tui.store import layout, scan
from kline_tui.store.compact import Compactor
from kline_tui.store.dataset import StorageSpec, open_dataset
from kline_tui.store.delta import DeltaDataset
from kline_tui.store.folder import ParquetFolder
from kline_tui.store.parts import NO_VOLUME_COLUMNS
from kline_tui.store.read import READ_SCHEMA, part_files
from kline_tui.store.schema import PARQUET_SCHEMA
from kline_tui.store.verify import render, verify_dataset

from .datasets import DAY, MINUTE, canonical, day_ms, expected_frame, synthetic_rows, write_raw_part
from .support import write_config
from .test_store_archive import HEADER, make_zip, opens_of

M1 = Interval.M1
D1 = day_ms("2025-03-01")

# Trade streams, written exactly as today's main writes them (no kind anywhere in the call).
TRADE = [StreamKey.parse(s) for s in ("usdm:BTCUSDT:1m", "coinm:BTCUSD_PERP:1m", "spot:BTCUSDT:1m")]
# A stream of every other kind on each futures market (index and continuous keyed by pair).
OTHERS = [
    StreamKey.parse(s)
    for s in (
        "usdm:BTCUSDT:1m:mark",
        "usdm:BTCUSDT:1m:index",
        "usdm:BTCUSDT:1m:premium",
        "usdm:BTCUSDT:1m:perpetual",
        "usdm:BTCUSDT:1m:current_quarter",
        "usdm:BTCUSDT:1m:next_quarter",
        "coinm:BTCUSD_PERP:1m:mark",
        "coinm:BTCUSD:1m:index",
        "coinm:BTCUSD_PERP:1m:premium",
        "coinm:BTCUSD:1m:perpetual",
        "coinm:BTCUSD:1m:current_quarter",
        "coinm:BTCUSD:1m:next_quarter",
    )
]
ALL = TRADE + OTHERS


def rows_of(key: StreamKey, first: int = D1, count: int = 90) -> pl.DataFrame:
    """Rows of one stream as a writer hands them: volume fields filled in whatever the kind
    (the sink's CandleRow tuples always hold them); prices told apart per kind."""
    salt = 1000.0 * list(Kind).index(key.kind)
    return synthetic_rows([key.symbol], key.interval, first, count, salt=salt)


def as_stored(key: StreamKey, frame: pl.DataFrame) -> pl.DataFrame:
    """What the dataset must hold of `frame`: the volume fields NULL for a kind without them."""
    if key.kind.has_volume:
        return frame
    return frame.with_columns(pl.lit(None, PARQUET_SCHEMA[c]).alias(c) for c in NO_VOLUME_COLUMNS)


def mixed_folder(data: Path, count: int = 90) -> dict[StreamKey, pl.DataFrame]:
    """A folder of trade rows written the way main writes them (the sink's `write_rows` call
    and the test fixtures' raw parts) and rows of every other kind; returns what each stream
    must read back as."""
    folder = ParquetFolder(data)
    want = {}
    for i, key in enumerate(TRADE):
        frame = rows_of(key, count=count)
        if i % 2:
            write_raw_part(data, key.market, key.interval, frame)
        else:
            bucket = layout.bucket_of(key.interval, D1)
            assert bucket is not None
            folder.write_rows(key.market, key.interval, bucket, list(frame.iter_rows()))
        want[key] = frame
    for key in OTHERS:
        frame = rows_of(key, count=count)
        folder.write_frame(key.market, key.interval, frame, key.kind)
        want[key] = as_stored(key, frame)
    return want


def expected_hive(want: dict[StreamKey, pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(
        [f.with_columns(market=pl.lit(k.partition), interval=pl.lit("1m")) for k, f in want.items()]
    )


def hive_rows(df: pl.DataFrame) -> pl.DataFrame:
    cols = ["market", "interval", *PARQUET_SCHEMA]
    return df.select(cols).cast({**PARQUET_SCHEMA, "market": pl.String(), "interval": pl.String()})


def test_plain_readers_read_a_mixed_folder_with_no_options(tmp_path):
    data = tmp_path / "data"
    want = mixed_folder(data)
    folders = sorted(p.name for p in data.iterdir() if p.name.startswith("market="))
    assert folders == sorted(f"market={k.partition}" for k in ALL)
    assert "market=usdm" in folders and "market=coinm-next_quarter" in folders
    # Every file the same depth and the same columns.
    files = sorted(data.rglob("*.parquet"))
    assert {len(p.relative_to(data).parts) for p in files} == {4}
    assert {tuple(pl.read_parquet_schema(p).items()) for p in files} == {
        tuple(PARQUET_SCHEMA.items())
    }
    expected = canonical_hive(expected_hive(want))

    glob = f"{data}/**/*.parquet"
    polars_glob = pl.scan_parquet(glob, hive_partitioning=True).collect()
    assert canonical_hive(hive_rows(polars_glob)).equals(expected)
    polars_folder = pl.scan_parquet(data, hive_partitioning=True, hidden_file_prefix=".").collect()
    assert canonical_hive(hive_rows(polars_folder)).equals(expected)
    duck = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").pl()
    assert canonical_hive(hive_rows(duck)).equals(expected)

    # `WHERE market = 'usdm-mark'` selects exactly the mark rows, their volume fields NULL.
    mark = StreamKey.parse("usdm:BTCUSDT:1m:mark")
    got = duckdb.sql(
        f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true) WHERE market = 'usdm-mark'"
    ).pl()
    assert canonical(got.cast(PARQUET_SCHEMA)).equals(canonical(want[mark]))
    nulls = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true) "
        "WHERE market = 'usdm-mark' AND volume IS NULL AND quote_volume IS NULL "
        "AND taker_buy_volume IS NULL AND taker_buy_quote_volume IS NULL AND trades IS NULL"
    ).fetchall()
    assert nulls == [(90,)]
    by_polars = polars_glob.filter(pl.col("market") == "usdm-mark")
    assert by_polars.height == 90
    assert all(by_polars[c].null_count() == 90 for c in NO_VOLUME_COLUMNS)
    # Continuous klines keep their volume; trade rows are untouched.
    for spec in ("usdm:BTCUSDT:1m", "coinm:BTCUSD:1m:next_quarter"):
        rows = polars_glob.filter(pl.col("market") == StreamKey.parse(spec).partition)
        assert rows.height == 90 and rows["volume"].null_count() == 0


def canonical_hive(frame: pl.DataFrame) -> pl.DataFrame:
    cols = ["market", "interval", *PARQUET_SCHEMA]
    return frame.select(cols).sort(cols, nulls_last=True)


def test_scan_reads_one_kind_several_or_all_with_the_same_columns(tmp_path):
    data = tmp_path / "data"
    want = mixed_folder(data, count=30)
    trade = scan(data).collect()
    assert set(trade["market"]) == {"usdm", "coinm", "spot"}  # trade klines unless asked
    assert trade.height == 90
    for key in ALL:
        for kind in (key.kind, key.kind.value, key.kind.value.upper()):
            got = scan(data, market=key.market, symbol=key.symbol, kind=kind).collect()
            assert dict(got.schema) == READ_SCHEMA
            assert set(got["market"]) == {key.partition}
            assert canonical(got).equals(canonical(want[key])), key
    every = scan(data, kind=None).collect()
    assert dict(every.schema) == READ_SCHEMA and every.height == 30 * len(ALL)
    assert set(every["market"]) == {k.partition for k in ALL}
    two = scan(data, market="coinm", kind=["mark", Kind.INDEX]).collect()
    assert set(two["market"]) == {"coinm-mark", "coinm-index"} and two.height == 60
    usdm_kinds = scan(data, market="usdm", kind=None, start=D1 + 10 * MINUTE).collect()
    assert usdm_kinds.height == 7 * 20
    # The same through the folder's Dataset method.
    assert ParquetFolder(data).scan(kind="premium").collect().height == 60
    with pytest.raises(SpecError, match="unknown kline kind"):
        scan(data, kind="funding")
    # A kind no market folder holds reads empty, with the same columns.
    empty = scan(data, market="spot", kind="mark").collect()
    assert empty.is_empty() and dict(empty.schema) == READ_SCHEMA


def test_unknown_market_folders_are_ignored_by_every_reader(tmp_path):
    data = tmp_path / "data"
    key = StreamKey.parse("usdm:BTCUSDT:1m:mark")
    ParquetFolder(data).write_frame(key.market, M1, rows_of(key), key.kind)
    stray = rows_of(key, count=5)
    for label in ("usdm-funding", "spot-mark", "usdm-trade", "USDM-mark"):
        folder = data / f"market={label}" / "interval=1m" / "date=2025-03-01"
        folder.mkdir(parents=True)
        stray.write_parquet(folder / "part-x.parquet")
    assert scan(data, kind=None).collect().height == 90
    report = verify_dataset(data)
    assert list(report.streams) == [key] and report.clean
    held = ParquetFolder(data).held([key])
    assert held[key].last == D1 + 89 * MINUTE


def test_resume_and_starts_are_kept_per_kind(tmp_path):
    data = tmp_path / "data"
    folder = ParquetFolder(data)
    trade, mark = StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("usdm:BTCUSDT:1m:mark")
    index = StreamKey.parse("usdm:BTCUSDT:1m:index")
    # Trade: 100 candles whole. Mark: a hole from 40 to 49 and a start 5 candles before its
    # first row. Index: no rows at all.
    folder.write_frame(trade.market, M1, rows_of(trade, count=100))
    marks = rows_of(mark, first=D1 + 10 * MINUTE, count=90)
    t = pl.col("open_time").dt.epoch("ms")
    folder.write_frame(
        mark.market, M1, marks.filter(~t.is_between(D1 + 40 * MINUTE, D1 + 49 * MINUTE)), mark.kind
    )
    folder.write_starts({trade: D1, mark: D1 + 5 * MINUTE, index: D1})
    starts = folder.read_starts()
    assert starts == {trade: D1, mark: D1 + 5 * MINUTE, index: D1}
    assert '"usdm:BTCUSDT:1m:mark"' in (data / ".kline-tui" / ".starts.json").read_text()

    held = folder.held([trade, mark, index], starts=starts)
    assert set(held) == {trade, mark}
    assert held[trade].last == D1 + 99 * MINUTE and held[trade].holes == []
    assert held[mark].last == D1 + 99 * MINUTE
    assert held[mark].holes == [
        (D1 + 5 * MINUTE, D1 + 9 * MINUTE),
        (D1 + 40 * MINUTE, D1 + 49 * MINUTE),
    ]
    assert folder.open_times(
        mark.market, mark.symbol, M1, D1 + 38 * MINUTE, D1 + 51 * MINUTE, mark.kind
    ) == [D1 + 38 * MINUTE, D1 + 39 * MINUTE, D1 + 50 * MINUTE, D1 + 51 * MINUTE]
    assert folder.open_times(index.market, index.symbol, M1, kind=index.kind) == []
    # The trade stream's open times are its own, not the mark's.
    assert len(folder.open_times(trade.market, trade.symbol, M1)) == 100


def test_compact_and_verify_a_mixed_folder(tmp_path, capsys):
    data = tmp_path / "data"
    keys = [TRADE[0], *OTHERS[:5], OTHERS[6], OTHERS[11]]  # current_quarter, next_quarter too
    want = {}
    folder = ParquetFolder(data)
    for key in keys:
        frame = rows_of(key, count=120)
        t = frame["open_time"].dt.epoch("ms")
        kept = frame.filter(t != D1 + 60 * MINUTE)  # one gap each
        # Three parts, the last a REST copy of 20 candles the first two hold: duplicates.
        folder.write_frame(key.market, M1, kept.head(60), key.kind)
        folder.write_frame(key.market, M1, kept.tail(59), key.kind)
        copy = kept.slice(30, 20).with_columns(source=pl.lit("rest"))
        folder.write_frame(key.market, M1, copy, key.kind)
        want[key] = as_stored(key, kept)

    report = verify_dataset(data)
    assert set(report.streams) == set(keys)
    for key in keys:
        s = report.streams[key]
        assert s.duplicates == 20 and s.candles == 119 and s.gaps == [(D1 + 60 * MINUTE,) * 2]
    assert verify_main(["--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert "usdm:BTCUSDT:1m:mark  2025-03-01 00:00 to 2025-03-01 01:59  119 candles  " in out
    assert "coinm:BTCUSD_PERP:1m:mark  " in out and "usdm:BTCUSDT:1m  " in out
    assert verify_main(["usdm:BTCUSDT:1m:index", "--data-dir", str(data)]) == 1
    alone = capsys.readouterr().out
    assert "usdm:BTCUSDT:1m:index  " in alone and ":mark" not in alone
    assert "usdm:BTCUSDT:1m  " not in alone

    result = Compactor(data).run(None)
    assert not result.failed and result.duplicates == 20 * len(keys)
    assert result.buckets == len(keys)
    for key in keys:
        bucket = layout.partition_dir(data, key.market, M1, "2025-03-01", key.kind)
        assert len(part_files(bucket)) == 1
        got = scan(data, market=key.market, kind=key.kind).collect()
        assert canonical(got).equals(canonical(want[key])), key  # the ws copy kept, NULLs kept
    after = verify_dataset(data)
    assert all(s.duplicates == 0 and len(s.gaps) == 1 for s in after.streams.values())
    lines = render(after, data)
    assert any(line.startswith("usdm:BTCUSDT:1m:premium  ") for line in lines)


async def test_repair_fetches_what_the_rest_client_can_and_says_what_it_cannot(
    sim, tmp_path, capsys
):
    data = tmp_path / "data"
    trade, mark = StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("usdm:BTCUSDT:1m:mark")
    first = Interval.D1.open_time_at(sim.clock.now_ms()) - 2 * DAY
    opens = [first + i * MINUTE for i in range(200) if not 100 <= i < 110]
    write_raw_part(data, trade.market, M1, expected_frame(trade, opens, "ws"))
    ParquetFolder(data).write_frame(mark.market, M1, expected_frame(mark, opens, "ws"), mark.kind)
    cfg = write_config(tmp_path / "config.toml", sim.endpoints)
    code = await asyncio.to_thread(
        verify_main, ["--repair", "--data-dir", str(data), "--config", str(cfg)]
    )
    out = capsys.readouterr().out
    report = verify_dataset(data)
    assert report.streams[trade].clean  # the trade gap fetched
    per_kind = "kind" in inspect.signature(RestClient.closed_klines).parameters
    if per_kind:  # the REST side knows kinds: the mark gap is fetched through the same repair
        assert code == 0, out
        rows = scan(data, kind="mark").collect()
        assert rows.height == 200
        assert all(rows[c].null_count() == 200 for c in NO_VOLUME_COLUMNS)
    else:  # never filled with trade klines: said, and left for a client that can
        assert code == 1, out
        assert "usdm:BTCUSDT:1m:mark: this REST client cannot fetch mark klines yet" in out
        assert report.streams[mark].gaps == [(first + 100 * MINUTE, first + 109 * MINUTE)]
        assert set(scan(data, kind="mark").collect()["source"]) == {"ws"}


def test_delta_table_with_kinds(tmp_path):
    ds = open_dataset(StorageSpec(str(tmp_path / "table"), "delta"))
    assert isinstance(ds, DeltaDataset)
    ds.acquire()
    trade, mark = StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("usdm:BTCUSDT:1m:mark")
    nq = StreamKey.parse("coinm:BTCUSD:1m:next_quarter")
    index = StreamKey.parse("coinm:BTCUSD:1m:index")
    frames = {k: rows_of(k, count=60) for k in (trade, mark, nq, index)}
    # Trade rows as the sink writes them today (no kind); the others with theirs. The same
    # symbol and open times in the trade and mark partitions: the MERGE keeps them apart.
    assert ds.write_rows(trade.market, M1, "2025-03-01", list(frames[trade].iter_rows())) == 60
    assert ds.write_rows(mark.market, M1, "2025-03-01", frames[mark], mark.kind) == 60
    assert ds.write_rows(mark.market, M1, "2025-03-01", frames[mark], mark.kind) == 0
    assert ds.write_frame(nq.market, M1, frames[nq], nq.kind) == (60, 1)
    assert ds.write_frame(index.market, M1, frames[index].head(30), index.kind) == (30, 1)
    assert ds.write_frame(index.market, M1, frames[index], index.kind) == (30, 1)

    plain = pl.read_delta(ds.location)
    assert sorted(set(plain["market"])) == [
        "coinm-index",
        "coinm-next_quarter",
        "usdm",
        "usdm-mark",
    ]
    marks = plain.filter(pl.col("market") == "usdm-mark")
    assert marks.height == 60 and all(marks[c].null_count() == 60 for c in NO_VOLUME_COLUMNS)
    assert plain.filter(pl.col("market") == "usdm")["volume"].null_count() == 0

    for key, frame in frames.items():
        got = ds.scan(symbol=key.symbol, kind=key.kind).collect()
        assert dict(got.schema) == READ_SCHEMA and set(got["market"]) == {key.partition}
        assert canonical(got).equals(canonical(as_stored(key, frame))), key
    assert set(ds.scan().collect()["market"]) == {"usdm"}
    assert ds.scan(kind=None).collect().height == 240
    assert scan(ds.location, kind="index").collect().height == 60  # the package's scan

    held = ds.held([trade, mark, nq, StreamKey.parse("usdm:BTCUSDT:1m:premium")])
    assert set(held) == {trade, mark, nq}
    assert all(s.last == D1 + 59 * MINUTE and not s.holes for s in held.values())
    assert ds.open_times(mark.market, mark.symbol, M1, kind=mark.kind) == [
        D1 + i * MINUTE for i in range(60)
    ]
    report = ds.verify()
    assert set(report.streams) == set(frames) and report.clean
    assert ds.verify([mark]).streams.keys() == {mark}
    # A blind append of mark rows (duplicates) is found in its own partition and compacted away.
    from deltalake import write_deltalake

    from kline_tui.store.delta import DELTA_SCHEMA

    dup = (
        plain.filter(pl.col("market") == "usdm-mark")
        .head(10)
        .with_columns(source=pl.lit("rest"))
        .select(list(DELTA_SCHEMA))
    )
    write_deltalake(ds.location, dup.to_arrow(), mode="append")
    dirty = ds.verify()
    assert dirty.streams[mark].duplicates == 10 and dirty.streams[trade].duplicates == 0
    result = ds.compactor().run(None)
    assert not result.failed
    assert ds.verify().clean
    again = ds.scan(kind="mark").collect()
    assert canonical(again).equals(canonical(as_stored(mark, frames[mark])))


# --- import ------------------------------------------------------------------------------------

FOLDERS = {
    Kind.MARK: "markPriceKlines",
    Kind.INDEX: "indexPriceKlines",
    Kind.PREMIUM: "premiumIndexKlines",
}


def kind_csv(key: StreamKey, opens: list[int], *, header: bool) -> tuple[bytes, list[tuple]]:
    """A mark, index or premium archive as Binance lays it out: the 12 kline columns, "0" in
    the ignored volume fields and a sample count in `count`; and the rows it should store."""
    lines = [HEADER] if header else []
    rows = []
    for i, t in enumerate(opens):
        base = 0.0004 * (i % 7) - 0.001 if key.kind is Kind.PREMIUM else 97000.5 + i
        o, h, low, c = base, base + 0.0002, base - 0.0003, base + 0.0001
        lines.append(f"{t},{o},{h},{low},{c},0,{t + 59_999},0,60,0,0,0")
        rows.append((key.symbol, t, t + 59_999, o, h, low, c, None, None, None, None, None))
    return ("\n".join(lines) + "\n").encode(), rows


IMPORTS = [
    # spec, daily or monthly, header
    ("usdm:BTCUSDT:1m:mark", "daily", True),
    ("usdm:BTCUSDT:1m:index", "daily", False),
    ("usdm:ETHUSDT:1m:premium", "monthly", True),
    ("coinm:BTCUSD_PERP:1m:mark", "daily", False),
    ("coinm:ETHUSD:1m:index", "monthly", True),
    ("coinm:ADAUSD_PERP:1m:premium", "daily", True),
]


def test_import_of_mark_index_and_premium_archives(tmp_path, capsys):
    data, root = tmp_path / "data", tmp_path / "downloads"
    ParquetFolder(data).write_frame(Market.USDM, M1, rows_of(TRADE[0]))  # a dataset to import into
    want = {}
    for spec, period, header in IMPORTS:
        key = StreamKey.parse(spec)
        opens = opens_of(M1, D1, 1440 if period == "daily" else 1440 * 2)
        label = "2025-03-01" if period == "daily" else "2025-03"
        csv, rows = kind_csv(key, opens, header=header)
        dirs = "um" if key.market is Market.USDM else "cm"
        make_zip(
            root,
            f"data/futures/{dirs}/{period}/{FOLDERS[key.kind]}/{key.symbol}/1m",
            f"{key.symbol}-1m-{label}",
            csv,
        )
        want[key] = pl.DataFrame(
            [(*r, "archive") for r in rows], schema=PARQUET_SCHEMA, orient="row"
        )
    assert import_main([str(root), "--data-dir", str(data)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "usdm:BTCUSDT:1m:mark, 1440 candles, 1440 new" in out
    for key, frame in want.items():
        folder = data / f"market={key.partition}" / "interval=1m"
        assert folder.is_dir(), key
        got = scan(data, market=key.market, symbol=key.symbol, kind=key.kind).collect()
        assert canonical(got).equals(canonical(frame)), key
        assert all(got[c].null_count() == got.height for c in NO_VOLUME_COLUMNS)
    # Importing again adds nothing; the trade rows are untouched.
    assert import_main([str(root), "--data-dir", str(data)]) == 0
    assert "0 new" in capsys.readouterr().out
    assert scan(data).collect().height == 90
    assert verify_dataset(data).clean


def test_import_kind_flag_for_a_path_that_does_not_say(tmp_path, capsys):
    data, root = tmp_path / "data", tmp_path / "downloads"
    ParquetFolder(data).write_frame(Market.USDM, M1, rows_of(TRADE[0]))
    key = StreamKey.parse("coinm:BTCUSD_PERP:1m:premium")
    csv, rows = kind_csv(key, opens_of(M1, D1, 60), header=False)
    flat = make_zip(root, "flat", "BTCUSD_PERP-1m-2025-03-01", csv)
    base = [str(flat), "--data-dir", str(data), "--market", "coinm"]
    # Without --kind the file is taken for trade klines.
    assert import_main([*base, "--kind", "premium"]) == 0, capsys.readouterr().err
    got = scan(data, market="coinm", kind="premium").collect()
    assert got.height == 60 and got["volume"].null_count() == 60
    assert got["close"].to_list() == [r[6] for r in rows]

    # A flag that contradicts the path, a continuous kind, a kind spot lacks: one line, exit 2.
    marked = make_zip(
        root, "data/futures/um/daily/markPriceKlines/BTCUSDT/1m", "BTCUSDT-1m-2025-03-01", csv
    )
    assert import_main([str(marked), "--data-dir", str(data), "--kind", "index"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its path says kind mark, but --kind index was given" in err[0]
    assert import_main([*base, "--kind", "perpetual"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no perpetual (continuous contract) kline archives" in err[0]
    spot = make_zip(root, "data/spot/daily/klines/BTCUSDT/1m", "BTCUSDT-1m-2025-03-01", csv)
    assert import_main([str(spot), "--data-dir", str(data), "--kind", "mark"]) == 2
    assert "its path says kind trade" in capsys.readouterr().err
    assert import_main([*base, "--kind", "funding"]) == 2
    assert "unknown kline kind" in capsys.readouterr().err
    pair = make_zip(
        root,
        "data/futures/cm/daily/indexPriceKlines/BTCUSD_PERP/1m",
        "BTCUSD_PERP-1m-2025-03-01",
        csv,
    )
    assert import_main([str(pair), "--data-dir", str(data)]) == 2
    assert "keyed by pair" in capsys.readouterr().err
    assert scan(data, kind=None).collect().height == 90 + 60  # nothing more was written
