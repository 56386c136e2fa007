"""The UI attached to a recorder running as a service: what it shows comes from the API, its keys
act on that recorder, quitting leaves it recording, and a restart of the recorder is lived
through. Real loopback sockets: the simulator, the service, the client."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kline_tui.cli import ui as cli_ui
from kline_tui.cli.attach import attach_target
from kline_tui.config import Settings
from kline_tui.model import StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.retry import Backoff
from kline_tui.runtime import Runtime
from kline_tui.service.api import Service
from kline_tui.service.auth import Token
from kline_tui.service.client import RemoteRecorder
from kline_tui.ui.app import KlineApp
from kline_tui.ui.recorder import AttachedRecorder
from kline_tui.ui.screens.add_streams import AddStreamsScreen
from kline_tui.ui.widgets.recording import RecordingPanel

from .service_support import TOKEN, USDM, live, serve
from .support import make_settings, wait_until

SIZE = (160, 45)
BTC, ETH, SOL = (StreamKey.parse(s) for s in (*USDM, "usdm:SOLUSDT:1m"))


def attached_app(url: str, settings: Settings) -> KlineApp:
    client = RemoteRecorder(url, TOKEN, backoff=Backoff(base=0.1, cap=0.5))
    return KlineApp(settings, recorder=AttachedRecorder(client, url, settings))


def reconnects(runtime: Runtime) -> int:
    assert runtime.pipeline is not None
    return sum(s.reconnects for s in runtime.pipeline.hub.connection_status())


async def test_the_attached_ui_shows_the_recorder_and_its_keys_act_on_it(sim, tmp_path):
    async with serve(sim, tmp_path / "data", flush_age_s=60) as served:
        await live(served)
        app = attached_app(served.url, Settings(tmp_path / "ui.toml", False))
        async with app.run_test(size=SIZE) as pilot:
            await app.wait_started()
            table = app.table
            await wait_until(lambda: set(table.order) == {BTC, ETH}, what="the recorder's rows")
            # Sparklines: the recent closed candles came with the snapshot.
            assert all(app.recorder.streams[k].closed for k in (BTC, ETH))
            before = reconnects(served.runtime)
            connections = len(served.hub.connection_status())

            await pilot.press("a")
            await wait_until(lambda: isinstance(app.screen, AddStreamsScreen), what="dialog")
            await pilot.press(*"SOLUSDT", "enter")
            await wait_until(lambda: SOL in served.hub.streams, what="SOL on the recorder")
            await wait_until(lambda: SOL in table.order, what="SOL in the table")
            await wait_until(lambda: table.selected == SOL, what="SOL selected")
            await wait_until(
                lambda: served.hub.streams[SOL].status is StreamStatus.LIVE, what="SOL live"
            )
            # Subscribed on the open connection: no new connection, no reconnect.
            assert len(served.hub.connection_status()) == connections
            assert reconnects(served.runtime) == before

            await pilot.press("d")
            await wait_until(lambda: SOL not in served.hub.streams, what="SOL removed")
            await wait_until(lambda: SOL not in table.order, what="SOL gone from the table")

            await pilot.press("p")
            await wait_until(lambda: not served.runtime.recording, what="paused")
            await wait_until(lambda: not app.recorder.recording, what="the UI says paused")
            await pilot.press("p")
            await wait_until(lambda: served.runtime.recording, what="resumed")

            pipeline = served.runtime.pipeline
            assert pipeline is not None
            await wait_until(lambda: pipeline.sink.stats.rows_buffered > 0, what="rows buffered")
            flushes = pipeline.sink.stats.flushes
            await pilot.press("f")
            # The flush itself, not an empty buffer: at 60x two streams close a candle every
            # half second, so on a loaded machine the buffer may hold new rows at every look.
            await wait_until(lambda: pipeline.sink.stats.flushes > flushes, what="flushed")
            assert pipeline.sink.stats.rows_written > 0

            await pilot.press("q")
            await wait_until(lambda: app.return_code is not None, what="the UI closed")
        assert app.return_code == 0
        # The recorder goes on, and another UI finds what the first one changed.
        assert served.runtime.started and not served.runtime.stop_requested
        assert set(served.hub.streams) == {BTC, ETH}
        again = attached_app(served.url, Settings(tmp_path / "ui.toml", False))
        async with again.run_test(size=SIZE):
            await again.wait_started()
            await wait_until(lambda: set(again.table.order) == {BTC, ETH}, what="rows again")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_attached_ui_lives_through_a_restart_of_the_recorder(sim, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(sim, tmp_path / "data", [str(BTC)], history=3)

    async def recorder() -> tuple[Runtime, Service]:
        runtime = Runtime(settings, backoff=Backoff(base=0.2, cap=1.0))
        service = Service(runtime, "127.0.0.1", port, token=Token(TOKEN, "env"))
        await service.start()
        await runtime.start()
        return runtime, service

    runtime, service = await recorder()
    app = attached_app(url, Settings(tmp_path / "ui.toml", False))
    try:
        async with app.run_test(size=SIZE):
            await app.wait_started()
            await wait_until(lambda: app.table.order == [BTC], what="the row")
            await service.stop()
            await runtime.stop()
            await wait_until(lambda: not app.recorder.running, what="the UI sees it gone")
            app.repaint()
            assert "unreachable" in app.recorder.mode
            said = app.query_one("#recording", RecordingPanel).view.unreachable
            assert said is not None and ("next try in" in said or "trying now" in said)
            assert app.table.order == [BTC]  # the rows stay, marked as not live
            assert app.recorder.streams[BTC].status is not StreamStatus.LIVE
            assert app.return_code is None  # still open

            runtime, service = await recorder()
            await wait_until(lambda: app.recorder.running, timeout=20, what="attached again")
            await wait_until(
                lambda: app.recorder.streams[BTC].status is StreamStatus.LIVE, what="live again"
            )
            assert "attached" in app.recorder.mode
            app.repaint()
            assert app.query_one("#recording", RecordingPanel).view.unreachable is None
    finally:
        await service.stop()
        await runtime.stop()


async def test_plain_kline_tui_attaches_to_the_recorder_of_its_data_folder(
    sim, tmp_path, monkeypatch
):
    """What `kline-tui --data-dir D` decides when a recorder with an API holds D: it attaches
    to that recorder's URL with the token the recorder names, instead of being refused."""
    data = tmp_path / "data"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("KLINE_TUI_TOKEN", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(f'watch = ["{BTC}"]\n')
    async with serve(sim, data) as served:
        served.service.token = Token(TOKEN, "file", token_file)
        await wait_until(lambda: (data / ".kline-tui" / ".service.json").exists(), what="file")
        target = attach_target(Settings(config, True), data, None)
        assert (target.url, target.token) == (served.url, TOKEN)

        calls: list[tuple] = []

        def run_attached(settings, url, token, *, add=None):
            calls.append((url, token, add))
            return 0

        def run_app(*args, **kw):  # pragma: no cover - the failure this test is for
            raise AssertionError("started a second recorder on a folder in use")

        monkeypatch.setattr("kline_tui.ui.app.run_attached", run_attached)
        monkeypatch.setattr("kline_tui.ui.app.run_app", run_app)
        code = cli_ui.main(["--config", str(config), "--data-dir", str(data), str(ETH)])
        assert code == 0
        assert calls == [(served.url, TOKEN, [ETH])]


def test_attach_refuses_an_address_that_is_not_a_url(tmp_path, capsys):
    from kline_tui.cli import attach

    code = attach.main(["--data-dir", str(tmp_path), "ftp://x"])
    assert code == 2
    assert "is not a recorder's address" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["", "two words\n"])
def test_attach_says_when_the_token_file_holds_no_token(tmp_path, capsys, content):
    from kline_tui.cli import attach

    bad = Path(tmp_path / "token")
    bad.write_text(content)
    code = attach.main(["--data-dir", str(tmp_path), "--token-file", str(bad)])
    assert code == 2
    assert "token file" in capsys.readouterr().err


async def test_a_chart_opened_on_a_stream_added_while_attached_fills_with_its_history(
    sim, tmp_path
):
    """The recorder fills an added stream's older candles from REST after the stream starts;
    the UI already attached gets them too, not only a UI that attaches later."""
    settings = make_settings(sim, tmp_path / "data", [str(BTC)], history=3)
    runtime = Runtime(settings, backoff=Backoff(base=0.2, cap=1.0), seed_history=True)
    service = Service(runtime, "127.0.0.1", 0, token=Token(TOKEN, "env"))
    url = await service.start()
    await runtime.start()
    app = attached_app(url, Settings(tmp_path / "ui.toml", False))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await app.wait_started()
            await wait_until(lambda: app.table.order == [BTC], what="the row")
            await pilot.press("a")
            await wait_until(lambda: isinstance(app.screen, AddStreamsScreen), what="dialog")
            # The history arrives well after the stream's first tick has gone out.
            sim.faults.rest_delay_s = 0.5
            await pilot.press(*"SOLUSDT", "enter")
            assert runtime.pipeline is not None
            held = runtime.pipeline.hub.streams

            def same() -> bool:
                mine = app.recorder.streams.get(SOL)
                if SOL not in held or mine is None or len(held[SOL].closed) < 100:
                    return False
                return [c.open_time for c in mine.closed] == [c.open_time for c in held[SOL].closed]

            await wait_until(same, timeout=20, what="the added stream's history in the UI")
    finally:
        await service.stop()
        await runtime.stop()
