"""Files that are not the dataset's: a foreign Parquet (other columns) is named by verify, moved
aside by --repair, and skipped by scan, compaction and resume; a file that makes the reader fail
or panic at start-up is moved aside, not fatal."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import polars as pl
import pytest

from kline_tui.cli.verify import main as verify_main
from kline_tui.model import Interval, Market, StreamKey
from kline_tui.store import layout, scan
from kline_tui.store.compact import Compactor
from kline_tui.store.read import part_files
from kline_tui.store.series import stored_series

from .datasets import canonical, day_ms, synthetic_rows, write_raw_part

M1 = Interval.M1
USDM = Market.USDM
DAY = "2026-01-05"
KEY = StreamKey(USDM, "AAAUSDT", M1)


def dataset(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    """Two days of one stream in parts of 100 rows; returns the folder and its rows."""
    data = tmp_path / "data"
    frame = synthetic_rows(["AAAUSDT"], M1, day_ms(DAY), 2 * 1440)
    for i in range(0, frame.height, 100):
        write_raw_part(data, USDM, M1, frame.slice(i, 100))
    return data, frame


def bucket(data: Path) -> Path:
    return layout.partition_dir(data, USDM, M1, DAY)


def exit_code(argv: list[str]) -> int | str:
    """verify's exit code, or the crash it ended in (a wrong answer too)."""
    try:
        return verify_main(argv)
    except Exception as exc:
        return f"crashed: {type(exc).__name__}: {exc}"


def empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("")
    return path


FOREIGN = {
    "other columns": pl.DataFrame({"city": ["Oslo", "Lima"], "population": [709_000, 10_000_000]}),
    "open_time as a number": synthetic_rows(["ZZZUSDT"], M1, day_ms(DAY), 3).with_columns(
        pl.col("open_time").dt.epoch("ms")
    ),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_foreign_file_is_named_skipped_never_merged_and_moved_aside_by_repair(
    tmp_path, capsys, kind
):
    data, frame = dataset(tmp_path)
    foreign = bucket(data) / "exported.parquet"
    FOREIGN[kind].write_parquet(foreign)
    content = foreign.read_bytes()

    assert exit_code(["--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert f"foreign file: {foreign.relative_to(data)}" in out, out

    # Every reader of ours: the dataset's rows, nothing from the foreign file.
    assert canonical(scan(data).collect()).equals(canonical(frame))
    assert stored_series(data, [KEY])[KEY].last == day_ms(DAY) + (2 * 1440 - 1) * 60_000
    result = Compactor(data).run(None)
    assert result.buckets == 2 and not result.failed
    assert foreign.read_bytes() == content  # left where it was, never merged
    merged = [p for p in part_files(bucket(data)) if p != foreign]
    assert len(merged) == 1 and pl.read_parquet(merged[0]).null_count().sum_horizontal().item() == 0
    assert canonical(scan(data).collect()).equals(canonical(frame))

    assert (
        exit_code(["--repair", "--data-dir", str(data), "--config", str(empty_config(tmp_path))])
        == 0
    )
    assert not foreign.exists()
    [moved] = layout.quarantine_dir(data).iterdir()
    assert (
        moved.read_bytes() == content
        and not moved.name.endswith(".parquet")
        and moved.name.startswith(".")
    )
    assert exit_code(["--data-dir", str(data)]) == 0


def test_a_file_of_an_earlier_version_without_source_is_not_foreign(tmp_path, capsys):
    data, _ = dataset(tmp_path)
    old = synthetic_rows(["OLDUSDT"], M1, day_ms(DAY), 10).drop("source")
    path = bucket(data) / "part-old.parquet"
    old.write_parquet(path)
    assert exit_code(["--data-dir", str(data)]) == 0, capsys.readouterr().out
    got = scan(data, symbol="OLDUSDT").collect()
    assert got.height == 10 and got["source"].null_count() == 10
    Compactor(data).run(None)
    assert not path.exists() and scan(data, symbol="OLDUSDT").collect().height == 10


def footer_garbage(path: Path) -> None:
    """Overwrite a real part's footer with garbage, keeping its length and its magic bytes."""
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little")
    raw[-8 - footer : -8] = bytes((i * 37 + 11) % 256 for i in range(footer))
    path.write_bytes(bytes(raw))


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [footer_garbage, truncated], ids=["footer", "truncated"])
def test_a_corrupt_file_at_resume_is_moved_aside_and_the_rest_is_read(tmp_path, caplog, damage):
    data, _ = dataset(tmp_path)
    bad = part_files(bucket(data))[3]  # rows 300 to 399 of the first day
    damage(bad)
    with caplog.at_level(logging.WARNING):
        found = stored_series(data, [KEY])
    series = found[KEY]
    assert series.last == day_ms(DAY) + (2 * 1440 - 1) * 60_000
    # fetched again
    assert series.holes == [(day_ms(DAY) + 300 * 60_000, day_ms(DAY) + 399 * 60_000)]
    assert not bad.exists()
    assert [p.name for p in layout.quarantine_dir(data).iterdir()] == [
        f".{bad.relative_to(data).as_posix().replace('/', '__')}.corrupt"
    ]
    assert any(bad.name in r.getMessage() and "moved" in r.getMessage() for r in caplog.records), (
        caplog.text
    )


def test_a_reader_panic_at_resume_is_not_fatal(tmp_path, monkeypatch, caplog):
    """Some damage makes Polars panic (a BaseException from its Rust side), not raise."""
    data, _ = dataset(tmp_path)
    bad = part_files(bucket(data))[5]
    real_scan = pl.scan_parquet

    def scan_parquet(source, *args, **kwargs):
        paths = source if isinstance(source, list) else [source]
        if any(Path(p) == bad for p in paths):
            raise pl.exceptions.PanicException(
                "assertion `left == right` failed: left: 600, right: 30954817"
            )
        return real_scan(source, *args, **kwargs)

    monkeypatch.setattr(pl, "scan_parquet", scan_parquet)
    try:
        with caplog.at_level(logging.WARNING):
            found = stored_series(data, [KEY])
    except BaseException as exc:
        pytest.fail(f"resume died: {type(exc).__name__}: {exc}")
    assert found[KEY].holes == [(day_ms(DAY) + 500 * 60_000, day_ms(DAY) + 599 * 60_000)]
    assert not bad.exists() and len(list(layout.quarantine_dir(data).iterdir())) == 1
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 1 and bad.name in told[0] and "PanicException" in told[0]


def test_what_resume_finds_is_told_to_the_caller(tmp_path):
    """The recorder passes its event log's warning (called on the reading thread)."""
    data, _ = dataset(tmp_path)
    truncated(part_files(bucket(data))[1])
    FOREIGN["other columns"].write_parquet(bucket(data) / "exported.parquet")
    told: list[str] = []
    stored_series(data, [KEY], told.append)
    assert len(told) == 2
    assert any("exported.parquet" in t and "skipped" in t for t in told)
    assert any("unreadable" in t and "moved to" in t for t in told)


def test_a_file_gone_meanwhile_is_not_quarantined(tmp_path, monkeypatch):
    """A read that fails because the disk or a compaction took the file is not the file's fault."""
    data, _ = dataset(tmp_path)
    real_scan = pl.scan_parquet
    victim = part_files(bucket(data))[2]

    def scan_parquet(source, *args, **kwargs):
        paths = source if isinstance(source, list) else [source]
        if any(Path(p) == victim for p in paths):
            raise OSError(5, os.strerror(5), str(victim))
        return real_scan(source, *args, **kwargs)

    monkeypatch.setattr(pl, "scan_parquet", scan_parquet)
    stored_series(data, [KEY])
    assert victim.exists() and not layout.quarantine_dir(data).exists()
