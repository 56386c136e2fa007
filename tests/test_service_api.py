"""The service API over real loopback sockets, against a recorder recording from the simulator:
health, state, the events socket and its bounds, control, auth, the runtime file."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import stat
import time
import urllib.parse

import aiohttp
import msgspec
import pytest

from kline_tui.model import Market, StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.service.api import RUNTIME_FILE, Service, find_running, runtime_file
from kline_tui.service.auth import (
    TOKEN_ENV,
    FailureLimiter,
    ServiceError,
    Token,
    TokenError,
    resolve_token,
)
from kline_tui.service.feed import TRIM_EVERY_S
from kline_tui.service.protocol import CLOSE_GOING_AWAY, Message, Snapshot
from kline_tui.sim import expected_candle, universe
from kline_tui.store.lock import DataDirLock, lock_holder

from .checks import assert_exact_recording
from .datasets import read_dataset
from .service_support import AUTH, TOKEN, USDM, call, live, serve
from .support import make_settings, wait_until

decode = msgspec.json.Decoder(Message).decode


# -- health, metrics, state --------------------------------------------------------------------


async def test_health_says_starting_then_ok_and_state_waits_for_the_start(sim, tmp_path):
    async with serve(sim, tmp_path, start=False) as served:
        status, body, _ = await call("GET", served.url + "/healthz", headers=None)
        assert (status, body["status"]) == (200, "starting")
        status, body, _ = await call("GET", served.url + "/api/v1/state")
        assert (status, body) == (503, {"error": "the recorder is starting"})
        status, body, _ = await call("POST", served.url + "/api/v1/flush")
        assert status == 503
        await served.runtime.start()
        await live(served)
        status, body, _ = await call("GET", served.url + "/healthz", headers=None)
        assert (status, body["status"], body["reasons"]) == (200, "ok", [])
        assert body["streams"] == {"live": 2} or set(body["streams"]) <= {"live", "backfilling"}
        status, body, _ = await call("GET", served.url + "/api/v1/state")
        assert status == 200
        snapshot = msgspec.convert(body, Snapshot)
        assert [s.stream for s in snapshot.streams] == USDM
        assert snapshot.server.pid == os.getpid() and snapshot.server.started
        assert snapshot.server.data_dir == str(tmp_path)
        assert {c.market for c in snapshot.connections} == {Market.USDM}
        assert any(s.closed for s in snapshot.streams)
        # /metrics is open on loopback and parses as Prometheus' text format.
        from prometheus_client.parser import text_string_to_metric_families

        status, text, headers = await call("GET", served.url + "/metrics", headers=None)
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        names = {family.name for family in text_string_to_metric_families(text)}
        assert "kline_tui_streams" in names
        # Stopping is unhealthy: a load balancer takes the recorder out at once.
        served.runtime.request_stop("test")
        status, body, _ = await call("GET", served.url + "/healthz", headers=None)
        assert (status, body["status"]) == (503, "stopping")
        assert "stopping" in body["reasons"][0]


async def test_health_names_stale_streams_and_a_failing_disk(sim, tmp_path):
    async with serve(sim, tmp_path) as served:
        await live(served)
        pipeline = served.runtime.pipeline
        state = pipeline.hub.streams[StreamKey.parse(USDM[0])]
        state.status = StreamStatus.STALE
        pipeline.sink.stats.failing, pipeline.sink.stats.last_error = True, "No space left"
        status, body, _ = await call("GET", served.url + "/healthz", headers=None)
        assert (status, body["status"]) == (503, "unhealthy")
        assert any("1 streams stale" in r for r in body["reasons"])
        assert any("No space left" in r for r in body["reasons"])
        pipeline.sink.stats.failing = False
        state.status = StreamStatus.LIVE
        # A loop that runs something long without yielding is not responsive.
        time.sleep(1.3)
        await asyncio.sleep(0.3)  # the monitor's sample after the block
        status, body, _ = await call("GET", served.url + "/healthz", headers=None)
        assert (status, body["status"]) == (503, "unhealthy")
        assert body["reasons"] == [
            f"the event loop was blocked for {body['loop_lag_ms'] / 1000:.1f} s"
        ]
        assert body["loop_lag_ms"] > 1000


async def test_flush_writes_what_the_dataset_then_holds(sim, tmp_path):
    # Nothing is flushed by age: only the API's flush writes.
    async with serve(sim, tmp_path, flush_age_s=3600.0) as served:
        await live(served, closed=2)
        stats = served.runtime.pipeline.sink.stats
        assert stats.rows_written == 0 and stats.rows_buffered > 0
        status, body, _ = await call("POST", served.url + "/api/v1/flush")
        assert status == 200
        written = body["written"]
        assert written > 0 and written == stats.rows_written
        dataset = read_dataset(tmp_path)
        assert dataset.height == written
        assert_exact_recording(dataset, [StreamKey.parse(s) for s in USDM], min_rows=2)


# -- auth --------------------------------------------------------------------------------------


async def test_control_needs_the_token_and_wrong_tokens_are_rate_limited(sim, tmp_path):
    limiter = FailureLimiter(limit=10, window_s=60.0)
    async with serve(sim, tmp_path, service={"failures": limiter}) as served:
        await live(served)
        url = served.url
        for method, path in [
            ("POST", "/api/v1/pause"),
            ("GET", "/api/v1/state"),
            ("GET", "/api/v1/events"),
            ("POST", "/api/v1/streams"),
            ("GET", "/api/v1/nothing-here"),  # 401 before 404: no route is revealed
        ]:
            status, body, _ = await call(method, url + path, headers=None)
            assert status == 401, (method, path)
            assert "token" in body["error"]
        assert served.runtime.recording  # the pause was refused
        for _ in range(10):
            status, body, _ = await call(
                "POST", url + "/api/v1/pause", headers={"Authorization": "Bearer guess"}
            )
            assert (status, body) == (401, {"error": "wrong API token"})
        status, body, headers = await call(
            "POST", url + "/api/v1/pause", headers={"Authorization": "Bearer guess"}
        )
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        # Locked out: the right token too, so a lucky guess is not confirmed meanwhile.
        status, _, _ = await call("POST", url + "/api/v1/pause")
        assert status == 429 and served.runtime.recording
        # Health and metrics stay open on loopback.
        status, _, _ = await call("GET", url + "/healthz", headers=None)
        assert status == 200
        limiter.clock = lambda: time.monotonic() + 61.0  # a minute later
        status, body, _ = await call("POST", url + "/api/v1/pause")
        assert (status, body) == (200, {"recording": False})
        assert not served.runtime.recording


async def test_beyond_loopback_a_token_must_be_set_and_then_guards_everything(sim, tmp_path):
    from kline_tui.runtime import Runtime

    runtime = Runtime(make_settings(sim, tmp_path, USDM))
    generated = Token("abc", "generated", tmp_path / "token")
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(ServiceError, match="needs a token you set"):
            Service(runtime, host, 0, token=generated)
    Service(runtime, "127.0.0.1", 0, token=generated)  # loopback: a generated token is fine
    Service(runtime, "localhost", 0, token=generated)
    service = Service(runtime, "0.0.0.0", 0, token=Token(TOKEN, "env"))
    url = await service.start()
    try:
        port = urllib.parse.urlsplit(url).port
        local = f"http://127.0.0.1:{port}"
        for path in ("/healthz", "/metrics", "/api/v1/state"):
            status, _, _ = await call("GET", local + path, headers=None)
            assert status == 401, path
        status, body, _ = await call("GET", local + "/healthz")
        assert (status, body["status"]) == (200, "starting")
    finally:
        await service.stop()


def test_the_token_comes_from_the_environment_a_file_or_is_generated_once(tmp_path):
    settings = make_settings_without_sim(tmp_path)
    assert resolve_token(settings, {TOKEN_ENV: " from-env \n"}).value == "from-env"
    token = resolve_token(settings, {})
    assert token.source == "generated" and not token.explicit
    path = tmp_path / "token"
    assert token.path == path and "value" not in repr(token) and token.value not in repr(token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token.value) >= 40
    assert resolve_token(settings, {}).value == token.value  # reused, not regenerated
    file = tmp_path / "my-token"
    file.write_text("  chosen-token\n")
    from dataclasses import replace

    chosen = resolve_token(replace(settings, token_file=file), {})
    assert (chosen.value, chosen.source, chosen.explicit) == ("chosen-token", "file", True)
    for content, problem in [
        ("   \n", "is empty"),
        ("two words", "characters a token cannot have"),
        ("x" * 600, "more than 512"),
    ]:
        file.write_text(content)
        with pytest.raises(TokenError, match=problem):
            resolve_token(replace(settings, token_file=file), {})
    with pytest.raises(TokenError, match="cannot read"):
        resolve_token(replace(settings, token_file=tmp_path / "absent"), {})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TokenError, match="not a regular file"):  # and it does not hang
        resolve_token(replace(settings, token_file=fifo), {})
    with pytest.raises(TokenError, match=TOKEN_ENV):
        resolve_token(settings, {TOKEN_ENV: ""})


def make_settings_without_sim(tmp_path):
    from kline_tui.config import Settings

    return Settings(config_path=tmp_path / "config.toml", config_exists=False, data_dir=tmp_path)


# -- control -----------------------------------------------------------------------------------


async def test_bad_requests_get_one_readable_sentence_and_the_right_status(sim, tmp_path):
    async with serve(sim, tmp_path, service={"body_limit": 4096}) as served:
        await live(served)
        url = served.url
        cases = [
            ("POST", "/api/v1/streams", b"x" * 5000, 413, "too large"),
            ("POST", "/api/v1/streams", b"{not json", 400, "not JSON"),
            ("POST", "/api/v1/streams", b'{"streams": "usdm:BTCUSDT:1m"}', 400, "bad request"),
            ("POST", "/api/v1/streams", b'{"streams": []}', 400, "bad request"),
            ("POST", "/api/v1/streams", b'{"streams": ["usdm:BTCUSDT"]}', 400, "invalid stream"),
            ("POST", "/api/v1/streams", b'{"streams": ["usdm:BTC\\u001b[2J:1m"]}', 400, "symbol"),
            ("POST", "/api/v1/streams", json.dumps({"streams": ["x" * 65]}).encode(), 400, ""),
            ("POST", "/api/v1/streams", b'{"streams": ["spot:BTCUSDT:1m"], "x": 1}', 400, "x"),
            ("DELETE", "/api/v1/streams/usdm:SOLUSDT:1m", None, 404, "not watched"),
            ("DELETE", "/api/v1/streams/usdm:SOLUSDT", None, 400, "invalid stream"),
            ("GET", "/api/v1/symbols/nasdaq", None, 400, "unknown market"),
            ("GET", "/api/v2/state", None, 404, "no such endpoint"),
            ("GET", "/api/v1/pause", None, 405, "use POST"),
        ]
        for method, path, data, want, words in cases:
            status, body, _ = await call(method, url + path, data=data)
            assert status == want, (path, data, body)
            assert isinstance(body, dict) and list(body) == ["error"], body
            assert words in body["error"] and "\x1b" not in body["error"], body
        status, body, _ = await call(
            "POST", url + "/api/v1/streams", json={"streams": ["usdm:NOSUCHUSDT:1m"]}
        )
        assert status == 422 and "NOSUCHUSDT" in body["problems"][0]
        assert StreamKey.parse("usdm:NOSUCHUSDT:1m") not in served.hub.streams
        status, body, _ = await call("GET", url + "/api/v1/symbols/usdm")
        assert status == 200 and body["market"] == "usdm"
        tradable = {s for s, info in universe(Market.USDM).items() if info.trading}
        assert set(body["symbols"]) == tradable


async def test_streams_are_added_on_the_open_connection_and_removed(sim, tmp_path):
    async with serve(sim, tmp_path, watch=USDM[:1]) as served:
        await live(served)
        hub = served.hub
        (conn,) = hub.connections
        before = (conn.status.conn_id, conn.status.reconnects)
        status, body, _ = await call(
            "POST",
            served.url + "/api/v1/streams",
            json={"streams": ["usdm:ETHUSDT:1m", "usdm:BTCUSDT:1m"]},
        )
        assert (status, body) == (200, {"added": ["usdm:ETHUSDT:1m"]})
        eth = StreamKey.parse("usdm:ETHUSDT:1m")
        await wait_until(lambda: hub.streams[eth].status is StreamStatus.LIVE, what="eth live")
        # Subscribed live on the same connection: nothing reconnected.
        assert hub.connections == [conn]
        assert (conn.status.conn_id, conn.status.reconnects) == before
        assert hub.streams[eth].conn_id == conn.status.conn_id
        status, body, _ = await call("DELETE", served.url + "/api/v1/streams/usdm:ETHUSDT:1m")
        assert (status, body) == (200, {"removed": ["usdm:ETHUSDT:1m"]})
        assert eth not in hub.streams and hub.connections == [conn]
        assert conn.status.reconnects == before[1]
        status, body, _ = await call("POST", served.url + "/api/v1/pause")
        assert (status, body, served.runtime.recording) == (200, {"recording": False}, False)
        status, body, _ = await call("POST", served.url + "/api/v1/resume")
        assert (status, body, served.runtime.recording) == (200, {"recording": True}, True)


# -- the events socket -------------------------------------------------------------------------


async def test_events_socket_sends_the_snapshot_then_every_change(sim, tmp_path):
    async with serve(sim, tmp_path, flush_age_s=3600.0) as served:
        await live(served)
        hub = served.hub
        got: list = []
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(served.url + "/api/v1/events", headers=AUTH) as ws,
        ):

            async def read() -> None:
                async for message in ws:
                    got.append((time.monotonic(), decode(message.data)))

            reader = asyncio.create_task(read())
            await wait_until(lambda: got, what="the snapshot")
            served.runtime.events.info("a marker from the test")
            await call(
                "POST", served.url + "/api/v1/streams", json={"streams": ["usdm:SOLUSDT:1m"]}
            )
            await asyncio.sleep(1.0)
            await call("DELETE", served.url + "/api/v1/streams/usdm:SOLUSDT:1m")
            await call("POST", served.url + "/api/v1/pause")
            # A market far busier than the tick: 200 updates a second of one stream's candle.
            key = StreamKey.parse(USDM[0])
            updates_before = hub.streams[key].updates
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                state = hub.streams[key]
                hub.on_kline(key, state.event_time, state.forming)
                await asyncio.sleep(0.005)
            busy = (started, time.monotonic(), hub.streams[key].updates - updates_before)
            await asyncio.sleep(2.0)  # about two more simulated minutes: two closes per stream
            # Freeze the market, let a tick or two pass, and compare with the recorder.
            sim.faults.stall(5.0)
            await asyncio.sleep(0.6)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        kinds = [type(m).__name__ for _, m in got]
        assert kinds[0] == "Snapshot" and "Snapshot" not in kinds[1:]
        snapshot = got[0][1]
        # Forming updates are coalesced: at most ~10 `rows` messages a second, however busy.
        begin, end, updates = busy
        rows_times = [t for t, m in got if type(m).__name__ == "Rows" and begin < t <= end + 0.05]
        assert updates > 200  # the stream changed far more often than the clients heard of it
        assert 0.7 * 10 * (end - begin) <= len(rows_times) <= 10 * (end - begin) + 2, rows_times
        events = [e.message for _, m in got if type(m).__name__ == "Events" for e in m.events]
        assert "a marker from the test" in events
        assert "recording paused: the live view goes on, closed candles are not recorded" in events
        assert any(type(m).__name__ == "Recording" and not m.recording for _, m in got)
        added = [s.stream for _, m in got if type(m).__name__ == "Added" for s in m.streams]
        removed = [s for _, m in got if type(m).__name__ == "Removed" for s in m.streams]
        assert added == removed == ["usdm:SOLUSDT:1m"]
        assert any(type(m).__name__ == "Status" for _, m in got)
        # Every closed candle of each stream: the snapshot's, then each `closed` message's, in
        # order, is the simulator's candle, with none missing, and ends where the recorder does.
        for spec in USDM:
            key = StreamKey.parse(spec)
            (row,) = [s for s in snapshot.streams if s.stream == spec]
            candles = list(row.closed) + [
                c.candle
                for _, m in got
                if type(m).__name__ == "Closed"
                for c in m.candles
                if c.stream == spec
            ]
            assert len(candles) >= len(row.closed) + 3
            opens = [c[0] for c in candles]
            assert opens == [opens[0] + i * 60_000 for i in range(len(opens))], spec
            for c in candles:
                assert (
                    tuple(c) == expected_candle(key.market, key.symbol, key.interval, c[0]).as_row()
                )
            assert [tuple(c) for c in candles] == [c.as_row() for c in hub.streams[key].closed]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _never_reading_client(url: str) -> socket.socket:
    """A WebSocket handshake on a socket with a tiny receive buffer, which then never reads."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /api/v1/events HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # a byte at a time: not one byte of a frame is read
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_client_that_never_reads_is_disconnected_and_memory_stays_flat(sim, tmp_path):
    symbols = [s for s, info in universe(Market.USDM).items() if info.trading][:100]
    watch = [f"usdm:{s}:1m" for s in symbols]
    # A small kernel send buffer, so that the queue fills within a second rather than after the
    # kernel took 4 MB (Linux's default maximum, not this process's memory).
    limits = {
        "client_max_bytes": 128 * 1024,
        "client_max_messages": 256,
        "send_buffer_bytes": 65536,
    }
    async with serve(sim, tmp_path, watch=watch, service=limits, history=0) as served:
        service = served.service
        await live(served, closed=1)
        # Full sparklines: the snapshot a client gets is about a megabyte.
        await served.runtime.pipeline.seed_history(list(served.hub.streams), count=120)
        snapshot_bytes = len(msgspec.json.encode(service.feed.snapshot()))
        assert snapshot_bytes > 800_000

        def account(client) -> tuple:
            transport = client.request.transport
            buffered = 0 if transport is None else transport.get_write_buffer_size()
            return (
                client.closed_reason,
                client.backlog_bytes,
                len(client.backlog),
                client.forced_bytes,
                client.peak_backlog_bytes,
                buffered,
            )

        # The clients' sockets stay open to the end: the server alone must let go of them.
        socks: list[socket.socket] = []

        async def round_of(n: int) -> list[tuple]:
            dropped = service.feed.slow_clients
            socks.extend([await _never_reading_client(served.url) for _ in range(n)])
            clients = list(service.feed.clients)
            await wait_until(
                lambda: service.feed.slow_clients >= dropped + n, timeout=15, what="drops"
            )
            await asyncio.gather(*(client.wait_closed() for client in clients))
            return [account(client) for client in clients]  # no reference kept to a client

        try:
            await round_of(4)  # warm-up: buffers and pools the first round allocates for good
            await asyncio.sleep(TRIM_EVERY_S + 0.2)
            rss_before = _rss_bytes()
            seen = []
            for _ in range(4):
                seen += await round_of(8)
            await asyncio.sleep(TRIM_EVERY_S + 0.2)  # the last drop's memory handed back
            grown = _rss_bytes() - rss_before
        finally:
            for sock in socks:
                sock.close()
        assert len(seen) == 32 and not service.feed.clients
        for reason, backlog_bytes, backlog, forced, peak, buffered in seen:
            assert reason is not None and reason.startswith("too slow")
            assert backlog_bytes == 0 and backlog == 0  # freed at once
            # The queue never held more than its bound, besides the snapshot, which goes first
            # whatever its size.
            assert 0 < forced < 2 * snapshot_bytes
            assert peak <= forced + limits["client_max_bytes"]
            assert buffered == 0  # nor does the socket's write buffer hold anything
        # 32 clients were each handed a 1.2 MB snapshot they never read: kept, that is 38 MB.
        assert grown < 12 * 2**20, f"RSS grew {grown / 2**20:.1f} MB"
        # The recorder went on meanwhile, and a client that reads is served as before.
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(served.url + "/api/v1/events", headers=AUTH, max_msg_size=0) as ws,
        ):
            first = decode((await ws.receive()).data)
            assert isinstance(first, Snapshot) and len(first.streams) == 100
        warnings = [e.message for e in served.runtime.events.recent if "disconnected" in e.message]
        assert warnings and "too slow" in warnings[-1]


async def test_a_client_that_answers_no_ping_is_closed_and_clients_are_capped(sim, tmp_path):
    async with serve(sim, tmp_path, service={"heartbeat_s": 0.4, "max_clients": 1}) as served:
        await live(served)
        sock = await _never_reading_client(served.url)
        loop = asyncio.get_running_loop()
        try:
            # A second client is refused while the first holds the only place.
            status, body, _ = await call("GET", served.url + "/api/v1/events")
            assert (status, body) == (503, {"error": "too many clients: 1 are attached already"})
            # The first reads everything but never answers a ping: it is closed as dead.
            started = time.monotonic()
            while await loop.sock_recv(sock, 65536):
                assert time.monotonic() - started < 5.0, "still open"
            assert not served.service.feed.clients
        finally:
            sock.close()


async def test_stop_closes_every_socket_with_a_reason(sim, tmp_path):
    async with serve(sim, tmp_path) as served:
        await live(served)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(served.url + "/api/v1/events", headers=AUTH) as ws,
        ):
            assert isinstance(decode((await ws.receive()).data), Snapshot)
            started = time.monotonic()
            stopping = asyncio.create_task(served.service.stop())
            while True:
                message = await ws.receive()
                if message.type is aiohttp.WSMsgType.CLOSE:
                    break
            assert message.data == CLOSE_GOING_AWAY and message.extra == "the recorder is stopping"
            await stopping
            assert time.monotonic() - started < 5.0


# -- the runtime file --------------------------------------------------------------------------


async def test_the_runtime_file_names_the_service_while_the_folder_is_held(sim, tmp_path):
    async with serve(sim, tmp_path, start=False) as served:
        assert find_running(tmp_path) is None  # not holding the folder yet: nothing written
        await served.runtime.start()
        await wait_until(lambda: find_running(tmp_path) is not None, what="the runtime file")
        running = find_running(tmp_path)
        assert (running.url, running.pid) == (served.url, os.getpid())
        assert runtime_file(tmp_path).name == RUNTIME_FILE and RUNTIME_FILE.startswith(".")
        assert lock_holder(tmp_path) == os.getpid()
    assert not runtime_file(tmp_path).exists() and find_running(tmp_path) is None
    # A file left by a recorder that was killed names a pid that holds no lock: not running.
    runtime_file(tmp_path).write_text(
        json.dumps(
            {"url": "http://127.0.0.1:1", "pid": os.getpid(), "token_file": None, "started_at": 0.0}
        )
    )
    assert lock_holder(tmp_path) is None and find_running(tmp_path) is None
    lock = DataDirLock(tmp_path)
    lock.acquire()
    try:
        assert find_running(tmp_path) is not None  # the same pid holds it now
        runtime_file(tmp_path).write_text("garbage")
        assert find_running(tmp_path) is None
    finally:
        lock.release()
    with contextlib.suppress(FileNotFoundError):
        runtime_file(tmp_path).unlink()
