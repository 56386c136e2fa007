"""The data directory's bookkeeping: absurd open times never reach a path, the tools write nothing
into a folder that is not a dataset, a starting recorder leaves other writers' files alone, and
an earlier version's bookkeeping is moved out of the readers' way."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import polars as pl
import pytest

from kline_tui.cli.compact import main as compact_main
from kline_tui.cli.verify import main as verify_main
from kline_tui.model import Interval, Market
from kline_tui.store import layout
from kline_tui.store.compact import Compactor, swap_scratch
from kline_tui.store.lock import DataDirError, DataDirLock
from kline_tui.store.parts import write_parts

from .datasets import day_ms, read_dataset, synthetic_rows, write_raw_part

M1 = Interval.M1
USDM = Market.USDM


def outcome(call, *args):
    """What a call returned, or the exception it raised (a wrong answer like any other)."""
    try:
        return call(*args)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return f"raised {type(exc).__name__}: {exc}"


# --- absurd open times ----------------------------------------------------------------------


@pytest.mark.parametrize("t", [10**16, -1, -86_400_000 * 400, 2**63 - 1, 253_402_300_800_000])
@pytest.mark.parametrize("interval", [Interval.M1, Interval.H1, Interval.D1, Interval.MO1])
def test_an_absurd_open_time_has_no_bucket_and_raises_nothing(t, interval):
    assert outcome(layout.bucket_of, interval, t) is None


def test_the_last_and_first_placeable_open_times():
    assert layout.bucket_of(Interval.D1, 253_402_300_800_000 - 1) == "9999-01-01"
    assert layout.bucket_of(Interval.M1, 0) == "1970-01-01"


def test_history_writes_the_placeable_rows_and_sets_the_others_aside(tmp_path):
    """A backfill or an archive carrying a bogus open time: no crash (Polars' date formatting
    panics on it), no folder for it, the good rows written."""
    data = tmp_path / "data"
    good = synthetic_rows(["AAAUSDT"], M1, day_ms("2026-01-05"), 5)
    bogus = synthetic_rows(["AAAUSDT"], M1, 10**16, 2)
    result = outcome(write_parts, data, USDM, M1, pl.concat([good, bogus]))
    assert isinstance(result, list) and len(result) == 1, result
    assert read_dataset(data).height == 5
    letters = [
        json.loads(line) for p in data.rglob("*.jsonl") for line in p.read_text().splitlines()
    ]
    assert sorted(r["row"]["open_time"] for r in letters) == [10**16, 10**16 + 60_000]
    assert [p.name for p in (data / "market=usdm" / "interval=1m").iterdir()] == ["date=2026-01-05"]


# --- folders that are not datasets ----------------------------------------------------------


def not_a_dataset(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / "folder"
    folder.mkdir()
    if kind == "files":
        (folder / "notes.txt").write_text("my notes")
        (folder / "photos").mkdir()
    return folder


def everything(folder: Path) -> list[str]:
    """All paths under the folder's parent, so a scratch folder beside it counts too."""
    return sorted(p.relative_to(folder.parent).as_posix() for p in folder.parent.rglob("*"))


@pytest.mark.parametrize("kind", ["empty", "files"])
def test_verify_says_a_folder_is_not_a_dataset_in_one_line(tmp_path, capsys, kind):
    folder = not_a_dataset(tmp_path, kind)
    before = everything(folder)
    code = outcome(verify_main, ["--data-dir", str(folder)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(folder) in err
    assert ("empty" if kind == "empty" else "not a kline-tui dataset") in err
    assert everything(folder) == before


def test_verify_of_a_dataset_holding_no_candles_yet(tmp_path, capsys):
    data = tmp_path / "data"
    lock = DataDirLock(data)
    lock.acquire()  # a recorder started, nothing flushed yet
    lock.release()
    assert verify_main(["--data-dir", str(data)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"kline-tui verify: {data} holds no candles yet"


@pytest.mark.parametrize("kind", ["empty", "files"])
def test_compact_writes_nothing_into_a_folder_that_is_not_a_dataset(tmp_path, capsys, kind):
    folder = not_a_dataset(tmp_path, kind)
    config = tmp_path / "config.toml"
    config.write_text("")
    before = everything(folder)
    code = outcome(compact_main, ["--all", "--data-dir", str(folder), "--config", str(config)])
    assert everything(folder) == before  # no lock, no staging, no scratch beside it
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(folder) in err
    assert Compactor(folder).run(None).buckets == 0
    assert everything(folder) == before and not swap_scratch(folder).exists()


def test_compact_and_verify_of_a_missing_folder(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert verify_main(["--data-dir", str(missing)]) == 2
    assert compact_main(["--data-dir", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("no data directory" in line for line in err)
    assert not missing.exists() and not swap_scratch(missing).exists()


# --- staging: a recorder starting beside other writers --------------------------------------


def test_a_starting_recorder_leaves_a_running_backfill_s_file_alone(tmp_path, monkeypatch):
    """`backfill`, `import` and `verify --repair` run beside a recorder: one starting while they
    have a file half-way to its bucket must not delete it."""
    data = tmp_path / "data"
    frame = synthetic_rows(["AAAUSDT"], M1, day_ms("2026-01-05"), 30)
    real_publish = layout.publish
    recorder = DataDirLock(data)

    def publish_as_a_recorder_starts(tmp, final):
        recorder.acquire()  # the recorder clears what it takes for leftovers of a killed writer
        real_publish(tmp, final)

    monkeypatch.setattr(layout, "publish", publish_as_a_recorder_starts)
    try:
        written = outcome(write_parts, data, USDM, M1, frame)
    finally:
        recorder.release()
    assert isinstance(written, list) and len(written) == 1, written
    assert read_dataset(data).height == 30


def test_a_killed_writer_s_leftovers_are_cleared(tmp_path):
    data = tmp_path / "data"
    staging = layout.staging_dir(data)
    staging.mkdir(parents=True)
    leftover = staging / ".part-20260105T000000000Z-000001-abc.parquet.tmp"
    leftover.write_bytes(b"half a part")
    lock = DataDirLock(data)
    lock.acquire()
    lock.release()
    assert not leftover.exists()


# --- an earlier version's bookkeeping -------------------------------------------------------


def legacy_dataset(tmp_path: Path) -> Path:
    """A folder as earlier versions left it: `.lock`, `.staging/` and `.quarantine/`."""
    data = tmp_path / "data"
    write_raw_part(data, USDM, M1, synthetic_rows(["AAAUSDT"], M1, day_ms("2026-01-05"), 10))
    (data / ".lock").write_text("4242")
    (data / ".staging").mkdir()
    (data / ".staging" / "publish.lock").write_bytes(b"")
    (data / ".staging" / "compact.lock").write_bytes(b"")
    (data / ".staging" / "part-x.parquet.tmp").write_bytes(b"half")
    (data / ".quarantine").mkdir()
    (
        data / ".quarantine" / "market=usdm__interval=1m__date=2026-01-04__part-y.parquet.corrupt"
    ).write_bytes(b"bad")
    return data


def test_an_earlier_version_s_bookkeeping_is_moved_out_of_the_readers_way(tmp_path):
    data = legacy_dataset(tmp_path)
    lock = DataDirLock(data)
    lock.acquire()
    try:
        assert sorted(p.name for p in data.iterdir()) == [".kline-tui", "market=usdm"]
        [moved] = layout.quarantine_dir(data).iterdir()
        assert moved.read_bytes() == b"bad" and moved.name.startswith(".")
        folder = pl.scan_parquet(data, hive_partitioning=True, hidden_file_prefix=".").collect()
        assert folder.height == 10
    finally:
        lock.release()


def test_an_earlier_version_still_recording_keeps_the_folder(tmp_path):
    data = legacy_dataset(tmp_path)
    fd = os.open(data / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        for _ in range(2):  # refused each time: the new lock is let go, not left held
            with pytest.raises(DataDirError, match="earlier kline-tui"):
                DataDirLock(data).acquire()
    finally:
        os.close(fd)
    lock = DataDirLock(data)
    lock.acquire()
    lock.release()
    assert not (data / ".lock").exists()
