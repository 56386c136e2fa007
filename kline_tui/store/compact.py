"""Compaction: a closed bucket's part files become one file sorted by (symbol, open_time), each
candle once, without a reader ever seeing a row twice or missing one, and safe to kill anywhere.

Why a directory swap. Readers glob `<data_dir>/**/*.parquet` and see every file under the data
directory whatever its folder (Polars and DuckDB do not skip hidden folders). Each file rename or
unlink adds or removes the rows of one file, so no sequence of them turns N parts into one merged
file without a moment where the merged file and some parts are both visible (rows twice) or
neither is (rows missing). One operation changes a whole folder at once: exchanging two
directories (`renameat2(RENAME_EXCHANGE)` on Linux, `renamex_np(RENAME_SWAP)` on macOS). So:

1. A plan (`.<id>.plan`: bucket, merged file name, the parts it replaces) is written to a scratch
   folder *beside* the data directory (`.<name>.compacting/`, same filesystem; anything inside
   the data directory would be visible to readers).
2. The listed parts are merged into `<id>/<merged>.parquet` in that scratch folder and fsynced.
3. Parts that appeared in the bucket since the listing (a recorder still writing late candles)
   are hard-linked into `<id>/`, then `<id>/` and the bucket folder are exchanged in one call:
   readers see either all the old parts or the merged file, never both.
4. `<id>/` now holds the old parts; it is deleted with the plan.

A kill before step 3 leaves the bucket untouched, a kill after it leaves the merged bucket: the
dataset reads back the same rows at every instant. The next run reads the leftover plans first:
a work folder still holding the merged file was never swapped and is dropped (the bucket is
merged again); otherwise the swap happened and the old parts are dropped. A part a writer
published between the hard links and the exchange would be carried out with the old folder;
writers that hold `publishing()` while they rename (backfill, import and repair do) never race
the exchange, and for any other writer the cleanup moves such a stray part back into the bucket.

Where no directory exchange exists (another OS, a filesystem that refuses it, or a scratch folder
that cannot sit beside the data directory) the fallback "hide then publish" keeps its work in
`.kline-tui/compacting/` under hidden names that do not end in `.parquet`: the merged file is
completed there (`.ready`), the old parts are moved in beside it, then the merged file is moved
into the bucket. A reader then never sees a row twice but can miss a bucket's rows for that
moment, and after a kill in it until the next run, which rolls the plan forward.

Nothing in a scratch folder is trusted. The one beside the data directory sits in its parent,
often a shared folder like /tmp where another user could plant it: it is created fresh with mode
0700, and an existing one is used only if it is a real folder (not a link) of ours that nobody
else can write; otherwise the run falls back to the folder inside the data directory, and a
recovery leaves it alone. A plan names its bucket relative to the data directory
(`market=.../interval=.../date=...`, no `..`, no link out) and its files by plain names; a plan
that does not is reported, set aside (`.refused`) and never followed.

Only closed buckets are compacted, those whose period ended `grace_ms` before the exchange time
the caller gives: a bucket still receiving candles would need compacting again (still correct,
only wasted work). Of two rows with the same (symbol, open_time) the one received live (`ws`) is
kept, else the one from REST, else the archive's. A foreign file in a bucket (another schema) is
never merged: it stays where it is, for `kline-tui verify` to name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from kline_tui.store.layout import (
    LEGACY_STAGING,
    bookkeeping_dir,
    fsync_dir,
    is_dataset,
    lock_fd,
    part_name,
)
from kline_tui.store.parts import encode
from kline_tui.store.read import READ_ERRORS, Bucket, buckets, part_files, split_foreign
from kline_tui.store.schema import PARQUET_SCHEMA

__all__ = [
    "DEFAULT_GRACE_MS",
    "SOURCE_RANK",
    "CompactionError",
    "CompactionResult",
    "Compactor",
    "compact_bucket",
    "merge_parts",
    "recover",
    "unreadable",
]

log = logging.getLogger(__name__)

# A bucket is compacted this long after its period ends: the sink flushes within a minute, and a
# late close or a short REST backfill lands within a few more.
DEFAULT_GRACE_MS = 10 * 60_000

# Which of two copies of a candle survives: the live one, then REST's, then an archive's.
SOURCE_RANK = {"ws": 0, "rest": 1, "archive": 2}

# Row groups of a merged file: small enough that a one-symbol query skips most of a bucket by the
# row-group statistics (the file is sorted by symbol), large enough to compress well.
ROW_GROUP_ROWS = 16_384

_PLAN = ".plan"
_READY = ".ready"
_OLD = ".old"
_REFUSED = ".refused"

# What a plan may name: its id, its bucket's three folders, and plain file names.
_PLAN_ID = re.compile(r"[0-9a-f]{32}")
_BUCKET_PARTS = (
    re.compile(r"market=[a-z0-9_-]+"),
    re.compile(r"interval=[0-9]+[a-zA-Z]+"),
    re.compile(r"date=[0-9]{4}-[0-9]{2}-[0-9]{2}"),
)

Events = Callable[[int, str], None]
# A plan as written to its file: mode, bucket, merged file name, the parts it replaces.
Plan = dict[str, Any]


class CompactionError(Exception):
    """A bucket that cannot be compacted now; the message names it and says why."""


@dataclass(slots=True)
class CompactionResult:
    """What one compaction run did."""

    buckets: int = 0  # buckets merged
    files_in: int = 0  # part files they held
    rows_in: int = 0
    rows_out: int = 0
    recovered: int = 0  # interrupted compactions finished or undone
    failed: list[str] = field(default_factory=list)  # one sentence per bucket left as it was
    busy: bool = False  # another compaction held the data directory; nothing was done
    yielded: int = 0  # buckets left for the next run because writers kept committing (Delta)
    vacuumed: int | None = None  # files VACUUM deleted (Delta; None: it did not run)
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        """Rows dropped because the same candle was held more than once."""
        return self.rows_in - self.rows_out

    def summary(self) -> str:
        if self.busy:
            return "another compaction is running on this data directory; nothing done"
        if not self.buckets:
            text = "nothing to compact"
        else:
            text = (
                f"compacted {self.buckets} bucket{'s' if self.buckets != 1 else ''}: "
                f"{self.files_in} files into {self.buckets}, {self.rows_out} rows"
                f" ({self.duplicates} duplicates removed) in {self.seconds:.1f} s"
            )
        if self.recovered:
            text += f"; finished {self.recovered} interrupted compaction(s)"
        if self.yielded:
            text += f"; {self.yielded} bucket(s) left for the next run (writers committing)"
        if self.vacuumed is not None:
            text += f"; vacuum deleted {self.vacuumed} file(s) past the retention"
        if self.failed:
            text += f"; {len(self.failed)} bucket(s) left as they were"
        return text


# --- the directory exchange -----------------------------------------------------------------


def _exchange_function() -> Callable[[Path, Path], None] | None:
    """The platform's atomic exchange of two paths, or None."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2

        def exchange(a: Path, b: Path) -> None:
            if (
                libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
                != 0
            ):
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), str(a))

        return exchange
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2

        def exchange(a: Path, b: Path) -> None:
            if libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), str(a))

        return exchange
    return None


_EXCHANGE = _exchange_function()
# errnos meaning "this filesystem cannot exchange": fall back to hide-then-publish.
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP, errno.EPERM}


def swap_scratch(data_dir: Path) -> Path:
    """The scratch folder beside the data directory, where merged files wait to be swapped in."""
    real = Path(data_dir).resolve()
    return real.parent / f".{real.name}.compacting"


def hide_scratch(data_dir: Path) -> Path:
    """The fallback's scratch folder, in the bookkeeping folder (hidden names, none `.parquet`)."""
    return bookkeeping_dir(Path(data_dir).resolve()) / "compacting"


def _legacy_scratch(data_dir: Path) -> Path:
    """Where earlier versions kept the fallback's work: recovered, never written."""
    return Path(data_dir).resolve() / LEGACY_STAGING / "compacting"


def _scratch_problem(path: Path) -> str | None:
    """Why `path` must not be used as a scratch folder, or None: it must be a real folder (not a
    link), ours, that nobody else can write into."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if st.st_uid != os.geteuid():
        return f"it belongs to user id {st.st_uid}, not to us"
    if st.st_mode & 0o022:
        return "other users can write into it"
    return None


def _claim_scratch(path: Path) -> str | None:
    """Make `path` our scratch folder: created fresh, mode 0700, or an existing one that passes
    `_scratch_problem`. Returns why it cannot be, or None."""
    try:
        os.mkdir(path, 0o700)
        return None
    except FileExistsError:
        return _scratch_problem(path)
    except OSError as exc:
        return exc.strerror or str(exc)


def _swap_usable(data_dir: Path, report: Events | None = None) -> bool:
    """Whether buckets of `data_dir` can be swapped with folders of the scratch beside it."""
    if _EXCHANGE is None:
        return False
    real = Path(data_dir).resolve()
    scratch = swap_scratch(real)
    problem = _claim_scratch(scratch)
    if problem is not None:
        if report is not None:
            report(
                logging.WARNING,
                f"not using {scratch} ({problem}); compacting inside the data directory instead",
            )
        return False
    probe_a = scratch / f"probe-{uuid.uuid4().hex}"
    probe_b = bookkeeping_dir(real) / f"probe-{uuid.uuid4().hex}"
    try:
        if os.stat(scratch).st_dev != os.stat(real).st_dev:
            return False
        probe_b.parent.mkdir(exist_ok=True)
        probe_a.mkdir()
        probe_b.mkdir()
        _EXCHANGE(probe_a, probe_b)
        return True
    except OSError:
        return False
    finally:
        for probe in (probe_a, probe_b):
            with contextlib.suppress(OSError):
                probe.rmdir()


# --- locks ----------------------------------------------------------------------------------


@contextmanager
def _exclusive(data_dir: Path, name: str, wait: bool) -> Iterator[bool]:
    """Yields True with the lock held, False (nothing held) if it is busy and `wait` is False."""
    fd = lock_fd(data_dir, name)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# --- plans ----------------------------------------------------------------------------------


def _write_plan(scratch: Path, plan_id: str, plan: Plan) -> Path:
    path = scratch / f".{plan_id}{_PLAN}"
    tmp = scratch / f".{plan_id}{_PLAN}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(plan, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(scratch)
    return path


def _ready_name(merged: str, hidden: bool = True) -> str:
    return f".{merged}{_READY}" if hidden else merged + _READY


def _old_name(part: str, hidden: bool = True) -> str:
    return f".{part}{_OLD}" if hidden else part + _OLD


class _RefusedPlan(ValueError):
    """A plan file that does not hold what compaction writes; never followed."""


def _plain_name(name: object) -> str:
    """A part file's name as a plan may hold it: a bare `*.parquet` name, nothing that walks."""
    if (
        not isinstance(name, str)
        or not name.endswith(".parquet")
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
    ):
        raise _RefusedPlan(f"{name!r} is not a plain part file name")
    return name


def _checked_plan(data_dir: Path, scratch: Path, plan_path: Path) -> tuple[Plan, Path, Path]:
    """The plan in `plan_path`, its work folder and its bucket folder, each checked to name only
    what compaction itself writes: raises _RefusedPlan saying what is wrong."""
    name = plan_path.name
    plan_id = name[1 if name.startswith(".") else 0 : -len(_PLAN)]
    if not _PLAN_ID.fullmatch(plan_id):
        raise _RefusedPlan("not a plan name compaction writes")
    try:
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _RefusedPlan(f"unreadable: {exc}") from None
    if not isinstance(plan, dict) or plan.get("mode") not in ("swap", "hide"):
        raise _RefusedPlan("no mode")
    bucket = plan.get("bucket")
    parts = bucket.split("/") if isinstance(bucket, str) else []
    if len(parts) != 3 or not all(
        rx.fullmatch(p) for rx, p in zip(_BUCKET_PARTS, parts, strict=True)
    ):
        raise _RefusedPlan(
            f"bucket {bucket!r} is not market=.../interval=.../date=... inside the data directory"
        )
    folder = data_dir
    for part in parts:  # no link anywhere on the way: the bucket is where its name says
        folder = folder / part
        if folder.is_symlink():
            raise _RefusedPlan(f"{folder} is a symbolic link")
    if not folder.resolve().is_relative_to(data_dir.resolve()):
        raise _RefusedPlan(f"bucket {bucket!r} leads out of the data directory")
    _plain_name(plan.get("merged"))
    replaces = plan.get("replaces")
    if not isinstance(replaces, list):
        raise _RefusedPlan("no list of the parts it replaces")
    for part in replaces:
        _plain_name(part)
    work = scratch / plan_id
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise _RefusedPlan(f"{work} is not a folder")
    return plan, work, folder


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)  # never follows a link: a link itself is refused


# --- merging --------------------------------------------------------------------------------


def merge_parts(files: list[Path], out: Path) -> tuple[int, int]:
    """Write the rows of `files` to `out` sorted by (symbol, open_time), each candle once,
    fsynced. Returns (rows read, rows written). Raises CompactionError naming unreadable files
    and foreign ones (another schema: merging them would add rows of nulls)."""
    _, foreign = split_foreign(files)
    if foreign:
        names = ", ".join(p.name for p in foreign)
        raise CompactionError(
            f"foreign file(s) {names}: not this dataset's columns; run 'kline-tui verify'"
        )
    lf = pl.scan_parquet(
        files,
        hive_partitioning=False,
        schema=PARQUET_SCHEMA,
        missing_columns="insert",
        extra_columns="ignore",
    )
    try:
        df = lf.collect()
    except READ_ERRORS as exc:
        bad = unreadable(files)
        if bad:
            names = ", ".join(p.name for p in bad)
            raise CompactionError(
                f"unreadable file(s) {names}: run 'kline-tui verify --repair'"
            ) from None
        raise CompactionError(f"cannot read the parts: {exc}") from None
    rows_in = df.height
    rank = (
        pl.col("source")
        .replace_strict(SOURCE_RANK, default=len(SOURCE_RANK), return_dtype=pl.Int8())
        .fill_null(len(SOURCE_RANK))
    )
    merged = (
        df.with_columns(_rank=rank)
        .sort("symbol", "open_time", "_rank")
        .unique(["symbol", "open_time"], keep="first", maintain_order=True)
        .drop("_rank")
    )
    encode(merged, out, row_group_size=ROW_GROUP_ROWS)
    with open(out, "rb") as fh:
        os.fsync(fh.fileno())
    return rows_in, merged.height


def unreadable(files: Iterable[Path]) -> list[Path]:
    """The files among `files` that cannot be read in full (a file gone meanwhile is not one)."""
    bad = []
    for path in files:
        try:
            pl.read_parquet(path, hive_partitioning=False)
        except READ_ERRORS:
            if path.exists():
                bad.append(path)
    return bad


# --- one bucket -----------------------------------------------------------------------------


def compact_bucket(
    data_dir: Path, bucket: Bucket, files: list[Path], *, swap: bool
) -> tuple[int, int]:
    """Replace `files` (parts of `bucket` listed by the caller) by one merged file.

    Call with the compaction lock held. Returns (rows read, rows written).
    """
    data_dir = Path(data_dir).resolve()
    try:
        rel = bucket.path.resolve().relative_to(data_dir).as_posix()
    except ValueError:
        raise CompactionError("its folder leads out of the data directory") from None
    scratch = swap_scratch(data_dir) if swap else hide_scratch(data_dir)
    if not swap:
        scratch.parent.mkdir(parents=True, exist_ok=True)
    problem = _claim_scratch(scratch)
    if problem is not None:
        raise CompactionError(f"cannot use the scratch folder {scratch}: {problem}")
    _files_in(bucket.path)  # a bucket holding a folder is refused before any work
    plan_id = uuid.uuid4().hex
    merged = part_name(0)
    plan = {
        "mode": "swap" if swap else "hide",
        "bucket": rel,
        "merged": merged,
        "replaces": [p.name for p in files],
    }
    plan_path = _write_plan(scratch, plan_id, plan)
    work = scratch / plan_id
    work.mkdir()
    tmp = work / f".{merged}.tmp"
    try:
        rows = merge_parts(files, tmp)
    except BaseException:
        _remove_tree(work)
        plan_path.unlink(missing_ok=True)
        raise
    if swap:
        os.replace(tmp, work / merged)
        fsync_dir(work)
        _swap_in(data_dir, plan, work, bucket.path)
    else:
        os.replace(tmp, work / _ready_name(merged))
        fsync_dir(work)
        _hide_and_publish(plan, work, bucket.path)
    _remove_tree(work)
    plan_path.unlink(missing_ok=True)
    fsync_dir(scratch)
    return rows


def _files_in(folder: Path) -> list[Path]:
    """Every file of a folder, parts or not: a swap must carry along what it did not merge."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if any(e.is_dir(follow_symlinks=False) for e in entries):
        raise CompactionError(f"{folder} holds a folder; move it out, then compact")
    return sorted(Path(e.path) for e in entries)


def _swap_in(data_dir: Path, plan: Plan, work: Path, bucket_dir: Path) -> None:
    replaced = set(plan["replaces"])
    with _exclusive(data_dir, "publish.lock", wait=True):
        # Files published since the listing (or not parts at all) stay: they go into the new
        # folder too.
        for path in _files_in(bucket_dir):
            if path.name not in replaced:
                os.link(path, work / path.name, follow_symlinks=False)
        fsync_dir(work)
        _EXCHANGE(work, bucket_dir)  # type: ignore[misc]  # callers checked it exists
        fsync_dir(bucket_dir.parent)
        fsync_dir(work.parent)
        _return_strays(plan, work, bucket_dir)


def _return_strays(plan: Plan, old: Path, bucket_dir: Path) -> int:
    """Move back into the bucket any file in the swapped-out folder that the merge did not cover
    and the bucket lacks (published by a writer that did not hold `publishing()`)."""
    replaced = set(plan["replaces"]) | {plan["merged"]}
    moved = 0
    for path in old.iterdir():
        if path.name in replaced or (bucket_dir / path.name).exists() or path.is_dir():
            continue
        bucket_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, bucket_dir / path.name)
        moved += 1
    if moved:
        fsync_dir(bucket_dir)
    return moved


def _hide_and_publish(plan: Plan, work: Path, bucket_dir: Path, hidden: bool = True) -> None:
    """The fallback, from a complete merged file onward (also how a leftover plan rolls forward)."""
    for name in plan["replaces"]:
        src = bucket_dir / name
        if src.exists():
            os.replace(src, work / _old_name(name, hidden))
    fsync_dir(bucket_dir)
    bucket_dir.mkdir(parents=True, exist_ok=True)
    os.replace(work / _ready_name(plan["merged"], hidden), bucket_dir / plan["merged"])
    fsync_dir(bucket_dir)


def recover(data_dir: Path, report: Events | None = None) -> int:
    """Finish or undo what killed compactions left; returns how many. Hold the compaction lock.

    A scratch folder that is not ours alone is not read; a plan that names anything but a
    bucket of this data directory and plain file names is renamed `.refused` and not followed.
    Both are told to `report`.
    """
    report = report or (lambda level, message: None)
    data_dir = Path(data_dir).resolve()
    done = 0
    for scratch in (swap_scratch(data_dir), hide_scratch(data_dir), _legacy_scratch(data_dir)):
        if not os.path.lexists(scratch):
            continue
        problem = _scratch_problem(scratch)
        if problem is not None:
            report(
                logging.ERROR, f"not reading compaction plans in {scratch}: {problem}; remove it"
            )
            continue
        done += _recover_plans(data_dir, scratch, report)
    legacy = data_dir / LEGACY_STAGING
    for folder in (_legacy_scratch(data_dir), legacy):  # an earlier version's, once emptied
        with contextlib.suppress(OSError):
            folder.rmdir()
    for probe in bookkeeping_dir(data_dir).glob("probe-*"):  # a killed _swap_usable's
        _remove_tree(probe)
    return done


def _recover_plans(data_dir: Path, scratch: Path, report: Events) -> int:
    done = 0
    for plan_path in sorted(p for p in scratch.iterdir() if p.name.endswith(_PLAN)):
        try:
            plan, work, bucket_dir = _checked_plan(data_dir, scratch, plan_path)
        except _RefusedPlan as exc:
            os.replace(plan_path, plan_path.with_name(f".{plan_path.name.lstrip('.')}{_REFUSED}"))
            report(logging.ERROR, f"refused compaction plan {plan_path}: {exc}; not followed")
            continue
        hidden = plan_path.name.startswith(".")
        if work.is_dir():
            if plan["mode"] == "swap" and not (work / plan["merged"]).exists():
                _return_strays(plan, work, bucket_dir)  # swapped: `work` holds the old parts
            elif plan["mode"] == "hide" and (work / _ready_name(plan["merged"], hidden)).exists():
                _hide_and_publish(plan, work, bucket_dir, hidden)
            _remove_tree(work)
        plan_path.unlink(missing_ok=True)
        done += 1
    # Half-written plans and probes: nothing refers to them. A refused plan's folder is kept.
    kept = {
        p.name.lstrip(".").split(".")[0]
        for p in scratch.iterdir()
        if p.name.endswith((_PLAN, _REFUSED))
    }
    for leftover in scratch.iterdir():
        if leftover.name.endswith(".tmp"):
            leftover.unlink(missing_ok=True)
        elif leftover.is_dir() and not leftover.is_symlink() and leftover.name not in kept:
            _remove_tree(leftover)
    fsync_dir(scratch)
    return done


def _drop_scratch(data_dir: Path) -> None:
    """Remove the scratch folder beside the data directory when empty and ours, leaving no trace."""
    scratch = swap_scratch(data_dir)
    if os.path.lexists(scratch) and _scratch_problem(scratch) is None:
        with contextlib.suppress(OSError):
            scratch.rmdir()


# --- the compactor --------------------------------------------------------------------------


class Compactor:
    """Compacts a data directory's closed buckets; safe beside a recorder writing into it.

    `events(level, message)` receives what happened (pass `EventLog.emit`); it is called on the
    caller's thread, never from the worker thread. `swap=None` uses the directory exchange
    where the platform and filesystem offer it, else the fallback; True/False force one (tests).
    """

    def __init__(
        self,
        data_dir: Path | str,
        events: Events | None = None,
        *,
        grace_ms: int = DEFAULT_GRACE_MS,
        swap: bool | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.events = events
        self.grace_ms = grace_ms
        self._swap = swap
        self._lock = asyncio.Lock()

    async def run_once(self, now_ms: int) -> CompactionResult:
        """Compact, off the event loop, every bucket that closed `grace_ms` before the exchange
        time `now_ms` and holds more than one part. Skips the run if another compaction holds
        the data directory."""
        async with self._lock:
            messages: list[tuple[int, str]] = []
            result = await asyncio.to_thread(
                self.run, now_ms, wait=False, report=lambda lvl, msg: messages.append((lvl, msg))
            )
        if self.events is not None:
            for level, message in messages:
                self.events(level, message)
        return result

    def run(
        self,
        now_ms: int | None,
        *,
        only: Iterable[Bucket] | None = None,
        force: bool = False,
        wait: bool = True,
        report: Events | None = None,
    ) -> CompactionResult:
        """Compact closed buckets (all buckets when `now_ms` is None) holding more than one part;
        `only` limits the run to those buckets and `force` merges them even when they hold one
        file (to drop duplicates inside it). Blocking; `wait=False` gives up at once if another
        compaction holds the data directory."""
        report = report or (lambda level, message: None)
        result = CompactionResult()
        started = time.perf_counter()
        if not is_dataset(self.data_dir):  # not ours to write into: no lock, no scratch
            result.seconds = time.perf_counter() - started
            return result
        with _exclusive(self.data_dir, "compact.lock", wait) as held:
            if not held:
                result.busy = True
                return result
            self._run_locked(now_ms, only, force, result, report)
        result.seconds = time.perf_counter() - started
        if result.buckets:
            report(logging.INFO, result.summary())
        return result

    def _run_locked(
        self,
        now_ms: int | None,
        only: Iterable[Bucket] | None,
        force: bool,
        result: CompactionResult,
        report: Events,
    ) -> None:
        """The run with the compaction lock held: finish what killed runs left, choose how buckets
        are exchanged, then compact each bucket that is due."""
        result.recovered = recover(self.data_dir, report)
        if result.recovered:
            report(logging.INFO, f"finished {result.recovered} interrupted compaction(s)")
        swap = _swap_usable(self.data_dir, report) if self._swap is not False else False
        if self._swap and not swap:
            raise CompactionError("this filesystem cannot exchange folders atomically")
        todo = list(only) if only is not None else buckets(self.data_dir)
        for bucket in todo:
            if now_ms is None or bucket.end_ms + self.grace_ms <= now_ms:
                swap = self._compact_one(bucket, force, swap, result, report)
        _drop_scratch(self.data_dir)

    def _compact_one(
        self, bucket: Bucket, force: bool, swap: bool, result: CompactionResult, report: Events
    ) -> bool:
        """Compact one bucket into `result`; returns whether to keep using the exchange."""
        files, foreign = split_foreign(part_files(bucket.path))
        if len(files) < (1 if force else 2):
            return swap
        for path, why in foreign.items():
            report(
                logging.WARNING,
                f"{bucket}: left {path.name} out ({why}); 'kline-tui verify' names it",
            )
        return self._merge_bucket(bucket, files, swap, result, report)

    def _merge_bucket(
        self,
        bucket: Bucket,
        files: list[Path],
        swap: bool,
        result: CompactionResult,
        report: Events,
    ) -> bool:
        """Merge `files` of `bucket` into one, counted into `result`, or noted there as failed with
        the bucket left as it was; returns whether to keep using the exchange."""
        try:
            rows_in, rows_out = compact_bucket(self.data_dir, bucket, files, swap=swap)
        except (CompactionError, OSError) as exc:
            if swap and isinstance(exc, OSError) and exc.errno in _NO_EXCHANGE:
                # This filesystem refuses the exchange: undo the attempt, fall back for good.
                recover(self.data_dir, report)
                return self._merge_bucket(bucket, files, False, result, report)
            why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            result.failed.append(f"{bucket}: {why}")
            report(logging.ERROR, f"cannot compact {bucket}: {why}")
            return swap
        result.buckets += 1
        result.files_in += len(files)
        result.rows_in += rows_in
        result.rows_out += rows_out
        return swap
