"""`python -m benchmarks [--quick] [--only NAME[,NAME]] [--json FILE]`: run the scenarios, print
the table.

Scenarios (in order): ingest, blogpost, fullmarket, flush, delta, startup, attach, ui, profile,
dataset.
`dataset` is `benchmarks/dataset.py` (flush time as a recorded dataset grows, queries,
compaction), run as a subprocess when that file exists; its output is shown as is.

`--quick` shortens what can be shortened (the full-market runs last 60 s instead of 10 minutes,
fewer rounds and repeats); every figure is still measured.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import PY, REPO, Row, child_env, machine

SCENARIOS = (
    "ingest",
    "blogpost",
    "fullmarket",
    "flush",
    "delta",
    "startup",
    "attach",
    "ui",
    "profile",
    "dataset",
)
MODULES = {
    "ingest": "benchmarks.ingest",
    "blogpost": "benchmarks.blogpost",
    "fullmarket": "benchmarks.fullmarket",
    "flush": "benchmarks.flush",
    "delta": "benchmarks.delta",
    "startup": "benchmarks.startup",
    "attach": "benchmarks.attach",
    "ui": "benchmarks.ui_latency",
    "profile": "benchmarks.profile",
}


def _dataset(quick: bool) -> list[Row]:
    script = REPO / "benchmarks" / "dataset.py"
    if not script.exists():
        return [Row("dataset (benchmarks/dataset.py)", "not present", "", "skipped")]
    args = ["--symbols", "100", "--days", "2"] if quick else []
    started = time.monotonic()
    out = subprocess.run(
        [PY, str(script), *args],
        env=child_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    took = time.monotonic() - started
    if out.returncode != 0:
        return [
            Row(
                "dataset (benchmarks/dataset.py)",
                f"exit {out.returncode}",
                "",
                "ERROR",
                [f"dataset.py {' '.join(args)}:\n" + textwrap.indent(out.stderr[-2000:], "      ")],
            )
        ]
    return [
        Row(
            "dataset (benchmarks/dataset.py)",
            f"ran in {took:.0f} s",
            "",
            "info",
            [
                f"dataset.py {' '.join(args)} output:\n"
                + textwrap.indent(out.stdout.strip(), "      ")
            ],
        )
    ]


def _table(rows: list[Row]) -> str:
    head = ("scenario", "figure", "target", "ratio / verdict")
    cells = [head] + [(r.scenario, r.figure, r.target, r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells[1:]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description="kline-tui performance benchmark"
    )
    p.add_argument(
        "--quick", action="store_true", help="shorter runs (full-market 60 s instead of 10 min)"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these scenarios (repeat or comma-separate): {', '.join(SCENARIOS)}",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    chosen = [n for part in args.only for n in part.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")

    missing = [
        m
        for m in ("websockets", "orjson", "pandas", "pyarrow", "psutil", "pyinstrument")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        print(
            f"missing benchmark dependencies: {', '.join(missing)}; install them with\n"
            '  pip install -e ".[bench]"',
            file=sys.stderr,
        )
        return 2
    if shutil.which("tmux") is None and {"fullmarket", "startup"} & set(chosen):
        print(
            "tmux is needed by the fullmarket and startup scenarios (apt-get install tmux)",
            file=sys.stderr,
        )
        return 2
    print("kline-tui benchmark" + (" (--quick)" if args.quick else ""))
    for line in machine():
        print("  " + line)
    print(flush=True)
    rows: list[Row] = []
    timings = []
    for name in SCENARIOS:
        if name not in chosen:
            continue
        print(f"running {name}...", flush=True)
        started = time.monotonic()
        try:
            got = (
                _dataset(args.quick)
                if name == "dataset"
                else importlib.import_module(MODULES[name]).run(args.quick)
            )
        except KeyboardInterrupt:
            print("interrupted: children stopped, temporary folders removed", file=sys.stderr)
            return 130
        except Exception as exc:  # one broken scenario must not hide the others
            got = [
                Row(
                    name,
                    "error",
                    "",
                    "ERROR",
                    [
                        f"{name} failed: {type(exc).__name__}: {exc}\n"
                        + textwrap.indent(traceback.format_exc()[-3000:], "      ")
                    ],
                )
            ]
        took = time.monotonic() - started
        timings.append(f"{name} {took:.0f} s")
        for row in got:
            print(f"  {row.scenario}: {row.figure}  [{row.verdict}]", flush=True)
        rows += got

    print("\n" + _table(rows))
    notes = [n for r in rows for n in r.notes]
    if notes:
        print("\nnotes")
        for note in notes:
            print("  - " + note)
    print(f"\nwall time per scenario: {', '.join(timings)}")
    print(
        "the machine is shared with other work: figures are noisy; "
        "ratios within one run are what compare."
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine(), "quick": args.quick, "rows": [asdict(r) for r in rows]},
                indent=2,
            )
        )
    failed = [r for r in rows if "FAIL" in r.verdict or r.verdict == "ERROR"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
