"""Compaction follows only its own plans, in scratch folders that are its own: a planted plan or
a planted scratch folder never moves, deletes or adds a file, inside the data directory or out."""

from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path

import polars as pl
import pytest

from kline_tui.model import Interval, Market
from kline_tui.store import compact, layout, scan
from kline_tui.store.compact import Compactor, hide_scratch, swap_scratch
from kline_tui.store.read import part_files

from .datasets import canonical, day_ms, dedup, read_dataset, synthetic_rows, write_raw_part

M1 = Interval.M1
USDM = Market.USDM
DAY = "2026-01-05"


def dataset(tmp_path: Path) -> Path:
    """A bucket of four overlapping parts, to be compacted."""
    data = tmp_path / "data"
    rng = random.Random(3)
    for _ in range(4):
        start = day_ms(DAY) + rng.randrange(0, 1000) * 60_000
        write_raw_part(data, USDM, M1, synthetic_rows(["AAAUSDT", "BBBUSDT"], M1, start, 30))
    return data


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def plant(scratch: Path, plan: dict, work: dict[str, bytes]) -> Path:
    """A plan file and its work folder, as a killed compaction would leave them (the name every
    version reads)."""
    if not scratch.exists():
        scratch.mkdir(mode=0o700, parents=True)
    plan_id = uuid.uuid4().hex
    path = scratch / f"{plan_id}.plan"
    path.write_text(json.dumps(plan))
    (scratch / plan_id).mkdir()
    for name, data in work.items():
        (scratch / plan_id / name).write_bytes(data)
    return path


def evil_part(tmp_path: Path) -> bytes:
    """A well-formed part whose rows no one recorded."""
    path = tmp_path / "evil.parquet"
    synthetic_rows(["EVILUSDT"], M1, day_ms(DAY), 5).write_parquet(path)
    return path.read_bytes()


def run(data: Path, **kwargs) -> list[str]:
    """Compact everything; what was reported, and a crash as one more message."""
    messages: list[str] = []
    try:
        Compactor(data, **kwargs).run(None, report=lambda level, message: messages.append(message))
    except Exception as exc:
        messages.append(f"crashed: {type(exc).__name__}: {exc}")
    return messages


HOSTILE_PLANS = {
    "absolute bucket, hide": lambda victim: (
        {
            "mode": "hide",
            "bucket": str(victim.parent),
            "merged": "part-x.parquet",
            "replaces": [victim.name],
        },
        {"part-x.parquet.ready": b"not parquet"},
    ),
    "dot-dot bucket, hide": lambda victim: (
        {
            "mode": "hide",
            "bucket": "../victim",
            "merged": "part-x.parquet",
            "replaces": [victim.name],
        },
        {"part-x.parquet.ready": b"not parquet"},
    ),
    "dot-dot part name, hide": lambda victim: (
        {
            "mode": "hide",
            "bucket": f"market=usdm/interval=1m/date={DAY}",
            "merged": "part-x.parquet",
            "replaces": [f"../../../../victim/{victim.name}"],
        },
        {"part-x.parquet.ready": b"not parquet"},
    ),
    "absolute bucket, swap": lambda victim: (
        {"mode": "swap", "bucket": str(victim.parent), "merged": "part-x.parquet", "replaces": []},
        {"planted.parquet": b"planted"},
    ),
}


@pytest.mark.parametrize("where", ["beside", "inside"])
@pytest.mark.parametrize("kind", sorted(HOSTILE_PLANS))
def test_a_plan_naming_a_place_outside_the_bucket_is_refused_not_followed(tmp_path, where, kind):
    data = dataset(tmp_path)
    victim = tmp_path / "victim" / "precious.parquet"
    victim.parent.mkdir()
    victim.write_bytes(b"someone else's file")
    before_victim, before_rows = snapshot(victim.parent), canonical(dedup(read_dataset(data)))
    scratch = swap_scratch(data) if where == "beside" else hide_scratch(data)
    plan, work = HOSTILE_PLANS[kind](victim)
    planted = plant(scratch, plan, work)

    messages = run(data)

    assert snapshot(victim.parent) == before_victim  # nothing deleted, moved or added out there
    # and the bucket was compacted as usual
    assert canonical(scan(data).collect()).equals(before_rows)
    assert len(part_files(layout.partition_dir(data, USDM, M1, DAY))) == 1
    assert not planted.exists()
    assert any("refused" in m and planted.name in m for m in messages), messages
    assert not any(m.startswith("crashed") for m in messages), messages


@pytest.mark.parametrize("planted", ["symlink", "world-writable", "another user's"])
def test_a_planted_scratch_folder_is_not_used(tmp_path, planted):
    """Another local user creates `.<name>.compacting/` beside a data directory in a shared
    folder, holding a plan that would swap their rows in for ours: compaction neither reads
    it nor writes into it, and still compacts (inside the data directory)."""
    if planted == "another user's" and os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    data = dataset(tmp_path)
    attacker = tmp_path / "attacker"
    scratch = swap_scratch(data)
    bucket = layout.partition_dir(data, USDM, M1, DAY)
    victim = part_files(bucket)[0].name
    if planted == "symlink":
        attacker.mkdir()
        scratch.symlink_to(attacker)
        inside = attacker
    else:
        scratch.mkdir()
        inside = scratch
    plan = {
        "mode": "hide",
        "bucket": f"market=usdm/interval=1m/date={DAY}",
        "merged": "part-evil.parquet",
        "replaces": [victim],
    }
    plant(inside, plan, {"part-evil.parquet.ready": evil_part(tmp_path)})
    if planted == "world-writable":
        os.chmod(scratch, 0o777)
    elif planted == "another user's":
        os.chown(scratch, 12345, 12345)
    before_planted, before_rows = snapshot(inside), canonical(dedup(read_dataset(data)))

    messages = run(data)

    assert snapshot(inside) == before_planted  # not followed, not written into
    after = read_dataset(data)
    assert "EVILUSDT" not in after["symbol"].to_list()
    assert canonical(after).equals(before_rows)
    assert len(part_files(bucket)) == 1
    assert any(str(scratch) in m for m in messages), messages
    assert not any(m.startswith("crashed") for m in messages), messages


def test_the_scratch_folder_is_created_private(tmp_path, monkeypatch):
    data = dataset(tmp_path)
    modes = []
    real_merge = compact.merge_parts

    def merge(files, out):
        modes.append(os.lstat(swap_scratch(data)).st_mode & 0o777)
        return real_merge(files, out)

    monkeypatch.setattr(compact, "merge_parts", merge)
    Compactor(data, swap=True).run(None)
    assert modes == [0o700]
    assert not swap_scratch(data).exists()


def test_an_interrupted_compaction_of_ours_is_still_finished(tmp_path):
    """The checks refuse only what compaction does not write: a real plan left by a kill after
    the old parts were hidden is rolled forward, whichever version wrote it."""
    data = dataset(tmp_path)
    bucket = layout.partition_dir(data, USDM, M1, DAY)
    parts = part_files(bucket)
    want = canonical(dedup(read_dataset(data)))
    for hidden in (True, False):
        scratch = hide_scratch(data) if hidden else data / ".staging" / "compacting"
        scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        plan_id = uuid.uuid4().hex
        merged = layout.part_name(0)
        plan = {
            "mode": "hide",
            "bucket": f"market=usdm/interval=1m/date={DAY}",
            "merged": merged,
            "replaces": [p.name for p in parts],
        }
        (scratch / (f".{plan_id}.plan" if hidden else f"{plan_id}.plan")).write_text(
            json.dumps(plan)
        )
        (scratch / plan_id).mkdir()
        compact.merge_parts(
            parts, scratch / plan_id / (f".{merged}.ready" if hidden else f"{merged}.ready")
        )
        for p in parts:  # killed after hiding the old parts, before publishing the merged file
            os.replace(p, scratch / plan_id / (f".{p.name}.old" if hidden else f"{p.name}.old"))
        assert read_dataset(data).height == 0
        assert Compactor(data).run(None).recovered == 1
        assert canonical(read_dataset(data)).equals(want)
        parts = part_files(bucket)
    assert not (data / ".staging").exists()
    assert list(hide_scratch(data).iterdir()) == []
    assert (
        pl.scan_parquet(data, hive_partitioning=True, hidden_file_prefix=".").collect().height
        == want.height
    )
