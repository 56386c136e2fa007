"""`kline-tui record --listen` as a user (and systemd) runs it: a child process with its API on
loopback, its readiness told on a real NOTIFY_SOCKET, its counters equal to the dataset, and its
bad settings refused in one line."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .datasets import read_dataset
from .support import KLINE_TUI, env_for, run_to_end

TOKEN = "a-token-for-the-test-0123"


def _get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _written(metrics: str) -> int:
    total = 0
    for family in text_string_to_metric_families(metrics):
        if family.name == "kline_tui_candles_written":
            total += int(sum(s.value for s in family.samples if s.name.endswith("_total")))
    return total


def test_record_listen_serves_the_api_tells_systemd_and_counts_what_is_on_disk(tmp_path: Path):
    data = tmp_path / "D"
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(0.2)
    env = env_for(tmp_path) | {"NOTIFY_SOCKET": str(notify), "KLINE_TUI_TOKEN": TOKEN}
    args = [KLINE_TUI, "record", "--demo", "--demo-speed", "60", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*args, "usdm:BTCUSDT:1m", "spot:ETHUSDT:1m", "--data-dir", str(data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []

    def heard(prefix: str) -> bool:
        with contextlib.suppress(TimeoutError):
            said.extend(listener.recv(4096).decode().split("\n"))
        return any(line.startswith(prefix) for line in said)

    try:
        _wait_for("READY=1", lambda: heard("READY=1"))
        service_file = data / ".kline-tui" / ".service.json"
        _wait_for("the runtime file", service_file.exists)
        url = json.loads(service_file.read_text())["url"]

        status, body = _get(f"{url}/healthz")
        assert status == 200, body
        assert _get(f"{url}/api/v1/flush", method="POST")[0] == 401
        assert _get(f"{url}/api/v1/flush", "wrong", method="POST")[0] == 401
        _wait_for(
            "candles buffered",
            lambda: b"kline_tui_rows_buffered 0.0" not in _get(f"{url}/metrics")[1],
        )
        status, body = _get(f"{url}/api/v1/flush", TOKEN, method="POST")
        assert status == 200 and json.loads(body)["written"] >= 0
        # Paused, nothing more is written between the scrape and the read of the folder.
        assert _get(f"{url}/api/v1/pause", TOKEN, method="POST")[0] == 200
        assert _get(f"{url}/api/v1/flush", TOKEN, method="POST")[0] == 200
        metrics = _get(f"{url}/metrics")[1].decode()
        assert _written(metrics) == read_dataset(data).height > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        _wait_for("STOPPING=1", lambda: heard("STOPPING=1"), timeout=5)
        listener.close()
    assert proc.returncode == 0, err
    assert not (data / ".kline-tui" / ".service.json").exists()
    assert TOKEN not in err  # the token is never logged


def test_record_listen_beyond_loopback_without_a_token_is_one_line_and_exit_2(tmp_path: Path):
    env = env_for(tmp_path)
    env.pop("KLINE_TUI_TOKEN", None)
    result = run_to_end(
        [KLINE_TUI, "record", "--demo", "--listen", "0.0.0.0:0", "usdm:BTCUSDT:1m"],
        env,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a token you set" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_record_listen_refuses_a_bad_address(tmp_path: Path):
    result = run_to_end(
        [KLINE_TUI, "record", "--demo", "--listen", "localhost:99999", "usdm:BTCUSDT:1m"],
        env_for(tmp_path),
    )
    assert result.returncode == 2
    assert "--listen: port 99999 is above 65535" in result.stderr
