"""Compaction: exact unique rows from 1,000+ parts, crash safety at every step and under kill -9,
readers and writers running alongside, closed buckets only."""

from __future__ import annotations

import errno
import fcntl
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from kline_tui.model import Interval, Market
from kline_tui.store import compact, layout
from kline_tui.store.compact import Compactor, hide_scratch, swap_scratch
from kline_tui.store.parts import write_parts
from kline_tui.store.read import READ_ERRORS, part_files

from .datasets import (
    DAY,
    MINUTE,
    canonical,
    day_ms,
    dedup,
    read_dataset,
    synthetic_rows,
    write_raw_part,
)

M1 = Interval.M1
USDM = Market.USDM
SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]
SALT = {"ws": 0.0, "rest": 0.5, "archive": 0.25}  # copies from different sources differ in price


def plant_bucket(
    data_dir: Path, day: int, parts: int, rng: random.Random, rows_per_part: int = 20
) -> None:
    """`parts` parts in one day bucket, overlapping each other (duplicates, from mixed sources)."""
    for _ in range(parts):
        source = rng.choice(["ws", "ws", "rest", "archive"])
        symbols = rng.sample(SYMBOLS, rng.randint(1, len(SYMBOLS)))
        start = day + rng.randrange(0, 1440 - rows_per_part) * MINUTE
        write_raw_part(
            data_dir,
            USDM,
            M1,
            synthetic_rows(symbols, M1, start, rows_per_part, source, SALT[source]),
        )


def buckets_of(df: pl.DataFrame) -> dict[str, pl.DataFrame]:
    assert df["date"].null_count() == 0 if "date" in df.columns and df.height else True, (
        "a .parquet outside a bucket"
    )
    return (
        {str(d): canonical(g) for (d,), g in df.partition_by("date", as_dict=True).items()}
        if df.height
        else {}
    )


def leftovers(data_dir: Path) -> list[Path]:
    """What a compaction may leave behind: anything in its scratch folders."""
    found = []
    for scratch in (swap_scratch(data_dir), hide_scratch(data_dir)):
        if scratch.is_dir():
            found.extend(scratch.iterdir())
    return found


def test_thousand_parts_with_duplicates_become_the_unique_rows(tmp_path):
    data = tmp_path / "data"
    rng = random.Random(1)
    day = day_ms("2026-01-05")
    plant_bucket(data, day, 1100, rng)
    lonely = write_raw_part(
        data, USDM, M1, synthetic_rows(["AAAUSDT"], M1, day_ms("2026-01-07"), 30)
    )[0]
    lonely_stat = lonely.stat()
    everything = read_dataset(data)
    bucket = everything.filter(pl.col("date") == pl.date(2026, 1, 5))
    want = dedup(bucket)
    assert bucket.height > want.height + 1000  # the fixture really holds many duplicates
    assert set(want["source"]) == {"ws", "rest", "archive"}

    result = Compactor(data).run(None)

    assert (result.buckets, result.files_in, result.rows_in, result.rows_out) == (
        1,
        1100,
        bucket.height,
        want.height,
    )
    files = part_files(layout.partition_dir(data, USDM, M1, "2026-01-05"))
    assert len(files) == 1
    merged = pl.read_parquet(files[0])
    assert merged.equals(merged.sort("symbol", "open_time")), "not sorted by (symbol, open_time)"
    assert merged.select("symbol", "open_time").is_unique().all()
    assert canonical(merged).equals(canonical(want))
    # The live copy won wherever there was one.
    ws_keys = bucket.filter(pl.col("source") == "ws").select("symbol", "open_time").unique().height
    assert merged.filter(pl.col("source") == "ws").height == ws_keys
    # A bucket with one file is left alone; nothing is left behind.
    assert lonely.exists() and lonely.stat().st_mtime_ns == lonely_stat.st_mtime_ns
    assert leftovers(data) == [] and not swap_scratch(data).exists()
    assert [p for p in data.rglob("*.parquet") if ".kline-tui" in p.parts] == []


class Crash(BaseException):
    """Stands for the process dying: no except clause of the code under test catches it."""


def build_small(data_dir: Path) -> None:
    rng = random.Random(7)
    for i in range(3):
        plant_bucket(data_dir, day_ms("2026-02-01") + i * DAY, 4, rng)


@pytest.mark.parametrize("swap", [True, False], ids=["swap", "hide"])
def test_crash_after_every_step_reads_back_and_the_next_run_finishes(tmp_path, monkeypatch, swap):
    real_fsync = compact.fsync_dir
    crash_points = 0
    for k in range(1, 200):
        data = tmp_path / f"d{k}"
        build_small(data)
        before = buckets_of(read_dataset(data))
        calls = [0]

        def fsync(path, k=k, calls=calls):
            calls[0] += 1
            if calls[0] == k:
                raise Crash
            real_fsync(path)

        monkeypatch.setattr(compact, "fsync_dir", fsync)
        try:
            Compactor(data, swap=swap).run(None)
            crashed = False
        except Crash:
            crashed = True
        monkeypatch.setattr(compact, "fsync_dir", real_fsync)

        after = buckets_of(read_dataset(data))
        for label, rows in before.items():
            got = after.get(label)
            if swap:  # the exchange: always every row exactly once
                assert got is not None and (
                    got.equals(rows) or got.equals(canonical(dedup(rows)))
                ), (k, label)
            else:  # the fallback: never a row twice, rows may be missing until the next run
                if got is not None:
                    assert got.select("symbol", "open_time").is_unique().all(), (k, label)
        Compactor(data, swap=swap).run(None)
        final = buckets_of(read_dataset(data))
        for label, rows in before.items():
            assert final[label].equals(canonical(dedup(rows))), (k, label)
            assert len(part_files(layout.partition_dir(data, USDM, M1, label))) == 1
        assert leftovers(data) == []
        if not crashed:
            break
        crash_points += 1
    assert crash_points >= 10  # every bucket's steps were crashed through


SCRIPT = (
    "import sys\n"
    "from kline_tui.cli.compact import main as compact_main\n"
    "print('ready', flush=True)\n"
    "sys.exit(compact_main(sys.argv[1:]))\n"
)


def start_compact(data: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "--data-dir", str(data), "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_kill9_at_random_points_20_times(tmp_path):
    data = tmp_path / "data"
    rng = random.Random(20)
    days = [day_ms("2026-03-01") + i * DAY for i in range(12)]
    for day in days:
        plant_bucket(data, day, 25, rng)

    # How long an uninterrupted run works, on a copy: the kills land within that time.
    calib = tmp_path / "calib"
    shutil.copytree(data, calib)
    proc = start_compact(calib)
    started = time.monotonic()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    work_s = time.monotonic() - started
    proc.stdout.close()
    proc.stderr.close()

    mid_way = 0
    for round_ in range(20):
        before = buckets_of(read_dataset(data))
        proc = start_compact(data)
        time.sleep(rng.uniform(0.0, work_s))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()

        after = buckets_of(read_dataset(data))
        assert after.keys() == before.keys()
        done = 0
        for label, rows in before.items():
            deduped = canonical(dedup(rows))
            assert after[label].equals(rows) or after[label].equals(deduped), (round_, label)
            done += after[label].equals(deduped) and not rows.equals(deduped)
        todo = sum(not rows.equals(canonical(dedup(rows))) for rows in before.values())
        if 0 < done < todo or leftovers(data):
            mid_way += 1
        # Keep work for the next kill: new overlapping parts in every merged bucket.
        for day in days:
            folder = layout.partition_dir(data, USDM, M1, layout.bucket_of(M1, day))
            if len(part_files(folder)) == 1:
                plant_bucket(data, day, 3, rng)

    before = buckets_of(read_dataset(data))
    proc = start_compact(data)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    after = buckets_of(read_dataset(data))
    for label, rows in before.items():
        assert after[label].equals(canonical(dedup(rows))), label
        assert len(part_files(data / "market=usdm" / "interval=1m" / f"date={label}")) == 1
    assert leftovers(data) == [] and not swap_scratch(data).exists()
    assert mid_way >= 5, f"only {mid_way} of 20 kills landed inside a compaction"


def test_readers_never_see_a_row_twice_or_miss_one(tmp_path):
    data = tmp_path / "data"
    rng = random.Random(3)
    days = [day_ms("2026-04-01") + i * DAY for i in range(8)]
    for day in days:
        plant_bucket(data, day, 15, rng)
    # Every state a bucket may be seen in: as planted, merged, replanted, merged again...
    acceptable: dict[str, set[int]] = {}

    def fingerprint(frame: pl.DataFrame) -> int:
        return hash(tuple(canonical(frame).hash_rows(seed=1).to_list()))

    state = buckets_of(read_dataset(data))
    for label, rows in state.items():
        acceptable[label] = {fingerprint(rows), fingerprint(dedup(rows))}

    violations, reads, errors = [], [0], [0]
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                df = read_dataset(data)
            except READ_ERRORS:
                errors[0] += 1  # a file listed, then swapped away: the reader retries
                continue
            reads[0] += 1
            for label, rows in buckets_of(df).items():
                if fingerprint(rows) not in acceptable[label]:
                    violations.append((label, rows.height))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            Compactor(data, swap=True).run(None)
            for day in days:
                label = layout.bucket_of(M1, day)
                merged = canonical(
                    read_dataset(data).filter(pl.col("date") == pl.lit(label).str.to_date())
                )
                part = synthetic_rows(
                    SYMBOLS[:2], M1, day + rng.randrange(0, 1400) * MINUTE, 20, "rest", 0.5
                )
                new_state = pl.concat([merged, canonical(part)])
                acceptable[label] |= {fingerprint(new_state), fingerprint(dedup(new_state))}
                write_raw_part(data, USDM, M1, part)
        Compactor(data, swap=True).run(None)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert violations == []
    assert reads[0] >= 5


def test_parts_written_during_compaction_are_kept(tmp_path, monkeypatch):
    """A writer publishing into the buckets being compacted, with the publish lock (backfill,
    import) and without it (a sink that does not take it): every row survives, once."""
    data = tmp_path / "data"
    rng = random.Random(4)
    days = [day_ms("2026-05-01") + i * DAY for i in range(6)]
    for day in days:
        plant_bucket(data, day, 10, rng)
    written: list[pl.DataFrame] = [canonical(read_dataset(data))]
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            day = rng.choice(days)
            frame = synthetic_rows([f"W{n:04d}USDT"], M1, day + rng.randrange(0, 1400) * MINUTE, 5)
            if n % 2:
                write_parts(data, USDM, M1, frame)
            else:  # a writer that does not take the publish lock: staging, then layout.publish
                staging = layout.staging_dir(data)
                staging.mkdir(parents=True, exist_ok=True)
                name = layout.part_name(n)
                frame.write_parquet(staging / f".{name}.tmp")
                layout.publish(
                    staging / f".{name}.tmp",
                    layout.partition_dir(data, USDM, M1, layout.bucket_of(M1, day)) / name,
                )
            written.append(frame)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(8):
            Compactor(data, swap=True).run(None)
    finally:
        stop.set()
        thread.join()
    Compactor(data, swap=True).run(None)
    everything = pl.concat([canonical(f) for f in written])
    assert canonical(read_dataset(data)).equals(canonical(dedup(everything)))
    assert len(written) > 20


async def test_only_closed_buckets_and_events_on_the_loop(tmp_path):
    data = tmp_path / "data"
    rng = random.Random(5)
    d5, d6 = day_ms("2026-06-05"), day_ms("2026-06-06")
    plant_bucket(data, d5, 3, rng)
    plant_bucket(data, d6, 3, rng)
    events = []
    loop_thread = threading.get_ident()
    compactor = Compactor(data, lambda level, msg: events.append((threading.get_ident(), msg)))

    result = await compactor.run_once(d6 + 5 * MINUTE)  # 06-05 ended 5 minutes ago: not yet
    assert result.buckets == 0
    result = await compactor.run_once(d6 + 11 * MINUTE)
    assert result.buckets == 1 and result.files_in == 3
    assert len(part_files(layout.partition_dir(data, USDM, M1, "2026-06-05"))) == 1
    assert len(part_files(layout.partition_dir(data, USDM, M1, "2026-06-06"))) == 3
    assert any("compacted 1 bucket" in msg for _, msg in events)
    assert all(tid == loop_thread for tid, _ in events)

    # Another compaction holds the data directory: this one skips, touching nothing.
    fd = layout.lock_fd(data, "compact.lock")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = await compactor.run_once(d6 + 3 * DAY)
    finally:
        os.close(fd)
    assert result.busy and result.buckets == 0
    assert len(part_files(layout.partition_dir(data, USDM, M1, "2026-06-06"))) == 3
    result = await compactor.run_once(d6 + 3 * DAY)
    assert result.buckets == 1


def test_an_unreadable_part_leaves_its_bucket_alone(tmp_path):
    data = tmp_path / "data"
    rng = random.Random(6)
    d1, d2 = day_ms("2026-07-01"), day_ms("2026-07-02")
    plant_bucket(data, d1, 4, rng)
    plant_bucket(data, d2, 4, rng)
    bad = part_files(layout.partition_dir(data, USDM, M1, "2026-07-01"))[1]
    bad.write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    result = Compactor(data).run(None)
    assert result.buckets == 1 and len(result.failed) == 1 and bad.name in result.failed[0]
    assert len(part_files(layout.partition_dir(data, USDM, M1, "2026-07-01"))) == 4
    assert len(part_files(layout.partition_dir(data, USDM, M1, "2026-07-02"))) == 1
    assert leftovers(data) == []


def test_falls_back_when_the_filesystem_refuses_the_exchange(tmp_path, monkeypatch):
    data = tmp_path / "data"
    plant_bucket(data, day_ms("2026-08-01"), 5, random.Random(8))
    before = canonical(dedup(read_dataset(data)))

    def refuse(a, b):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(compact, "_swap_usable", lambda data_dir, report=None: True)
    monkeypatch.setattr(compact, "_EXCHANGE", refuse)
    result = Compactor(data).run(None)
    assert result.buckets == 1 and not result.failed
    assert canonical(read_dataset(data)).equals(before)
    assert len(list(data.rglob("*.parquet"))) == 1
    assert leftovers(data) == []


def test_compact_cli(tmp_path, capsys):
    from kline_tui.cli.compact import main as compact_main

    data = tmp_path / "data"
    plant_bucket(data, day_ms("2026-01-02"), 6, random.Random(9))
    assert compact_main(["--data-dir", str(data)]) == 0
    assert "compacted 1 bucket: 6 files into 1" in capsys.readouterr().out
    assert compact_main(["--data-dir", str(data)]) == 0
    assert "nothing to compact" in capsys.readouterr().out
    assert compact_main(["--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no data directory" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("crash_after_swap", [False, True], ids=["same-run", "next-run"])
def test_a_part_published_inside_the_swap_window_is_put_back(
    tmp_path, monkeypatch, crash_after_swap
):
    """A writer that does not take the publish lock renames a part into the bucket between the
    hard links and the exchange: the part leaves with the old folder, and is moved back (by
    the same run, or by the next one after a crash right after the exchange)."""
    data = tmp_path / "data"
    day = day_ms("2026-09-01")
    plant_bucket(data, day, 4, random.Random(10))
    late = synthetic_rows(["LATEUSDT"], M1, day + 600 * MINUTE, 7)
    want = canonical(dedup(pl.concat([canonical(read_dataset(data)), canonical(late)])))
    real_exchange = compact._EXCHANGE

    def exchange_with_a_late_part(a, b):
        if not Path(b).name.startswith("date="):  # the filesystem probe
            return real_exchange(a, b)
        write_raw_part(data, USDM, M1, late)  # lands in the folder about to be swapped out
        real_exchange(a, b)
        if crash_after_swap:
            raise Crash

    monkeypatch.setattr(compact, "_EXCHANGE", exchange_with_a_late_part)
    if crash_after_swap:
        with pytest.raises(Crash):
            Compactor(data, swap=True).run(None)
        assert canonical(read_dataset(data)).filter(pl.col("symbol") == "LATEUSDT").height == 0
        monkeypatch.setattr(compact, "_EXCHANGE", real_exchange)
        Compactor(data, swap=True).run(None)
    else:
        Compactor(data, swap=True).run(None)
    assert canonical(read_dataset(data)).equals(want)
    assert leftovers(data) == []
