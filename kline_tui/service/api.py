"""The recorder's HTTP API: health, metrics, state, the events socket and control, on aiohttp in
the recorder's own event loop.

    token = resolve_token(settings)                 # env, token_file, or generated
    service = Service(runtime, "127.0.0.1", 8765, token=token)   # ServiceError: refused
    url = await service.start()                     # may come before runtime.start()
    ...
    await service.stop()                            # bounded; closes every socket with a reason

The endpoints and their messages are in `kline_tui.service.protocol`; the events socket's ticks in
`kline_tui.service.feed`; health in `kline_tui.service.health`. Until the runtime has started
(`runtime.started`), `/healthz` says "starting" (200) and state, events and control answer 503;
once a stop is asked for, they answer 503 and `/healthz` says "stopping".

Auth (DESIGN.md, "Contracts", and `kline_tui.service.auth`): bound to loopback, `/healthz` and
`/metrics` are open and everything under `/api/` needs the token; bound to any other address the
token must have been set explicitly and guards every path. Bodies are limited to `body_limit`
bytes (413 beyond), the events socket's own messages to 4 KiB (it expects none), and the number
of events sockets to `max_clients`.

While it runs, `<data_dir>/.kline-tui/.service.json` names its URL, pid and token file (written
once this process holds the data folder's lock, removed at stop), so that `find_running` lets a
plain `kline-tui` attach to the recorder instead of being refused by the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from kline_tui.binance.rest import RestError
from kline_tui.config import AlertConfig
from kline_tui.model import Market, SpecError, StreamKey
from kline_tui.recorder.pipeline import StreamRefused
from kline_tui.retry import cancel_and_wait
from kline_tui.runtime import Runtime
from kline_tui.safe_text import safe_text
from kline_tui.service.auth import (
    FailureLimiter,
    ServiceError,
    Token,
    bearer,
    check_listen,
    is_loopback,
)
from kline_tui.service.candles import CANDLE_READS, QueryError, parse_query, read_reply
from kline_tui.service.feed import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_SEND_TIMEOUT_S,
    ClientQueue,
    Feed,
    alert_row,
)
from kline_tui.service.health import LoopMonitor, health
from kline_tui.service.metrics import Metrics
from kline_tui.service.protocol import (
    CLOSE_GOING_AWAY,
    MAX_SPEC,
    UPDATE_HZ,
    AddedReply,
    AddStreams,
    AlertReply,
    AlertsReply,
    ErrorReply,
    FlushReply,
    MuteAlert,
    RecordingReply,
    RefusedReply,
    RemovedReply,
    ServerFacts,
    SymbolsReply,
    package_version,
)
from kline_tui.store import layout
from kline_tui.store.lock import lock_holder

__all__ = [
    "RUNTIME_FILE",
    "RunningService",
    "Service",
    "ServiceError",
    "find_running",
    "runtime_file",
]

log = logging.getLogger(__name__)

RUNTIME_FILE = ".service.json"  # in the bookkeeping folder: hidden, as every file there is
_RUNTIME_FILE_MAX = 16 * 1024
BODY_LIMIT = 64 * 1024
MAX_CLIENTS = 32
HEARTBEAT_S = 20.0  # a ping this often; a client that does not answer within half is closed
STOP_TIMEOUT_S = 5.0

_encoder = msgspec.json.Encoder()
_add_decoder = msgspec.json.Decoder(AddStreams)
_alert_decoder = msgspec.json.Decoder(AlertConfig)
_mute_decoder = msgspec.json.Decoder(MuteAlert)


class RunningService(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """What `.kline-tui/.service.json` says of the recorder serving a data folder."""

    url: str
    pid: int
    token_file: str | None
    started_at: float


def runtime_file(data_dir: Path) -> Path:
    """The file naming the service of the recorder that holds `data_dir`."""
    return layout.bookkeeping_dir(data_dir) / RUNTIME_FILE


def find_running(data_dir: Path) -> RunningService | None:
    """The service of the recorder recording into `data_dir`, or None: there is none, it has no
    service, or the runtime file is stale (its pid does not hold the folder's lock now)."""
    path = runtime_file(Path(data_dir))
    try:
        with open(path, "rb") as fh:
            data = fh.read(_RUNTIME_FILE_MAX + 1)
    except OSError:
        return None
    if len(data) > _RUNTIME_FILE_MAX:
        return None
    try:
        running = msgspec.json.decode(data, type=RunningService)
    except msgspec.DecodeError:
        return None
    if not running.url.startswith(("http://", "https://")) or len(running.url) > 1000:
        return None
    holder = lock_holder(Path(data_dir))
    return running if holder is not None and holder == running.pid else None


def _json(struct: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encoder.encode(struct),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(ErrorReply(safe_text(message, 1000)), status, headers)


class _Refuse(Exception):
    """Answer the request with this status and sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Service:
    """The API server of one runtime. See the module docstring for what it serves.

    Every bound of the events socket is a parameter (tests make them small): `max_clients`
    sockets, each queueing at most `client_max_messages` messages and `client_max_bytes` bytes,
    and `send_timeout_s` for one write; `update_hz` ticks a second. `send_buffer_bytes` sets the
    kernel's send buffer of each events socket (SO_SNDBUF); by default the system sizes it (Linux
    grows it up to `net.ipv4.tcp_wmem`'s maximum, 4 MB, for a client that reads slowly: kernel
    memory, bounded, and what a client far away needs to be served at full speed).
    """

    def __init__(
        self,
        runtime: Runtime,
        host: str,
        port: int,
        *,
        token: Token,
        body_limit: int = BODY_LIMIT,
        max_clients: int = MAX_CLIENTS,
        client_max_messages: int = DEFAULT_MAX_MESSAGES,
        client_max_bytes: int = DEFAULT_MAX_BYTES,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
        update_hz: float = UPDATE_HZ,
        heartbeat_s: float = HEARTBEAT_S,
        send_buffer_bytes: int | None = None,
        failures: FailureLimiter | None = None,
    ) -> None:
        check_listen(host, token)
        self.runtime = runtime
        self.host = host
        self.port = port
        self.token = token
        self.guard_all = not is_loopback(host)
        self.body_limit = body_limit
        self.max_clients = max_clients
        self.client_max_messages = client_max_messages
        self.client_max_bytes = client_max_bytes
        self.send_timeout_s = send_timeout_s
        self.heartbeat_s = heartbeat_s
        self.send_buffer_bytes = send_buffer_bytes
        self.failures = failures or FailureLimiter()
        self.instance = secrets.token_hex(8)
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.url: str | None = None
        self.monitor = LoopMonitor()
        self.feed = Feed(runtime, self.facts, update_hz=update_hz)
        self.metrics = Metrics(runtime)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runtime_file: Path | None = None
        self._stopping = False
        self._candle_reads = asyncio.Semaphore(CANDLE_READS)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen; returns the base URL actually bound (port 0 picks a free one). Raises
        ServiceError when the address cannot be bound."""
        app = web.Application(
            client_max_size=self.body_limit, middlewares=[self._errors, self._auth]
        )
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/v1/state", self._state)
        app.router.add_get("/api/v1/candles", self._candles)
        app.router.add_get("/api/v1/events", self._events)
        app.router.add_post("/api/v1/streams", self._add)
        app.router.add_delete("/api/v1/streams/{spec}", self._remove)
        app.router.add_post("/api/v1/pause", self._pause)
        app.router.add_post("/api/v1/resume", self._resume)
        app.router.add_post("/api/v1/flush", self._flush)
        app.router.add_get("/api/v1/symbols/{market}", self._symbols)
        app.router.add_get("/api/v1/alerts", self._alerts)
        app.router.add_post("/api/v1/alerts", self._add_alert)
        app.router.add_post("/api/v1/alerts/{id}/mute", self._mute_alert)
        app.router.add_delete("/api/v1/alerts/{id}", self._delete_alert)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ServiceError(
                f"cannot listen on {safe_text(self.host, 100)}:{self.port}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self._tasks = [
            asyncio.create_task(self.monitor.run(), name="loop monitor"),
            asyncio.create_task(self._publish_when_locked(), name="service runtime file"),
        ]
        guarded = "every endpoint" if self.guard_all else "/api/v1"
        self.runtime.events.info(
            f"service API on {self.url} (the token guards {guarded}); {self.token.describe()}"
        )
        return self.url

    async def stop(self) -> None:
        """Stop serving within about STOP_TIMEOUT_S: every events socket is closed with a
        reason, the runtime file removed (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        await cancel_and_wait(self._tasks)
        self._remove_runtime_file()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.feed.close(CLOSE_GOING_AWAY, "the recorder is stopping")
        if self._runner is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self._runner.cleanup()
            self._runner = None

    # -- the runtime file ----------------------------------------------------------------------

    async def _publish_when_locked(self) -> None:
        """Write the runtime file once this process holds the data folder (never before: a
        recorder refused by the lock must not overwrite the file of the one holding it)."""
        data_dir = self.runtime.settings.data_dir
        while self._runtime_file is None:
            if self.runtime.pipeline is not None:
                holder = await asyncio.to_thread(lock_holder, data_dir)
                if holder == os.getpid():
                    await asyncio.to_thread(self._write_runtime_file, data_dir)
                    return
            await asyncio.sleep(0.2)

    def _write_runtime_file(self, data_dir: Path) -> None:
        token_file = self.token.path
        record = RunningService(
            url=self.url or "",
            pid=os.getpid(),
            token_file=str(token_file.resolve()) if token_file is not None else None,
            started_at=self.started_at,
        )
        path = runtime_file(data_dir)
        tmp = path.with_name(f"{RUNTIME_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(msgspec.json.encode(record))
            os.replace(tmp, path)
        except OSError as exc:
            self.runtime.events.warning(
                f"cannot write {path}: {exc.strerror or exc}; `kline-tui` will not find this "
                "recorder by itself (attach with its URL)"
            )
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self._runtime_file = path

    def _remove_runtime_file(self) -> None:
        path = self._runtime_file
        if path is None:
            return
        self._runtime_file = None
        with contextlib.suppress(OSError, msgspec.DecodeError):
            # Only our own: a recorder started after this one stopped may have written its own.
            if msgspec.json.decode(path.read_bytes(), type=RunningService).pid == os.getpid():
                path.unlink()

    # -- facts ---------------------------------------------------------------------------------

    def facts(self) -> ServerFacts:
        """What the server is, for snapshots and status messages."""
        runtime, settings = self.runtime, self.runtime.settings
        speed = runtime.demo_speed
        return ServerFacts(
            version=package_version(),
            instance=self.instance,
            pid=os.getpid(),
            data_dir=settings.location,
            demo=None if speed is None else f"demo {speed:g}x",
            recording=runtime.recording,
            started=runtime.started,
            started_at=self.started_at,
            flush_rows=settings.flush_rows,
            flush_age_s=settings.flush_age_s,
            keep_closed=min(runtime.keep_closed, 2_000),
            clients=len(self.feed.clients),
        )

    # -- middlewares ---------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every error as `{"error": "..."}` with its status, never an HTML page."""
        try:
            return await handler(request)
        except _Refuse as refusal:
            return _error(refusal.status, refusal.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            sentence = _http_sentence(request, exc, self.body_limit)
            return _error(exc.status, sentence, _kept_headers(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug answers 500, logged, never a traceback page
            self.runtime.supervisor.report(f"API {request.method} {request.path}", exc)
            return _error(500, f"internal error: {type(exc).__name__}")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The token, where it is needed; wrong ones counted and rate-limited per address."""
        if not (self.guard_all or request.path.startswith("/api/")):
            return await handler(request)
        address = request.remote or "?"
        wait = self.failures.retry_after(address)
        if wait is not None:
            return _error(
                429,
                "too many wrong tokens from this address: try again later",
                {"Retry-After": str(max(1, round(wait + 0.5)))},
            )
        presented = bearer(request.headers.get("Authorization"))
        if presented is None:
            return _error(401, "this endpoint needs the API token: Authorization: Bearer <token>")
        if not self.token.matches(presented):
            self.failures.failed(address)
            return _error(401, "wrong API token")
        return await handler(request)

    # -- handlers ------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        report = health(self.runtime, self.monitor, self.started_mono, len(self.feed.clients))
        return _json(report, 200 if report.status in ("ok", "starting") else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    def _running(self) -> Runtime:
        runtime = self.runtime
        if runtime.stop_requested or self._stopping:
            raise _Refuse(503, "the recorder is stopping")
        if runtime.pipeline is None or not runtime.started:
            raise _Refuse(503, "the recorder is starting")
        return runtime

    async def _state(self, request: web.Request) -> web.Response:
        self._running()
        return _json(self.feed.snapshot())

    async def _candles(self, request: web.Request) -> web.Response:
        """A page of one stream's recorded candles (`service.candles`), read in a thread."""
        runtime = self._running()
        try:
            query = parse_query(request.query)
        except QueryError as exc:
            raise _Refuse(400, str(exc)) from None
        pipeline = runtime.pipeline
        assert pipeline is not None
        try:
            reply = await read_reply(pipeline.dataset, query, self._candle_reads)
        except OSError as exc:
            raise _Refuse(503, f"the dataset cannot be read now: {exc}") from None
        return _json(reply)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self._running()
        if len(self.feed.clients) >= self.max_clients:
            raise _Refuse(503, f"too many clients: {self.max_clients} are attached already")
        ws = web.WebSocketResponse(
            heartbeat=self.heartbeat_s, compress=False, max_msg_size=4096, autoping=True
        )
        await ws.prepare(request)
        if self.send_buffer_bytes is not None and request.transport is not None:
            sock = request.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        client = ClientQueue(
            ws,
            request,
            max_messages=self.client_max_messages,
            max_bytes=self.client_max_bytes,
            send_timeout_s=self.send_timeout_s,
        )
        self.feed.join(client)
        try:
            async for _ in ws:
                pass  # a client has nothing to say on this socket; pings are answered by aiohttp
        finally:
            self.feed.leave(client)
            # Shielded: aiohttp cancels this handler when the peer goes, and the close (which
            # frees the socket's buffers) must finish all the same.
            await asyncio.shield(client.close(CLOSE_GOING_AWAY, "closed"))
        return ws

    async def _add(self, request: web.Request) -> web.Response:
        runtime = self._running()
        specs = _decoded(_add_decoder, await request.read()).streams
        keys, problems = [], []
        for spec in specs:
            try:
                keys.append(StreamKey.parse(spec))
            except SpecError as exc:
                problems.append(str(exc))
        if problems:
            raise _Refuse(400, "; ".join(problems[:10]))
        try:
            added = await runtime.add(keys)
        except StreamRefused as refused:
            problems = [safe_text(p, 1000) for p in refused.problems]
            return _json(RefusedReply("; ".join(problems)[:1000], problems), 422)
        return _json(AddedReply([str(k) for k in added]))

    async def _remove(self, request: web.Request) -> web.Response:
        runtime = self._running()
        spec = request.match_info["spec"]
        if len(spec) > MAX_SPEC:
            raise _Refuse(400, "that is not a stream spec (too long)")
        try:
            key = StreamKey.parse(spec)
        except SpecError as exc:
            raise _Refuse(400, str(exc)) from None
        removed = runtime.remove([key])
        if not removed:
            raise _Refuse(404, f"{key} is not watched")
        return _json(RemovedReply([str(k) for k in removed]))

    async def _pause(self, request: web.Request) -> web.Response:
        runtime = self._running()
        runtime.pause()
        return _json(RecordingReply(runtime.recording))

    async def _resume(self, request: web.Request) -> web.Response:
        runtime = self._running()
        runtime.resume()
        return _json(RecordingReply(runtime.recording))

    async def _flush(self, request: web.Request) -> web.Response:
        runtime = self._running()
        return _json(FlushReply(await runtime.flush()))

    async def _symbols(self, request: web.Request) -> web.Response:
        runtime = self._running()
        try:
            market = Market.parse(request.match_info["market"][:20])
        except SpecError as exc:
            raise _Refuse(400, str(exc)) from None
        pipeline = runtime.pipeline
        assert pipeline is not None
        try:
            symbols = await pipeline.symbols.symbols(market)
        except RestError as exc:
            raise _Refuse(
                502, f"cannot get {market.value}'s symbols from the exchange: {exc}"
            ) from None
        names = sorted(name for name, info in symbols.items() if info.tradable)
        return _json(SymbolsReply(market, names))

    # -- alerts ----------------------------------------------------------------------------------

    async def _alerts(self, request: web.Request) -> web.Response:
        self._running()
        return _json(AlertsReply(self.feed.alert_rows()))

    async def _add_alert(self, request: web.Request) -> web.Response:
        runtime = self._running()
        config = _decoded(_alert_decoder, await request.read())
        try:
            alert = runtime.add_alert(config)
        except ValueError as exc:
            raise _Refuse(400, str(exc)) from None
        return _json(AlertReply(alert_row(alert)), 201)

    async def _mute_alert(self, request: web.Request) -> web.Response:
        runtime = self._running()
        body = await request.read()
        muted = _decoded(_mute_decoder, body).muted if body.strip() else True
        alert = runtime.mute_alert(_alert_id(request), muted)
        if alert is None:
            raise _Refuse(404, "no such alert")
        return _json(AlertReply(alert_row(alert)))

    async def _delete_alert(self, request: web.Request) -> web.Response:
        runtime = self._running()
        alert = runtime.remove_alert(_alert_id(request))
        if alert is None:
            raise _Refuse(404, "no such alert")
        return _json(AlertReply(alert_row(alert)))


def _decoded(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """A request body, or a 400 saying what is wrong with it."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _Refuse(400, f"bad request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise _Refuse(400, f"the request body is not JSON: {exc}") from None


def _alert_id(request: web.Request) -> str:
    alert_id = request.match_info["id"]
    if len(alert_id) > 64:
        raise _Refuse(404, "no such alert")
    return alert_id


def _http_sentence(request: web.Request, exc: web.HTTPException, body_limit: int) -> str:
    """aiohttp's own errors (no route, wrong method, body too large) as one sentence."""
    path = safe_text(request.path, 200)
    if isinstance(exc, web.HTTPNotFound):
        return f"no such endpoint: {request.method} {path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {path}; use {allowed}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"the request body is too large: at most {body_limit} bytes"
    return safe_text(exc.text or exc.reason, 300)


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    """The headers of an HTTP error worth passing on (Allow on a 405)."""
    return {name: exc.headers[name] for name in ("Allow", "Retry-After") if name in exc.headers}
