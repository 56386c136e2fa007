"""The client an attached UI reads a recorder through: its mirror against the recorder's own
state, its controls, its reconnects, and a server that sends garbage. Real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.parse

import msgspec
import pytest
from aiohttp import web

from kline_tui.binance.connection import ConnectionStatus
from kline_tui.binance.wire import WireKline
from kline_tui.model import Candle, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import StreamStatus
from kline_tui.recorder.pipeline import StreamRefused
from kline_tui.retry import Backoff
from kline_tui.service.api import Service
from kline_tui.service.auth import Token
from kline_tui.service.client import RemoteError, RemoteRecorder
from kline_tui.service.protocol import (
    Rows,
    ServerFacts,
    SinkRow,
    Snapshot,
    StreamRow,
    StreamSnapshot,
)
from kline_tui.sim import HOSTILE_TEXT, universe

from .service_support import TOKEN, USDM, live, serve
from .support import wait_until

BTC, ETH = (StreamKey.parse(s) for s in USDM)
FAST = Backoff(base=0.1, cap=0.3)


async def following(
    url: str, token: str | None = TOKEN, **kw
) -> tuple[RemoteRecorder, asyncio.Task]:
    client = RemoteRecorder(url, token, EventLog(), backoff=FAST, **kw)
    return client, asyncio.create_task(client.run())


async def closed(client: RemoteRecorder, task: asyncio.Task) -> None:
    await client.close()
    await asyncio.wait_for(task, 5)


async def test_the_mirror_equals_the_recorder(sim, tmp_path):
    async with serve(sim, tmp_path, flush_age_s=3600.0) as served:
        await live(served)
        client, task = await following(served.url)
        streams, connections, sink = client.streams, client.connections, client.sink
        try:
            await asyncio.wait_for(client.wait_connected(), 10)
            await live(served, closed=3)  # a few candles close while the client follows
            served.runtime.events.warning("a warning from the recorder")
            sim.faults.stall(5.0)  # the market goes quiet...
            await asyncio.sleep(1.3)  # ...and a status message (once a second) has gone out
            hub, now = served.hub, time.monotonic()
            assert client.streams is streams and client.connections is connections
            assert client.sink is sink and client.connected and client.recording
            assert list(client.streams) == list(hub.streams)
            for key, theirs in hub.streams.items():
                mine = client.streams[key]
                for name in (
                    "status",
                    "event_time",
                    "updates",
                    "recorded",
                    "duplicates",
                    "gaps",
                    "stalls",
                    "backfill",
                    "implausible",
                    "error",
                    "conn_id",
                ):
                    assert getattr(mine, name) == getattr(theirs, name), (key, name)
                assert isinstance(mine.forming, WireKline)
                assert mine.forming.as_row() == theirs.forming.as_row()
                assert (mine.forming.symbol, mine.forming.interval) == (key.symbol, "1m")
                assert mine.forming.closed == theirs.forming.closed
                assert abs((now - mine.received_at) - (now - theirs.received_at)) < 0.2
                assert [c.as_row() for c in mine.closed] == [c.as_row() for c in theirs.closed]
                assert len(mine.closed) >= 3 and all(type(c) is Candle for c in mine.closed)
                assert mine.closed.maxlen == theirs.closed.maxlen == 120
            statuses = hub.connection_status()
            assert len(client.connections) == len(statuses) == 1
            for mine, theirs in zip(client.connections, statuses, strict=True):
                assert isinstance(mine, ConnectionStatus)
                for name in ("conn_id", "market", "state", "streams", "reconnects", "attempt"):
                    assert getattr(mine, name) == getattr(theirs, name), name
                assert abs(mine.connected_at - theirs.connected_at) < 1.5
                assert mine.frames_per_s(now) >= 0
            stats = served.runtime.pipeline.sink.stats
            assert (client.sink.rows_buffered, client.sink.rows_written) == (
                stats.rows_buffered,
                stats.rows_written,
            )
            assert client.server.data_dir == str(tmp_path) and client.server.demo is None
            assert client.server.flush_age_s == 3600.0
            # The recorder's events, each once, in order, with their own time.
            theirs = [(e.at, e.message) for e in served.runtime.events.recent]
            mine = [
                (e.at, e.message)
                for e in client.events.recent
                if not e.message.startswith("attached")
            ]
            assert mine == theirs[-len(mine) :] and len(mine) >= 5
            assert mine[-1][1] == "a warning from the recorder"
        finally:
            await closed(client, task)


async def test_the_client_steers_the_recorder(sim, tmp_path):
    async with serve(sim, tmp_path, watch=USDM[:1], flush_age_s=3600.0) as served:
        await live(served)
        client, task = await following(served.url)
        try:
            await asyncio.wait_for(client.wait_connected(), 10)
            hub = served.hub
            assert await client.add([ETH, BTC]) == [ETH]
            assert ETH in hub.streams
            await wait_until(lambda: ETH in client.streams, what="eth in the mirror")
            with pytest.raises(StreamRefused) as refused:
                await client.add([StreamKey.parse("usdm:NOSUCHUSDT:1m")])
            assert "NOSUCHUSDT" in refused.value.problems[0]
            assert await client.add([]) == []
            assert await client.remove([ETH, StreamKey.parse("spot:BTCUSDT:1m")]) == [ETH]
            assert ETH not in hub.streams and ETH not in client.streams
            await client.pause()
            assert not served.runtime.recording and not client.recording
            await client.resume()
            assert served.runtime.recording and client.recording
            await live(served, closed=2)
            buffered = served.runtime.pipeline.sink.stats.rows_buffered
            assert buffered > 0 and await client.flush() == buffered
            tradable = {s for s, info in universe(Market.USDM).items() if info.trading}
            assert set(await client.symbols(Market.USDM)) == tradable
        finally:
            await closed(client, task)
        # A wrong token: the socket is refused and says why; so is every control.
        wrong, task = await following(served.url, token="not-the-token")
        try:
            await wait_until(lambda: wrong.last_error, what="a refusal")
            assert "refused the token (401)" in wrong.last_error and not wrong.connected
            with pytest.raises(RemoteError) as error:
                await wrong.pause()
            assert error.value.status == 401 and "wrong API token" in str(error.value)
            assert served.runtime.recording
        finally:
            await closed(wrong, task)


async def test_the_client_reconnects_after_the_recorder_restarts_its_service(sim, tmp_path):
    async with serve(sim, tmp_path) as served:
        await live(served)
        client, task = await following(served.url)
        second = None
        try:
            await asyncio.wait_for(client.wait_connected(), 10)
            streams, btc = client.streams, client.streams[BTC]
            await served.service.stop()
            await wait_until(lambda: not client.connected, what="the client noticing")
            assert "the recorder is stopping" in client.last_error
            assert all(s.status is StreamStatus.RECONNECTING for s in client.streams.values())
            assert set(client.streams) == {BTC, ETH} and not client.connections
            await wait_until(lambda: client.next_attempt_at is not None, what="a retry planned")
            # Meanwhile the recorder stops watching a stream.
            served.runtime.remove([ETH])
            port = urllib.parse.urlsplit(served.url).port
            second = Service(served.runtime, "127.0.0.1", port, token=Token(TOKEN, "env"))
            assert await second.start() == served.url
            await asyncio.wait_for(client.wait_connected(), 10)
            # The snapshot replaced everything, in the same objects.
            assert client.streams is streams and client.streams[BTC] is btc
            assert list(client.streams) == [BTC]
            assert client.last_error is None and client.next_attempt_at is None
            await wait_until(lambda: btc.status is StreamStatus.LIVE, what="live again")
            messages = [e.message for e in client.events.recent]
            assert sum(m.startswith("attached to the recorder") for m in messages) == 2
        finally:
            await closed(client, task)
            if second is not None:
                await second.stop()


async def test_a_recorder_out_of_reach_is_retried_and_controls_say_so(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client, task = await following(f"http://127.0.0.1:{port}")
    try:
        await wait_until(lambda: client.attempt >= 3, what="a few tries")
        assert not client.connected and "cannot connect" in client.last_error
        assert client.next_attempt_at is not None
        with pytest.raises(RemoteError, match="cannot reach the recorder") as error:
            await client.flush()
        assert error.value.status is None
        warnings = [e.message for e in client.events.recent]
        assert len(warnings) == 1  # said once, not at every try
    finally:
        await closed(client, task)
    with pytest.raises(ValueError, match="not an http"):
        RemoteRecorder("ftp://example.org", None)


# -- a server that sends garbage ----------------------------------------------------------------


def _facts(**kw) -> ServerFacts:
    values = dict(
        version="9",
        instance="x",
        pid=1,
        data_dir="/data",
        demo=None,
        recording=True,
        started=True,
        started_at=0.0,
        flush_rows=1,
        flush_age_s=1.0,
        keep_closed=120,
        clients=1,
    )
    return ServerFacts(**(values | kw))


SINK = SinkRow(
    rows_buffered=0,
    rows_written=0,
    files_written=0,
    flushes=0,
    last_flush_at=None,
    last_flush_ms=None,
    errors=0,
    last_error=None,
    failing=False,
    dropped=0,
    dead_letters=0,
    last_dead_letter=None,
)
GOOD = (1_700_000_000_000, 1_700_000_059_999, 10.0, 12.0, 9.0, 11.0, 1.0, 11.0, 0.5, 5.5, 3)
INSANE = (1_700_000_060_000, 1_700_000_119_999, 10.0, 9.0, 12.0, 11.0, 1.0, 11.0, 0.5, 5.5, 3)


def _row(spec: str, **kw) -> dict:
    row = dict(
        stream=spec,
        status=StreamStatus.LIVE,
        forming=None,
        event_time=None,
        age_s=0.5,
        updates=1,
        recorded=0,
        duplicates=0,
        gaps=0,
        stalls=0,
        backfill=0,
        implausible=0,
        error=None,
        conn_id=1,
    )
    return row | kw


def _snapshot(streams: list[StreamSnapshot], events=()) -> bytes:
    return msgspec.json.encode(
        Snapshot(server=_facts(), streams=streams, connections=[], sink=SINK, events=list(events))
    )


async def test_a_server_that_sends_garbage_cannot_break_the_client():
    hostile = HOSTILE_TEXT
    escape = "\x1b]0;owned\x07\x1b[2J"
    scenarios = [
        ("garbage", b"this is not JSON"),
        ("no snapshot", msgspec.json.encode(Rows([StreamRow(**_row("usdm:BTCUSDT:1m"))]))),
        ("too big", _snapshot([]) + b" " * 70_000),
        ("bad spec", _snapshot([StreamSnapshot(**_row("usdm:BTC USDT:1m"), closed=[])])),
        (
            "bad state",
            _snapshot([]).replace(
                b'"streams":[]',
                b'"streams":['
                + msgspec.json.encode(_row("usdm:BTCUSDT:1m")).replace(b'"live"', b'"exploded"')[
                    :-1
                ]
                + b',"closed":[]}]',
            ),
        ),
        (
            "hostile but well formed",
            _snapshot(
                [
                    StreamSnapshot(
                        **_row(
                            "usdm:BTCUSDT:1m",
                            error=f"refused {escape}{hostile}",
                            forming=(*INSANE, False),
                        ),
                        closed=[GOOD, INSANE],
                    )
                ],
                events=[(1, 1.0, 30, f"hello {escape}")],
            ),
        ),
    ]
    errors: list[str | None] = []
    client_box: list[RemoteRecorder] = []

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        errors.append(client_box[0].last_error if client_box else None)
        _, payload = scenarios[min(len(errors) - 1, len(scenarios) - 1)]
        await ws.send_bytes(payload)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    client, task = await following(f"http://{host}:{port}", max_msg_size=64 * 1024)
    client_box.append(client)
    try:
        await asyncio.wait_for(client.wait_connected(), 15)
        assert len(errors) == len(scenarios)
        said = errors[1:]  # what the client said of each scenario, at its next try
        assert "cannot be read" in said[0]
        assert "did not start with a snapshot" in said[1]
        assert "too big" in said[2].lower() or "size" in said[2].lower(), said[2]
        assert "cannot be" in said[3]
        assert "cannot be read" in said[4]
        (state,) = client.streams.values()
        assert "\x1b" not in state.error and "\x07" not in state.error
        assert state.forming is None  # an impossible candle is not shown
        assert [c.as_row() for c in state.closed] == [GOOD]
        (event,) = [e for e in client.events.recent if e.message.startswith("hello")]
        assert "\x1b" not in event.message and event.at == 1.0
    finally:
        await closed(client, task)
        await runner.cleanup()
