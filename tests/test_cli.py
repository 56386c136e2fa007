"""`kline-tui record` as a user runs it (a subprocess, signals, and the files it leaves), and how
every command parses, reports and exits."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from kline_tui import cli
from kline_tui.cli import command
from kline_tui.config import ConfigError
from kline_tui.model import StreamKey
from kline_tui.runtime import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

from .checks import assert_exact_recording
from .datasets import read_dataset
from .support import KLINE_TUI, env_for, run_for, run_to_end

STREAMS = ["usdm:BTCUSDT:1m", "spot:ETHUSDT:1s", "coinm:BTCUSD_PERP:1m"]


def test_record_demo_then_sigterm(tmp_path):
    data = tmp_path / "D"
    code, err = run_for(
        [KLINE_TUI, "record", "--demo", "--demo-speed", "60", *STREAMS, "--data-dir", str(data)],
        8.0,
        env_for(tmp_path),
    )
    assert code == 0, err
    assert "Traceback" not in err
    assert re.search(r"flushed \d+ rows", err)
    assert_exact_recording(read_dataset(data), [StreamKey.parse(s) for s in STREAMS], min_rows=3)

    # The dataset commands work on what `record` wrote: verify finds it clean, compact merges it.
    env = env_for(tmp_path)
    verify = run_to_end([KLINE_TUI, "verify", "--data-dir", str(data)], env, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    compact = run_to_end([KLINE_TUI, "compact", "--all", "--data-dir", str(data)], env, timeout=120)
    assert compact.returncode == 0, compact.stdout + compact.stderr
    buckets = {p.parent for p in data.rglob("*.parquet")}
    assert all(len(list(b.glob("*.parquet"))) == 1 for b in buckets)
    assert_exact_recording(read_dataset(data), [StreamKey.parse(s) for s in STREAMS], min_rows=3)


def test_record_against_a_separate_simulator(tmp_path):
    env = env_for(tmp_path)
    sim = subprocess.Popen(
        [sys.executable, "-m", "kline_tui.sim", "--speed", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = sim.stdout.readline()
            if not line or line.strip() == "ready":
                break
            lines.append(line)
        endpoints = "".join(x for x in lines if x.startswith(("[endpoints", "ws =", "rest =")))
        assert endpoints.count("[endpoints.") == 3, lines
        data = tmp_path / "D"
        config = tmp_path / "my.toml"
        config.write_text(
            f'data_dir = "{data}"\nwatch = {STREAMS!r}\n'.replace("'", '"') + endpoints
        )
        code, err = run_for([KLINE_TUI, "record", "--config", str(config)], 8.0, env)
    finally:
        sim.send_signal(signal.SIGINT)
        sim.communicate(timeout=20)
    assert code == 0, err
    assert_exact_recording(read_dataset(data), [StreamKey.parse(s) for s in STREAMS], min_rows=3)


@pytest.mark.parametrize(
    "stream, words",
    [
        ("spot:NOSUCHCOINUSDT:1m", "unknown symbol NOSUCHCOINUSDT on spot"),
        ("spot:BTCUSDT:2m", "unknown interval '2m'"),
        ("usdm:BTCUSDT:1s", "usdm has no 1s interval"),
        ("kraken:BTCUSDT:1m", "unknown market 'kraken'"),
        ("spot:../x:1m", "invalid symbol '../x'"),
    ],
)
def test_bad_streams_are_refused_with_one_line(tmp_path, stream, words):
    data = tmp_path / "D"
    proc = run_to_end(
        [KLINE_TUI, "record", "--demo", stream, "--data-dir", str(data)], env_for(tmp_path)
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert not data.exists()


def test_malformed_config_is_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('watch = ["spot:BTCUSDT:1m"]\n[endpoints.spot]\nws = 42\n')
    proc = run_to_end([KLINE_TUI, "record", "--config", str(config)], env_for(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert f"{config}: endpoints.spot.ws: expected a ws:// or wss:// URL" in proc.stderr


def test_core_and_every_command_but_the_ui_never_import_textual(tmp_path):
    modules = ", ".join(f"kline_tui.cli.{c.module}" for c in cli.COMMANDS.values())
    code = (
        "import sys, kline_tui.recorder.pipeline, kline_tui.sim, kline_tui.store.layout;"
        f"import kline_tui.cli.ui, {modules};"
        # A mistake on the UI's command line is reported before Textual is needed.
        "assert kline_tui.cli.main(['--demo-speed', '0']) == 2;"
        f"assert kline_tui.cli.main(['verify', '--data-dir', {str(tmp_path / 'none')!r}]) == 2;"
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env_for(tmp_path))


# -- every command the same way ----------------------------------------------------------------

# The words after `kline-tui` that reach each command ("" is the UI), and arguments that get each
# past its own checks to the config (which the tests below make fail).
EVERY_COMMAND = {
    "": [],
    "record": [],
    "attach": ["http://127.0.0.1:8765"],
    "web": ["http://127.0.0.1:8765"],
    "compact": [],
    "verify": [],
    "backfill": ["usdm:BTCUSDT:1m", "--from", "2025-01-01"],
    "import": ["BTCUSDT-1m-2025-01.zip"],
}


def test_every_command_is_listed_and_dispatched():
    assert set(EVERY_COMMAND) - {""} == set(cli.COMMANDS)


def _invoke(word: str, *args: str) -> int:
    return cli.main([word, *args] if word else list(args))


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    listed = out.split("commands", 1)[1]
    for word in cli.COMMANDS:
        assert re.search(rf"^  {word} +\S", listed, re.MULTILINE), out


@pytest.mark.parametrize("word", list(EVERY_COMMAND))
def test_each_command_has_help(capsys, word):
    assert _invoke(word, "--help") == EXIT_OK
    out, err = capsys.readouterr()
    assert out.startswith(f"usage: {'kline-tui ' + word if word else 'kline-tui'} ") and err == ""
    assert "--config FILE" in out and "--data-dir DIR" in out


@pytest.mark.parametrize("word", list(EVERY_COMMAND))
def test_a_mistake_on_any_command_line_is_one_line_and_exit_2(capsys, word):
    assert _invoke(word, *EVERY_COMMAND[word], "--no-such-option") == EXIT_USAGE
    out, err = capsys.readouterr()
    prog = f"kline-tui {word}" if word else "kline-tui"
    assert out == ""
    assert err.strip() == f"{prog}: unrecognized arguments: --no-such-option (see {prog} --help)"


@pytest.mark.parametrize(
    "failure, code, line",
    [
        (
            ConfigError("c.toml: data_dir: expected a non-empty path"),
            EXIT_USAGE,
            "c.toml: data_dir: expected a non-empty path",
        ),
        (
            PermissionError(13, "Permission denied", "/etc/kline/c.toml"),
            EXIT_USAGE,
            "/etc/kline/c.toml: Permission denied",
        ),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
    ],
    ids=["config", "oserror", "ctrl-c"],
)
@pytest.mark.parametrize("word", list(EVERY_COMMAND))
def test_every_command_reports_and_exits_the_same_way(
    monkeypatch, capsys, word, failure, code, line
):
    def load_settings(path=None):
        raise failure

    monkeypatch.setattr(command, "load_settings", load_settings)
    assert _invoke(word, *EVERY_COMMAND[word]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"{'kline-tui ' + word if word else 'kline-tui'}: {line}"


def test_python_dash_m_runs_the_same_command_line(tmp_path):
    proc = run_to_end(
        [sys.executable, "-m", "kline_tui.cli", "verify", "--data-dir", str(tmp_path / "none")],
        env_for(tmp_path),
    )
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip().startswith(
        f"kline-tui verify: no data directory at {tmp_path / 'none'}: "
    )
