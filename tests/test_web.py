"""`kline-tui web`: the attach UI in a browser, behind its guard.

The guard (token, failures rate-limited, tab cap, same origin, bounded sizes) is tested on the
server in this process with aiohttp's client and tab processes that only report what they were
given. The whole chain runs in a real headless Chromium: a page that merely loads does not pass,
the terminal's text is read from xterm.js's buffer and must show the streams, then change.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from kline_tui.cli.web import main
from kline_tui.service.auth import FailureLimiter
from kline_tui.ui.web import COOKIE, WebServer
from tests.support import KLINE_TUI, env_for, wait_until

TOKEN = "t0ken-for-the-web-test-7f3a9c"

# A tab's process that reports its arguments and environment, then waits until textual-serve
# writes to it (a resize, or the quit it sends when the tab closes) and says it left.
CHILD = """
import json, os, sys
out = sys.argv[1]
def note(**what):
    with open(out, "a") as f:
        f.write(json.dumps(what) + "\\n")
note(argv=sys.argv, token=os.environ.get("KLINE_TUI_TOKEN"), columns=os.environ.get("COLUMNS"))
sys.stdout.write("__GANGLION__\\n")
sys.stdout.flush()
sys.stdin.buffer.read(1)
note(left=True)
"""


def notes(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **options):
    """A WebServer on a free loopback port whose tabs run CHILD, and a client session on it
    (cookies kept, even for an IP address)."""
    options.setdefault("max_tabs", 4)
    server = WebServer(
        [sys.executable, "-c", CHILD, str(tmp_path / "tabs.jsonl")],
        host="127.0.0.1",
        port=0,
        **options,
    )
    url = await server.start()
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(base_url=url, cookie_jar=jar) as client:
            yield server, client
    finally:
        await server.stop()
        collect_tabs()


def collect_tabs() -> None:
    """Close the tabs' process transports while the loop runs: textual-serve leaves them in
    reference cycles, and collected after the test's loop has closed they complain."""
    gc.collect()


async def handshake_status(client: aiohttp.ClientSession, path: str, **kw) -> int:
    """The HTTP status that refused a WebSocket handshake (the test fails if it was accepted)."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(path, **kw)
    return refused.value.status


# -- the token ---------------------------------------------------------------------------------


async def test_without_the_token_nothing_is_served_and_no_process_starts(tmp_path):
    async with serving(tmp_path, token=TOKEN) as (server, client):
        async with client.get("/") as page:
            assert page.status == 401 and server.tabs == 0
            assert page.headers["WWW-Authenticate"].startswith("Basic ")
            assert "?token=" in await page.text()  # says how to get in
        async with client.get("/static/js/textual.js") as script:
            assert script.status == 401
        assert await handshake_status(client, "/ws") == 401
        async with client.get("/", params={"token": "wrong"}) as wrong:
            assert wrong.status == 401
            assert COOKIE not in wrong.cookies
    assert notes(tmp_path / "tabs.jsonl") == []


async def test_token_in_the_address_sets_a_strict_cookie_and_leaves_the_address(tmp_path):
    async with serving(tmp_path, token=TOKEN) as (server, client):
        async with client.get("/", params={"token": TOKEN, "fontsize": "20"}) as signed_in:
            assert signed_in.status == 200
            cookie = signed_in.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert TOKEN not in cookie.value  # a leaked cookie does not give the API's token
            body = await signed_in.text()
            assert 'href="/?fontsize=20"' in body and TOKEN not in body
        async with client.get("/", params={"fontsize": "20"}) as page:  # the cookie only
            assert page.status == 200
            body = await page.text()
            assert f'data-session-websocket-url="ws://127.0.0.1:{server.port}/ws"' in body
            assert 'data-font-size="20"' in body
            assert page.headers["X-Frame-Options"] == "DENY"
        tab = await client.ws_connect("/ws")
        await wait_until(lambda: notes(tmp_path / "tabs.jsonl"), what="the tab's process")
        await tab.close()


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


async def test_basic_auth_with_the_token_as_password(tmp_path):
    async with serving(tmp_path, token=TOKEN) as (_, client):
        async with client.get("/", headers=basic("anyone", "nope")) as wrong:
            assert wrong.status == 401
        async with client.get("/", headers=basic("anyone", TOKEN)) as right:
            assert right.status == 200
            assert "textual-terminal" in await right.text()
            assert COOKIE in right.cookies  # the WebSocket then goes in by the cookie
        tab = await client.ws_connect("/ws")
        await wait_until(lambda: notes(tmp_path / "tabs.jsonl"), what="the tab's process")
        await tab.close()


async def test_wrong_tokens_are_rate_limited_per_client(tmp_path):
    now = [1000.0]
    limiter = FailureLimiter(limit=2, window_s=30.0, clock=lambda: now[0])
    async with serving(tmp_path, token=TOKEN, limiter=limiter) as (_, client):
        for _ in range(2):
            async with client.get("/", params={"token": "guess"}) as wrong:
                assert wrong.status == 401
        # Blocked now: even the right token is not looked at.
        async with client.get("/", params={"token": TOKEN}) as blocked:
            assert blocked.status == 429
            assert 1 <= int(blocked.headers["Retry-After"]) <= 30
        now[0] += 30.0
        async with client.get("/", params={"token": TOKEN}) as again:
            assert again.status == 200


# -- tabs ----------------------------------------------------------------------------------


async def test_tabs_are_capped_and_a_closed_tab_frees_its_place(tmp_path):
    report = tmp_path / "tabs.jsonl"
    async with serving(tmp_path, max_tabs=1) as (server, client):
        first = await client.ws_connect("/ws", params={"width": "99999", "height": "30"})
        await wait_until(lambda: notes(report), what="the first tab's process")
        assert notes(report)[0]["columns"] == "1000"  # a size from the page is bounded
        assert server.tabs == 1
        async with client.get("/") as full:
            assert full.status == 503
            assert "All 1 tabs" in await full.text()
        assert await handshake_status(client, "/ws") == 503
        await first.close()
        await wait_until(lambda: server.tabs == 0, what="the tab to close")
        assert notes(report)[-1] == {"left": True}  # its process was told to quit, and did
        async with client.get("/") as page:
            assert page.status == 200
        second = await client.ws_connect("/ws")
        await wait_until(lambda: len(notes(report)) == 3, what="the second tab's process")
        await second.close()


async def test_stop_closes_every_tab(tmp_path):
    report = tmp_path / "tabs.jsonl"
    async with serving(tmp_path) as (server, client):
        tabs = [await client.ws_connect("/ws") for _ in range(2)]
        # Read like a browser does, which answers the server's close at once.
        readers = [asyncio.create_task(tab.receive()) for tab in tabs]
        await wait_until(lambda: len(notes(report)) == 2, what="two tabs' processes")
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 5
        assert [n for n in notes(report) if n.get("left")] == [{"left": True}] * 2
        for reader in readers:
            assert (await reader).type is aiohttp.WSMsgType.CLOSE


async def test_other_sites_can_neither_open_a_tab_nor_rebind_a_name(tmp_path):
    async with serving(tmp_path) as (server, client):
        evil = {"Origin": "http://evil.example"}
        assert await handshake_status(client, "/ws", headers=evil) == 403
        async with client.get("/", headers={"Host": f"evil.example:{server.port}"}) as rebound:
            assert rebound.status == 421
        async with client.get("/", headers={"Host": f"localhost:{server.port}"}) as local:
            assert local.status == 200
            # The page points back where it was found, so the cookie follows the socket.
            assert f"ws://localhost:{server.port}/ws" in await local.text()
    assert notes(tmp_path / "tabs.jsonl") == []


async def test_the_title_is_escaped(tmp_path):
    title = "kline-tui · <img src=x onerror=alert(1)>"
    async with serving(tmp_path, title=title) as (_, client), client.get("/") as page:
        body = await page.text()
    assert "<img src=x" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


# -- the command -----------------------------------------------------------------------------


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No token in the environment, and config and data folders inside tmp_path."""
    monkeypatch.delenv("KLINE_TUI_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return ["--data-dir", str(tmp_path / "data")]


def test_any_address_but_loopback_needs_a_token(isolated, capsys):
    assert main(["--listen", "0.0.0.0:0", *isolated]) == 2
    err = capsys.readouterr().err
    assert "needs a token" in err and "KLINE_TUI_TOKEN" in err
    assert len(err.strip().splitlines()) == 1


def test_an_empty_token_file_is_one_line(isolated, capsys, tmp_path):
    (tmp_path / "token").write_text("\n")
    argv = ["--listen", "0.0.0.0:0", "--token-file", str(tmp_path / "token"), *isolated]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is empty" in err and len(err.strip().splitlines()) == 1


def test_a_port_in_use_is_one_line(isolated, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--listen", f"127.0.0.1:{port}", *isolated]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--max-tabs", "0"], "--max-tabs"),
        (["--max-tabs", "65"], "--max-tabs"),
        (["--listen", "here:there"], "--listen"),
        (["ftp://127.0.0.1:8765"], "not a recorder's address"),
    ],
)
def test_bad_options_are_one_line(isolated, capsys, argv, says):
    assert main([*argv, *isolated]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


# -- in a real browser -----------------------------------------------------------------------

# Saved as `window.__terminals` before textual-serve's script runs: its tab object keeps the
# xterm.js Terminal in `this.terminal`, in a closure the page cannot reach. A setter on
# Object.prototype sees that assignment (any object's first `terminal` property), keeps the
# value when it is a Terminal (it has a buffer), and leaves a plain property behind.
CATCH_TERMINAL = """
window.__terminals = [];
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true,
                                             enumerable: true});
    if (value && value.buffer && value.buffer.active) window.__terminals.push(value);
  },
});
"""
# The screen as text, one line per row, from xterm.js's buffer API.
READ_TERMINAL = """
const term = window.__terminals && window.__terminals[0];
if (!term) return null;
const buffer = term.buffer.active, rows = [];
for (let y = 0; y < term.rows; y++) {
  const line = buffer.getLine(buffer.viewportY + y);
  rows.push(line ? line.translateToString(true) : "");
}
return rows.join("\\n");
"""
# Chromium here stalls on connections it tries in the background unless told not to; the page's
# one outside link (a web font) resolves nowhere, so the test reaches nothing but loopback.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def _chromium() -> tuple[str, str] | str:
    """(browser, driver) paths, or why the browser test cannot run."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return (
            "no chromium or chromedriver on PATH (Debian: apt-get install chromium "
            "chromium-driver; .ci/run does so where it can)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Selenium, catching xterm.js's Terminal on every page."""
    found = _chromium()
    if isinstance(found, str):
        pytest.skip(found)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="kline-tui-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            driver.execute_cdp_cmd(
                "Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_TERMINAL}
            )
            yield driver
        finally:
            driver.quit()


# A row of the watch table: market, then symbol (the panels below start with their borders).
WATCH_ROW = re.compile(r"\A\s*(spot|usdm|coinm)\s+[A-Z0-9_]+\s")


async def screen(driver) -> str:
    """The terminal's text now ("" before the page has a terminal)."""
    return await asyncio.to_thread(driver.execute_script, READ_TERMINAL) or ""


async def watch_rows(driver, timeout: float = 60.0) -> list[str]:
    """The rows of the watch table (those naming a symbol), once the terminal shows them."""

    async def rows() -> list[str]:
        return [line for line in (await screen(driver)).splitlines() if WATCH_ROW.match(line)]

    deadline = time.monotonic() + timeout
    while not (found := await rows()):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no watch table in the terminal; it shows:\n{await screen(driver)}"
            )
        await asyncio.sleep(0.5)
    return found


async def assert_live_watch_table(driver, symbols: list[str]) -> None:
    """The terminal shows a row for each symbol, and those rows change within 20 s."""
    first = await watch_rows(driver)
    for symbol in symbols:
        assert any(symbol in row for row in first), (symbol, first)
    deadline = time.monotonic() + 20
    while await watch_rows(driver) == first:
        assert time.monotonic() < deadline, f"the watch table did not change:\n{first}"
        await asyncio.sleep(0.5)


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 30.0) -> str:
    """The first match of `pattern` (its group 1) in the log file, once it is written."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text() if log.exists() else ""
        if found := re.search(pattern, text):
            return found.group(1)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the log (exit {proc.poll()}):\n{text}")
        time.sleep(0.1)


@contextlib.contextmanager
def kline_tui(args: list[str], env: dict[str, str], log: Path):
    """`kline-tui ARGS` as a child, its output to `log`; stopped by SIGTERM at the end, which it
    must answer by exiting 0."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([KLINE_TUI, *args], env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert code == 0, f"kline-tui {args[0]} exited {code}:\n{log.read_text()}"


@pytest.fixture(scope="module")
def recorder(tmp_path_factory):
    """`kline-tui record --demo --listen` on a free loopback port, two streams, its API guarded
    by TOKEN: (its URL, its config file, the environment it runs in, the data folder)."""
    tmp = tmp_path_factory.mktemp("recorder")
    env = env_for(tmp)
    env.pop("KLINE_TUI_TOKEN", None)
    config = tmp / "config.toml"
    config.write_text("")
    data = tmp / "data"
    args = ["record", "--config", str(config), "--data-dir", str(data), "--demo"]
    args += ["--listen", "127.0.0.1:0", "usdm:BTCUSDT:1m", "spot:ETHUSDT:1m"]
    log = tmp / "record.log"
    with kline_tui(args, dict(env, KLINE_TUI_TOKEN=TOKEN), log) as proc:
        url = wait_for_line(log, r"service API on (http://\S+)", proc)
        yield url, config, env, data


def command_lines_holding(secret: str) -> list[str]:
    """Every process's command line that holds `secret` (what `ps` would show)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if secret.encode() in cmdline.read_bytes():
                found.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_browser_shows_a_recorders_streams_live(browser, recorder, tmp_path):
    """The whole chain: a recorder, `kline-tui web` (token from a file, the environment without
    it), `kline-tui attach` in the tab, xterm.js in Chromium."""
    url, config, env, data = recorder
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    args = ["web", url, "--config", str(config), "--data-dir", str(data)]
    args += ["--listen", "127.0.0.1:0", "--token-file", str(token_file), "--max-tabs", "1"]
    log = tmp_path / "web.log"
    with kline_tui(args, env, log) as web:
        page = wait_for_line(log, r"serving (http://\S+)", web)
        browser.get(page)
        # The events socket of the recorder takes the token only: a live table proves the tab's
        # attach got it, through its environment since no command line holds it.
        asyncio.run(assert_live_watch_table(browser, ["BTCUSDT", "ETHUSDT"]))
        if Path("/proc/self/cmdline").exists():
            assert command_lines_holding(TOKEN) == []
        browser.get("about:blank")
    assert "tab opened from 127.0.0.1 (1 of 1)" in log.read_text()


async def test_browser_gets_in_with_the_token_in_the_address(
    browser, recorder, tmp_path, monkeypatch
):
    url, config, env, _data = recorder
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("KLINE_TUI_TOKEN", TOKEN)  # as `kline-tui web` passes it to its tabs
    command = [sys.executable, "-m", "kline_tui", "attach", "--config", str(config), url]
    server = WebServer(command, host="127.0.0.1", port=0, max_tabs=2, token=TOKEN)
    page = await server.start()
    try:
        await asyncio.to_thread(browser.get, page)  # refused: no terminal, no process
        await asyncio.sleep(1)
        assert await screen(browser) == "" and server.tabs == 0
        await asyncio.to_thread(browser.get, f"{page}?token={TOKEN}")
        await assert_live_watch_table(browser, ["BTCUSDT"])
        assert browser.current_url == page  # the token left the address bar
    finally:
        await asyncio.to_thread(browser.get, "about:blank")
        await server.stop()
        collect_tabs()
