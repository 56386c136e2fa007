"""sd_notify as systemd receives it: a real AF_UNIX datagram socket stands in for systemd's, and
each test reads the datagrams the notifier sent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kline_tui.binance.markets import Endpoints
from kline_tui.service import systemd
from kline_tui.service.systemd import MIN_PING_PERIOD_S, STATUS_LIMIT, Notifier

from .support import KLINE_TUI, env_for, write_config


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A socket bound where NOTIFY_SOCKET will point, as systemd's is; and that path."""
    path = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(2.0)
    yield receiver, path
    receiver.close()


def received(receiver: socket.socket) -> list[str]:
    """Every datagram waiting on the socket, decoded; waits for none."""
    messages = []
    receiver.setblocking(False)
    try:
        while True:
            messages.append(receiver.recv(8192).decode())
    except BlockingIOError:
        pass
    finally:
        receiver.settimeout(2.0)
    return messages


def test_ready_status_stopping_watchdog_arrive_as_systemd_reads_them(systemd_socket):
    receiver, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled

    assert notifier.ready("streams 3 live; rows 0 written")
    assert receiver.recv(8192) == b"READY=1\nSTATUS=streams 3 live; rows 0 written"
    assert notifier.status("streams 2 live, 1 stale")
    assert receiver.recv(8192) == b"STATUS=streams 2 live, 1 stale"
    assert notifier.watchdog()
    assert receiver.recv(8192) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert receiver.recv(8192) == b"STOPPING=1"
    assert notifier.ready()
    assert receiver.recv(8192) == b"READY=1"
    notifier.close()
    notifier.close()
    assert notifier.status("again")  # a closed notifier opens its socket again
    assert receiver.recv(8192) == b"STATUS=again"


def test_a_status_is_one_line_without_controls_and_bounded(systemd_socket):
    receiver, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    # A newline would start a field of its own: "READY=1" smuggled in through a status.
    notifier.status("bad\nREADY=1\x1b[2J" + "x" * 5000)
    message = receiver.recv(65536).decode()
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith("STATUS=bad READY=1")
    assert len(message) == len("STATUS=") + STATUS_LIMIT


def test_abstract_namespace_socket(systemd_socket):
    if not sys.platform.startswith("linux"):
        pytest.skip("the abstract socket namespace is Linux's")
    name = f"kline-tui-test-{uuid.uuid4().hex}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(2.0)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("up")
        assert receiver.recv(8192) == b"READY=1\nSTATUS=up"
    finally:
        receiver.close()


def test_no_socket_named_means_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.watchdog()
    assert notifier.watchdog_interval_s() is None  # no socket: nowhere to ping


@pytest.mark.parametrize("value", ["relative/notify", "@", "vsock:2:1234"])
def test_an_unusable_socket_name_is_ignored_and_logged_once(value, caplog):
    caplog.set_level(logging.WARNING, logger="kline_tui")
    notifier = Notifier({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert notifier.watchdog_interval_s() is None
    assert len(caplog.records) == 1


def test_a_platform_without_unix_sockets_ignores_the_socket(systemd_socket, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="kline_tui")
    monkeypatch.setattr(systemd, "_AF_UNIX", None)
    receiver, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval_s() is None
    assert len(caplog.records) == 1
    assert received(receiver) == []


def test_a_missing_socket_never_raises_and_is_logged_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="kline_tui")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert len(caplog.records) == 1
    assert "gone" in caplog.records[0].getMessage()

    # The socket appears (systemd restarted): notifications go through again.
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "gone"))
    receiver.settimeout(2.0)
    try:
        assert notifier.status("back")
        assert receiver.recv(8192) == b"STATUS=back"
    finally:
        receiver.close()


def test_a_full_socket_drops_notifications_without_blocking(systemd_socket, caplog):
    caplog.set_level(logging.WARNING, logger="kline_tui")
    receiver, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    results: list[bool] = []

    def flood() -> None:  # nobody reads: the receive queue fills up
        results.extend(notifier.status("y" * STATUS_LIMIT) for _ in range(20_000))

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    sender.join(timeout=30)
    assert not sender.is_alive(), "a notification blocked on a full socket"
    assert results[0] and not results[-1]  # the first went through, the queue then refused
    assert len(caplog.records) == 1
    assert received(receiver)  # what was queued is there to read


def test_watchdog_interval_from_the_environment(systemd_socket):
    _, path = systemd_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}
    assert Notifier(env).watchdog_interval_s() == 30.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s() == 30.0
    assert Notifier({**env, "WATCHDOG_PID": "1"}, pid=4242).watchdog_interval_s() is None
    assert Notifier({**env, "WATCHDOG_PID": "4242"}, pid=4242).watchdog_interval_s() == 30.0


@pytest.mark.parametrize(
    ("usec", "pid"),
    [
        ("", None),
        ("0", None),
        ("-30000000", None),
        ("30s", None),
        ("3e7", None),
        (" 30000000", None),
        ("\uff13\uff10", None),  # full-width digits: isdigit() says yes, systemd never writes them
        ("9" * 400, None),  # an integer Python would parse, far beyond 64 bits
        ("30000000", "abc"),
        ("30000000", "9" * 400),
    ],
)
async def test_garbage_watchdog_settings_are_ignored(systemd_socket, usec, pid):
    receiver, path = systemd_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = pid
    notifier = Notifier(env)
    assert notifier.watchdog_interval_s() is None
    # No watchdog: the loop returns at once instead of pinging or sleeping forever.
    await asyncio.wait_for(notifier.keep_watchdog(lambda: True), timeout=1.0)
    assert received(receiver) == []


async def test_keep_watchdog_pings_at_half_the_interval_while_the_runtime_is_healthy(
    systemd_socket,
):
    receiver, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # 0.2 s
    healthy = True
    pinging = asyncio.create_task(notifier.keep_watchdog(lambda: healthy))
    try:
        await asyncio.sleep(0.55)  # pings at 0, 0.1, 0.2, ... 0.5: about six
        pings = received(receiver)
        assert set(pings) == {"WATCHDOG=1"}
        assert 4 <= len(pings) <= 7

        healthy = False  # e.g. the supervisor gave up: systemd must see the pings stop
        await asyncio.sleep(0.15)  # a ping already decided may still arrive
        received(receiver)
        await asyncio.sleep(0.4)
        assert received(receiver) == []

        healthy = True  # the callback is asked before every ping
        await asyncio.sleep(0.25)
        assert received(receiver)
    finally:
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)


async def test_a_failing_health_check_stops_the_pings_and_is_logged_once(systemd_socket, caplog):
    caplog.set_level(logging.ERROR, logger="kline_tui")
    receiver, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})

    def broken() -> bool:
        raise RuntimeError("no pipeline")

    pinging = asyncio.create_task(notifier.keep_watchdog(broken))
    try:
        await asyncio.sleep(0.3)
    finally:
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)
    assert received(receiver) == []
    assert len(caplog.records) == 1


async def test_a_tiny_watchdog_interval_does_not_become_a_busy_loop(systemd_socket):
    receiver, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1"})  # 1 microsecond
    assert notifier.watchdog_interval_s() == 1e-6
    pinging = asyncio.create_task(notifier.keep_watchdog(lambda: True))
    try:
        await asyncio.sleep(0.5)
    finally:
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)
    assert len(received(receiver)) <= 0.5 / MIN_PING_PERIOD_S + 1


# -- `kline-tui record --listen` under a stand-in for systemd ----------------------------------


class Systemd:
    """What systemd sees of a service: the datagrams on its notify socket, in order."""

    def __init__(self, receiver: socket.socket) -> None:
        self.receiver = receiver
        self.messages: list[str] = []

    async def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        """The first message (from the start) whose fields include one starting with `prefix`."""
        loop = asyncio.get_running_loop()
        self.receiver.setblocking(False)
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if any(field.startswith(prefix) for field in message.split("\n")):
                        return message
                self.messages.append((await loop.sock_recv(self.receiver, 8192)).decode())

    async def listen(self, seconds: float) -> None:
        """Take in what arrives for `seconds`."""
        loop = asyncio.get_running_loop()
        self.receiver.setblocking(False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    self.messages.append((await loop.sock_recv(self.receiver, 8192)).decode())


def service_env(tmp_path: Path, notify: str) -> dict[str, str]:
    env = env_for(tmp_path)
    env.update(NOTIFY_SOCKET=notify, WATCHDOG_USEC="1000000")  # WatchdogSec=1: pings every 0.5 s
    env.pop("WATCHDOG_PID", None)
    env.pop("KLINE_TUI_TOKEN", None)
    return env


def healthz(url: str) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        return response.status


async def test_record_tells_systemd_ready_status_watchdog_and_stopping(systemd_socket, tmp_path):
    receiver, path = systemd_socket
    systemd = Systemd(receiver)
    proc = await asyncio.create_subprocess_exec(
        KLINE_TUI, "record", "--demo", "--demo-speed", "60", "--listen", "127.0.0.1:0",
        "--status-every", "1", "--data-dir", str(tmp_path / "data"), "usdm:BTCUSDT:1m",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=service_env(tmp_path, path),
    )  # fmt: skip
    try:
        ready = await systemd.wait_for("READY=1")
        url = re.search(r"http://127\.0\.0\.1:\d+", ready)
        assert url is not None, ready
        # READY means the API answers: systemd may start what depends on it.
        assert await asyncio.to_thread(healthz, url.group()) == 200
        await systemd.wait_for("STATUS=streams ")
        await systemd.wait_for("WATCHDOG=1")
        assert systemd.messages[0] == ready  # nothing before READY
        seen = len(systemd.messages)
        await systemd.listen(2.2)
        later = systemd.messages[seen:]
        assert later.count("WATCHDOG=1") >= 3  # every 0.5 s
        assert any(m.startswith("STATUS=streams ") for m in later)  # every second
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    stopping = await systemd.wait_for("STOPPING=1", timeout=1.0)
    assert "STATUS=stopping (SIGTERM)" in stopping


async def test_record_is_ready_while_the_exchange_cannot_be_reached(systemd_socket, tmp_path):
    """READY does not wait for Binance: a start during an outage would otherwise time out and be
    restarted in a loop by systemd, while the recorder can wait and retry by itself."""
    receiver, path = systemd_socket
    systemd = Systemd(receiver)
    closed = "127.0.0.1:9"  # the discard port: nothing listens there
    config = write_config(
        tmp_path / "config.toml",
        {"usdm": Endpoints(f"ws://{closed}/market", f"http://{closed}")},
        data_dir=tmp_path / "data",
        watch=["usdm:BTCUSDT:1m"],
    )
    proc = await asyncio.create_subprocess_exec(
        KLINE_TUI, "record", "--config", str(config), "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=service_env(tmp_path, path),
    )  # fmt: skip
    try:
        ready = await systemd.wait_for("READY=1", timeout=20)
        url = re.search(r"http://127\.0\.0\.1:\d+", ready)
        assert url is not None, ready
        assert await asyncio.to_thread(healthz, url.group()) == 200  # starting is healthy
        await systemd.wait_for("WATCHDOG=1")
        assert proc.returncode is None
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    await systemd.wait_for("STOPPING=1", timeout=1.0)
