"""The attach UI in a browser: textual-serve's server with a guard in front of it.

textual-serve turns each browser tab into one process of a Textual app (here `kline-tui attach`,
which drives the recorder through its API) and relays that app's screen to xterm.js over a
WebSocket. It has no authentication and no limit: whoever reaches it gets a process that holds
the recorder's token and can pause it or remove its streams. So `WebServer` adds, as one aiohttp
middleware in front of textual-serve's routes:

- the token, on any address other than loopback: `?token=...` once (it becomes an HttpOnly,
  SameSite=Strict cookie and leaves the address bar) or HTTP basic auth (any user name, the token
  as password); wrong tokens are rate-limited per client as the API's are (`service.auth`);
- a cap on concurrent tabs, counted on the WebSocket that starts a process: one more gets a
  readable 503 page;
- what a browser needs against other sites: a loopback server answers only to loopback host
  names (DNS rebinding), a WebSocket must come from the page's own origin (another site cannot
  open a tab in the background), and no page may be framed (clickjacking).

What this relies on in textual-serve (1.1): `Server(command, host, port, title)` runs `command`
through a shell for each tab, with a copy of this process's environment (so the token reaches
the tab's process by `KLINE_TUI_TOKEN`, never on its command line); `Server._make_app()` builds
the aiohttp application with the routes named "index", "websocket", "download" and "static";
`handle_index` fills the template `app_index.html` (`font_size`, `app_websocket_url`,
`config.static.url`, `application.name`); `handle_websocket` runs one tab until its socket
closes and its process has exited, and stops the process when cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
import math
import shlex
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp_jinja2
from aiohttp import hdrs, web
from textual_serve.server import Server
from yarl import URL

from kline_tui.service.auth import FailureLimiter, is_loopback

__all__ = ["COOKIE", "WebServer"]

log = logging.getLogger(__name__)

COOKIE = "kline_tui_web"
"""The session cookie: a value derived from the token, never the token itself, so a cookie
that leaks does not open the recorder's API."""
_COOKIE_CONTEXT = b"kline-tui web session 1"
_TOKEN_QUERY = "token"
# The terminal's size and font as the page asks for them, kept sane: each cell costs the tab's
# process memory, and nothing real is wider than this.
_MAX_COLUMNS, _MAX_ROWS = 1000, 500
_FONT_SIZES = (6, 64)
_STOP_TABS_S = 10.0
"""How long a stop waits for the tabs' processes to quit."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebServer(Server):
    """textual-serve's server running `command` for each browser tab, behind a guard: the token
    (when `token` is given), at most `max_tabs` tabs at once, and same-origin checks.

    `start()` listens on `host:port` (port 0: one the system picks) and returns the page's URL;
    `stop()` closes the tabs (their processes are told to quit) and the listening socket.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        host: str,
        port: int,
        max_tabs: int,
        token: str | None = None,
        title: str = "kline-tui",
        limiter: FailureLimiter | None = None,
    ) -> None:
        if max_tabs < 1:
            raise ValueError("max_tabs must be at least 1")
        if token is not None and not token:
            raise ValueError("an empty token guards nothing")
        # textual-serve hands the command to a shell: each word is quoted, so a URL or a path
        # with spaces or `;` in it stays one argument.
        super().__init__(shlex.join(command), host=host, port=port, title=title)
        self.token = token
        self.max_tabs = max_tabs
        self.limiter = limiter or FailureLimiter()
        self._session = (
            hmac.new(token.encode(), _COOKIE_CONTEXT, hashlib.sha256).hexdigest() if token else None
        )
        self._tabs: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None

    @property
    def tabs(self) -> int:
        """How many tabs (processes) are open now."""
        return len(self._tabs)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen, and return the page's URL (with the port the system picked for port 0)."""
        app = await self._make_app()
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def stop(self) -> None:
        """Close every tab (each process is told to quit and awaited, for a bounded time), then
        the server."""
        tabs = list(self._tabs)
        for tab in tabs:
            tab.cancel()
        if tabs:
            _, pending = await asyncio.wait(tabs, timeout=_STOP_TABS_S)
            if pending:
                log.warning("%d tab(s) did not close within %g s", len(pending), _STOP_TABS_S)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        # Before the first request the list is still open: the guard runs ahead of every route.
        app.middlewares.append(self._guard)
        return app

    async def on_startup(self, app: web.Application) -> None:
        """Nothing: textual-serve prints its banner to stdout here; the command says where it
        listens instead."""

    # -- textual-serve's page ----------------------------------------------------------------

    @aiohttp_jinja2.template("app_index.html")
    async def handle_index(self, request: web.Request) -> dict[str, Any]:
        """The page, its URLs pointing back where the browser found it.

        textual-serve writes them from one address fixed at start (`public_url`), which is wrong
        for a server on 0.0.0.0, on a port the system picked, or reached as `localhost` rather
        than 127.0.0.1 (the cookie would not follow the WebSocket there)."""
        try:
            base = URL.build(scheme=request.scheme, authority=request.host)
        except ValueError:
            raise web.HTTPBadRequest(text="unreadable Host header") from None
        router = request.app.router
        socket = base.with_scheme("wss" if request.secure else "ws").join(
            router["websocket"].url_for()
        )
        static = base.join(router["static"].url_for(filename="/"))
        low, high = _FONT_SIZES
        return {
            "font_size": _bounded(request.query.get("fontsize"), 16, low, high),
            "app_websocket_url": str(socket),
            "config": {"static": {"url": str(static).rstrip("/") + "/"}},
            "application": {"name": self.title},
        }

    # -- the guard ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._host_allowed(request):
            return _page(
                421,
                "Wrong address",
                "This server listens on loopback and answers to localhost or 127.0.0.1 only. "
                "To reach it by another name, serve it on another address, with a token.",
            )
        session_cookie: str | None = None
        if self.token is not None:
            refusal, session_cookie = self._authenticate(request)
            if refusal is not None:
                return refusal
        route = request.match_info.route.name
        if route == "websocket":
            return await self._tab(request, handler)
        if route == "index" and len(self._tabs) >= self.max_tabs:
            return self._full()
        response = await handler(request)
        if not response.prepared:
            response.headers.update(_PAGE_HEADERS)
            if session_cookie is not None:
                self._set_cookie(request, response, session_cookie)
        return response

    def _host_allowed(self, request: web.Request) -> bool:
        """On loopback, only loopback host names: a page of another site whose name was made to
        resolve to 127.0.0.1 (DNS rebinding) must not reach the tabs."""
        if not is_loopback(self.host):
            return True
        try:
            host = URL.build(scheme="http", authority=request.host).host
        except ValueError:
            return False
        return host is not None and is_loopback(host)

    def _authenticate(self, request: web.Request) -> tuple[web.StreamResponse | None, str | None]:
        """(a refusal or a redirect to answer with, or None to go on; the session cookie to
        set on the answer, when the token came some other way than the cookie)."""
        assert self.token is not None and self._session is not None
        cookie = request.cookies.get(COOKIE)
        offered = request.query.get(_TOKEN_QUERY)
        password = _basic_password(request)
        if cookie is None and offered is None and password is None:
            return _needs_token(), None
        wait = self.limiter.retry_after(_client(request))
        if wait is not None:
            return _page(
                429,
                "Too many wrong tokens",
                f"Too many wrong tokens from your address: try again in {math.ceil(wait)} s.",
                {hdrs.RETRY_AFTER: str(max(1, math.ceil(wait)))},
            ), None
        if offered is not None:
            if not _same(offered, self.token):
                return self._wrong(request), None
            return self._drop_token_from_address(request), None
        if password is not None and _same(password, self.token):
            return None, self._session
        if cookie is not None and _same(cookie, self._session):
            return None, None
        return self._wrong(request), None

    def _wrong(self, request: web.Request) -> web.StreamResponse:
        self.limiter.failed(_client(request))
        log.warning("wrong token from %s", request.remote)
        return _needs_token()

    def _drop_token_from_address(self, request: web.Request) -> web.StreamResponse:
        """The right token in the query: set the cookie and send the browser to the same address
        without it. The page replaces itself by script rather than by an HTTP redirect, because
        a browser withholds a SameSite=Strict cookie from a redirect that a link on another site
        started, and it takes the token out of the history too."""
        target = request.rel_url.without_query_params(_TOKEN_QUERY)
        href = html.escape(str(target), quote=True)
        body = (
            f'<a id="go" href="{href}">Continue</a>'
            "<script>location.replace(document.getElementById('go').href)</script>"
        )
        response = _page(200, "Signed in", body, raw=True)
        assert self._session is not None
        self._set_cookie(request, response, self._session)
        return response

    def _set_cookie(self, request: web.Request, response: web.StreamResponse, value: str) -> None:
        response.set_cookie(
            COOKIE, value, path="/", httponly=True, samesite="Strict", secure=request.secure
        )

    async def _tab(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The WebSocket that starts one tab's process: counted, from the page's own origin."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not _same_origin(origin, request.host):
            log.warning("refused a tab opened from %s", origin[:200])
            return _page(403, "Other origin", "A tab opens from this server's own page only.")
        if len(self._tabs) >= self.max_tabs:
            log.warning("refused a tab from %s: all %d in use", request.remote, self.max_tabs)
            return self._full()
        task = asyncio.current_task()
        assert task is not None
        self._tabs.add(task)  # no await since the check above: the cap cannot be overrun
        log.info("tab opened from %s (%d of %d)", request.remote, len(self._tabs), self.max_tabs)
        try:
            query = request.query
            sized = request.rel_url.update_query(
                width=_bounded(query.get("width"), 80, 1, _MAX_COLUMNS),
                height=_bounded(query.get("height"), 24, 1, _MAX_ROWS),
            )
            return await handler(request.clone(rel_url=sized))
        finally:
            self._tabs.discard(task)
            log.info("tab closed (%d of %d open)", len(self._tabs), self.max_tabs)

    def _full(self) -> web.Response:
        return _page(
            503,
            "All tabs in use",
            f"All {self.max_tabs} tabs this server allows are open. Close one, then reload.",
            {hdrs.RETRY_AFTER: "10"},
        )


_PAGE_HEADERS = {
    # No other site may frame the terminal and trick keys into it, nor learn its address.
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _page(
    status: int,
    title: str,
    text: str,
    headers: dict[str, str] | None = None,
    *,
    raw: bool = False,
) -> web.Response:
    """A small page a person can read; `text` is escaped unless `raw` (markup made here)."""
    body = text if raw else f"<p>{html.escape(text)}</p>"
    document = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>kline-tui: {html.escape(title)}</title>"
        "<style>body{background:#0c181f;color:#eee;font:16px monospace;margin:3em}"
        "a{color:#8cf}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    response = web.Response(status=status, text=document, content_type="text/html", charset="utf-8")
    response.headers.update(_PAGE_HEADERS)
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    response.headers.update(headers or {})
    return response


def _needs_token() -> web.Response:
    return _page(
        401,
        "Token needed",
        "This kline-tui asks for its token: open this address with ?token=YOUR_TOKEN once, "
        "or sign in with any user name and the token as the password.",
        {hdrs.WWW_AUTHENTICATE: 'Basic realm="kline-tui", charset="UTF-8"'},
    )


def _basic_password(request: web.Request) -> str | None:
    """The password of HTTP basic auth, None when none is offered, "" when it is unreadable."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def _client(request: web.Request) -> str:
    """Whom wrong tokens count against: the peer's address (a proxy's, behind one)."""
    return request.remote or "?"


def _same(offered: str, expected: str) -> bool:
    """Constant-time comparison (of the UTF-8 bytes: compare_digest takes ASCII str only)."""
    return hmac.compare_digest(offered.encode("utf-8", "replace"), expected.encode())


def _same_origin(origin: str, host: str) -> bool:
    """Whether the `Origin` of a request names the host (and port) it was sent to; the scheme
    is not compared, so a TLS proxy in front changes nothing."""
    try:
        return URL(origin).authority.lower() == host.lower()
    except ValueError:
        return False


def _bounded(text: str | None, default: int, low: int, high: int) -> int:
    """`text` as an integer within [low, high]; `default` when it is not one."""
    try:
        value = int(text) if text is not None else default
    except ValueError:
        value = default
    return max(low, min(high, value))
