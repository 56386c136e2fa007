"""Alerts: the rules' semantics on made-up sequences, the engine fed by the simulator in a
runtime, the webhook against a test server on loopback, the config round trip, the service API,
`record` logging a firing headless, and the UI's dialog, list and persistence."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from kline_tui.alerts.engine import AlertEngine
from kline_tui.alerts.rules import Firing, firing_id
from kline_tui.alerts.state import AlertState, read_states, state_path
from kline_tui.alerts.webhook import WebhookSender
from kline_tui.config import (
    AlertConfig,
    ConfigError,
    NotifyConfig,
    Settings,
    load_settings,
    save_alerts,
)
from kline_tui.model import Candle, StreamKey
from kline_tui.runtime import Runtime

from .support import make_settings, wait_until

KEY = StreamKey.parse("usdm:BTCUSDT:1m")
MINUTE = 60_000


def engine_with(**alert: object) -> tuple[AlertEngine, list[Firing]]:
    engine = AlertEngine([AlertConfig(stream=str(KEY), **alert)])  # type: ignore[arg-type]
    fired: list[Firing] = []
    engine.listeners.append(fired.append)
    return engine, fired


def feed_prices(engine: AlertEngine, prices: list[float], step_ms: int = 1000) -> None:
    for i, price in enumerate(prices):
        at = 10 * MINUTE + i * step_ms
        engine.on_price(KEY, price, at - at % MINUTE, at)


def candle(i: int, open_: float, close: float, volume: float = 1.0) -> Candle:
    t = 100 * MINUTE + i * MINUTE
    return Candle(
        t,
        t + MINUTE - 1,
        open_,
        max(open_, close),
        min(open_, close),
        close,
        volume,
        volume * close,
        0.0,
        0.0,
        1,
    )


# -- rules --------------------------------------------------------------------------------------


def test_price_above_fires_once_per_crossing_and_rearms() -> None:
    engine, fired = engine_with(rule="price_above", value=100.0, cooldown_s=0)
    feed_prices(engine, [99, 99.5, 100.5, 101, 102, 99, 98, 100.1, 100.2])
    assert [f.price for f in fired] == [100.5, 100.1]
    first = fired[0]
    assert first.fired_at == 10 * MINUTE + 2000
    assert first.open_time == 10 * MINUTE
    assert first.id == firing_id(str(KEY), "price_above", 100.0, 10 * MINUTE)


def forming(open_i: int, close: float, high: float, low: float) -> Candle:
    t = 10 * MINUTE + open_i * MINUTE
    return Candle(t, t + MINUTE - 1, 100.0, high, low, close, 1.0, 100.0, 0.0, 0.0, 1)


def poll_with(engine: AlertEngine, candles: list[Candle]) -> None:
    """One poll per candle, each a new update of the stream's forming candle."""
    from types import SimpleNamespace

    for n, c in enumerate(candles, start=1):
        state = SimpleNamespace(forming=c, event_time=c.open_time + n, updates=n, backfill=0)
        engine.poll({KEY: state}, lambda market: None)


def test_a_spike_past_the_level_and_back_between_two_polls_fires_once() -> None:
    """The forming candle's high rose past the level since the previous poll while the price
    came back under it: the stream traded past the level in between. It fires once, at that
    high, and is armed again (the price is back)."""
    engine, fired = engine_with(rule="price_above", value=105.0, cooldown_s=0)
    poll_with(
        engine,
        [
            forming(0, 100, 101, 99),  # first sight: arms only
            forming(0, 100, 106, 99),  # a wick to 106 and back to 100
            forming(0, 101, 106, 99),  # the same high: nothing new
            forming(1, 100, 107, 99),  # a new candle whose high passed the level
            forming(1, 104, 107, 99),
        ],
    )
    assert [(f.price, f.open_time) for f in fired] == [(106, 10 * MINUTE), (107, 11 * MINUTE)]
    assert engine.alerts[next(iter(engine.alerts))].armed is True


def test_a_dip_in_a_candles_last_moments_fires_when_it_closes() -> None:
    engine, fired = engine_with(rule="price_below", value=95.0, cooldown_s=0)
    poll_with(engine, [forming(0, 100, 101, 99), forming(0, 99, 101, 98)])
    assert fired == []
    engine.on_closed(KEY, forming(0, 99.5, 101, 94))  # closed: its low went under 95 after the poll
    assert [f.price for f in fired] == [94]
    engine.on_closed(KEY, forming(0, 99.5, 101, 94))  # the same close again: nothing
    assert len(fired) == 1


def test_a_level_the_first_sight_already_passed_does_not_fire_on_extremes() -> None:
    engine, fired = engine_with(rule="price_above", value=105.0, cooldown_s=0)
    poll_with(engine, [forming(0, 106, 107, 99), forming(0, 100, 108, 99)])
    assert fired == []  # never armed: the first price was past the level already
    poll_with(engine, [forming(0, 100, 109, 99)])  # armed by the 100, then a new high of 109
    assert [f.price for f in fired] == [109]


def test_price_already_past_the_level_is_not_a_crossing() -> None:
    engine, fired = engine_with(rule="price_below", value=100.0, cooldown_s=0)
    feed_prices(engine, [95, 94, 96])
    assert fired == []
    feed_prices(engine, [101, 99])
    assert [f.price for f in fired] == [99]


def test_cooldown_skips_crossings_in_exchange_time() -> None:
    engine, fired = engine_with(rule="price_above", value=100.0, cooldown_s=5)
    # Crossings at 1 s, 3 s (within 5 s: skipped), 7 s (fires again).
    feed_prices(engine, [99, 101, 99, 101, 99, 99, 99, 101])
    assert [f.fired_at - 10 * MINUTE for f in fired] == [1000, 7000]
    assert engine.alerts[next(iter(engine.alerts))].skipped == 1


def test_muted_alert_never_fires_and_unmutes() -> None:
    engine, fired = engine_with(rule="price_above", value=100.0, cooldown_s=0, muted=True)
    feed_prices(engine, [99, 101, 99, 101])
    assert fired == []
    alert_id = next(iter(engine.alerts))
    engine.mute(alert_id, False)
    feed_prices(engine, [99, 101])
    assert len(fired) == 1


def test_change_pct_over_a_window_of_closed_candles() -> None:
    engine, fired = engine_with(rule="change_pct", value=2.0, window=3, cooldown_s=0)
    engine.on_closed(KEY, candle(0, 100, 100.5))
    engine.on_closed(KEY, candle(1, 100.5, 101))
    assert fired == []  # fewer than 3 candles
    engine.on_closed(KEY, candle(2, 101, 102.5))  # 100 -> 102.5: +2.5 %
    assert len(fired) == 1 and fired[0].price == 102.5
    engine.on_closed(KEY, candle(3, 102.5, 103))  # 100.5 -> 103: still past: no new firing
    engine.on_closed(KEY, candle(3, 102.5, 103))  # a repeated close is ignored
    engine.on_closed(KEY, candle(4, 103, 101))  # 101 -> 101: cleared, armed again
    engine.on_closed(KEY, candle(5, 101, 104))  # 102.5 -> 104: +1.5 %: not enough
    engine.on_closed(KEY, candle(6, 104, 106))  # 103 -> 106: +2.9 %
    assert len(fired) == 2 and fired[1].open_time == candle(6, 0, 0).open_time


def test_negative_change_pct_is_a_fall() -> None:
    engine, fired = engine_with(rule="change_pct", value=-1.0, window=2, cooldown_s=0)
    engine.on_closed(KEY, candle(0, 100, 101))
    engine.on_closed(KEY, candle(1, 101, 99.5))  # +-0.5 %
    engine.on_closed(KEY, candle(2, 99.5, 98.8))  # 101 -> 98.8: -2.2 %
    assert [f.price for f in fired] == [98.8]


def test_volume_spike_against_the_mean_of_the_window_before() -> None:
    engine, fired = engine_with(rule="volume_spike", value=3.0, window=2, cooldown_s=0)
    for i, volume in enumerate([10, 20, 44, 46, 200]):
        engine.on_closed(KEY, candle(i, 100, 100, volume))
    # 44 < 3 x 15; 46 < 3 x 32; 200 >= 3 x 45
    assert [f.open_time for f in fired] == [candle(4, 0, 0).open_time]


def test_a_window_with_a_gap_is_judged_once_the_gap_is_filled() -> None:
    engine, fired = engine_with(rule="change_pct", value=2.0, window=3, cooldown_s=0)
    engine.on_closed(KEY, candle(0, 100, 100.5))
    engine.on_closed(KEY, candle(2, 101, 102.5))  # candle 1 lost: not judged across the gap
    assert fired == []
    # The backfiller fetches candle 1 while candle 2 is still the last closed (the exchange is
    # in candle 3): it completes 2's window, and the firing is 2's.
    server_now = candle(3, 0, 0).open_time + 5_000
    engine.on_fetched(KEY, candle(1, 100.5, 101), server_now)
    assert [(f.open_time, f.price) for f in fired] == [(candle(2, 0, 0).open_time, 102.5)]
    assert fired[0].fired_at == candle(2, 0, 0).close_time + 1
    engine.on_fetched(KEY, candle(1, 100.5, 101), server_now)  # fetched twice: judged once
    engine.on_closed(KEY, candle(2, 101, 102.5))
    assert len(fired) == 1


def test_a_filled_window_whose_newest_candle_is_not_the_last_closed_is_not_judged() -> None:
    """A gap filled while newer candles are missing too (a disconnection): the newest candle
    held is not the one that closed last, so it is not judged late; the last closed one is."""
    engine, fired = engine_with(rule="change_pct", value=1.0, window=3, cooldown_s=0)
    engine.on_closed(KEY, candle(0, 100, 101))
    engine.on_closed(KEY, candle(1, 101, 102))
    engine.on_closed(KEY, candle(3, 103, 103))  # 2 lost; then the connection drops
    server_now = candle(6, 0, 0).open_time + 1_000  # candle 5 closed last
    engine.on_fetched(KEY, candle(2, 102, 103), server_now)  # 3's window: 101 -> 103, +2 %
    assert fired == []  # 3 is old news by now
    engine.on_fetched(KEY, candle(4, 103, 103), server_now)
    engine.on_fetched(KEY, candle(5, 103, 104.5), server_now)  # 103 -> 104.5: +1.5 %
    assert [f.open_time for f in fired] == [candle(5, 0, 0).open_time]


def test_history_fills_a_window_and_is_never_judged_itself() -> None:
    engine, fired = engine_with(rule="volume_spike", value=3.0, window=4, cooldown_s=0)
    assert engine.history_needed() == {KEY: 5}
    # A restart: the dataset's newest candles, the last of them a spike (judged before the stop).
    engine.prime(KEY, [candle(i, 100, 100, v) for i, v in enumerate([10, 10, 10, 10, 90])])
    # The downtime's candles fetched later, none of them the last closed: history as well.
    server_now = candle(9, 0, 0).open_time + 1_000
    for i in (5, 6, 7):
        engine.on_fetched(KEY, candle(i, 100, 100, 10), server_now)
    assert fired == []
    # The first live close is judged at once against the four before it (90, 10, 10, 10).
    engine.on_closed(KEY, candle(8, 100, 100, 98))
    assert [f.open_time for f in fired] == [candle(8, 0, 0).open_time]
    engine.on_closed(KEY, candle(9, 100, 100, 10))  # cleared: armed again
    # The last closed candle fetched (a reconnection's gap) is judged as a live one would be,
    # and its live copy after it is not judged again.
    engine.on_fetched(KEY, candle(10, 100, 100, 1_000), candle(11, 0, 0).open_time + 1_000)
    engine.on_closed(KEY, candle(10, 100, 100, 1_000))
    assert [f.open_time for f in fired] == [candle(8, 0, 0).open_time, candle(10, 0, 0).open_time]


def test_stale_in_exchange_time_and_missing_from_the_ledger() -> None:
    engine = AlertEngine(
        [
            AlertConfig(stream=str(KEY), rule="stale", value=30, cooldown_s=0),
            AlertConfig(stream=str(KEY), rule="missing", value=2, cooldown_s=0),
        ]
    )
    fired: list[Firing] = []
    engine.listeners.append(fired.append)
    t0 = 50 * MINUTE
    engine.on_time(KEY, t0, 0, t0 + 29_000, 1.0)
    assert fired == []
    engine.on_time(KEY, t0, 1, t0 + 30_000, 1.0)
    engine.on_time(KEY, t0, 1, t0 + 40_000, 1.0)  # still stale: once
    assert [f.rule for f in fired] == ["stale"]
    engine.on_time(KEY, t0 + 41_000, 3, t0 + 41_000, 1.0)  # heard again; 3 missing
    assert [f.rule for f in fired] == ["stale", "missing"]
    engine.on_time(KEY, t0 + 41_000, 0, t0 + 80_000, 1.0)  # stale again, gap filled
    assert [f.rule for f in fired] == ["stale", "missing", "stale"]


@pytest.mark.parametrize(
    ("alert", "problem"),
    [
        ({"stream": "usdm:BTCUSDT:1m:mark", "rule": "volume_spike", "value": 3}, "no volume"),
        ({"stream": "usdm:BTCUSDT:7m", "rule": "stale", "value": 3}, "7m"),
        ({"stream": "usdm:BTCUSDT:1m", "rule": "price_above", "value": -1}, "above 0"),
        ({"stream": "usdm:BTCUSDT:1m", "rule": "eval", "value": 1}, "price_above"),
        (
            {"stream": "usdm:BTCUSDT:1m", "rule": "stale", "value": 1, "x": 1},
            "alerts[0].x: unknown key",
        ),
        ({"stream": "usdm:BTCUSDT:1m", "rule": "stale", "value": float("inf")}, "finite"),
    ],
)
def test_config_refuses_alerts_that_cannot_work(tmp_path: Path, alert, problem) -> None:
    import tomlkit

    doc = tomlkit.document()
    tables = tomlkit.aot()
    table = tomlkit.table()
    for name, value in alert.items():
        table[name] = value
    tables.append(table)
    doc["alerts"] = tables
    path = tmp_path / "config.toml"
    path.write_text(tomlkit.dumps(doc))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "alerts[0]" in str(caught.value) and problem in str(caught.value)


def test_alerts_saved_into_the_config_keep_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('# mine\nwatch = ["usdm:BTCUSDT:1m"]\n[notify]\nwebhook = "http://x/y"\n')
    alerts = [
        AlertConfig(stream="usdm:BTCUSDT:1m", rule="price_above", value=100_000.5),
        AlertConfig(
            stream="usdm:BTCUSDT:1m:mark", rule="change_pct", value=-2, window=9, muted=True
        ),
    ]
    save_alerts(path, alerts)
    text = path.read_text()
    assert text.startswith("# mine\n") and "[[alerts]]" in text
    settings = load_settings(path)
    assert settings.alerts == tuple(alerts)
    assert settings.notify.webhook == "http://x/y"
    save_alerts(path, [])
    assert load_settings(path).alerts == () and "[[alerts]]" not in path.read_text()


# -- the webhook ----------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on loopback: answers each POST with the next of `answers` (a status,
    or "slow": no answer within the sender's timeout), then 200; keeps every body."""

    def __init__(self, answers: list[int | str] | None = None) -> None:
        self.answers = list(answers or [])
        self.bodies: list[dict[str, object]] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "slow":
            await asyncio.sleep(5)
            answer = 200
        return web.Response(status=int(answer), text="")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def a_firing(open_time: int = 5 * MINUTE) -> Firing:
    stream, rule = str(KEY), "price_above"
    return Firing(
        id=firing_id(stream, rule, 100.0, open_time),
        alert="abc",
        stream=stream,
        rule=rule,
        value=100.0,
        price=100.5,
        open_time=open_time,
        fired_at=open_time + 1234,
        message="alert: x",
    )


async def test_webhook_retries_a_500_and_a_timeout_then_delivers_the_documented_body() -> None:
    warnings: list[str] = []
    async with Receiver([500, "slow"]) as receiver:
        sender = WebhookSender(
            receiver.url, warnings.append, timeout_s=0.5, retries=3, retry_first_s=0.05
        )
        task = asyncio.ensure_future(sender.run())
        try:
            sender.send(a_firing())
            await wait_until(lambda: sender.sent == 1, timeout=20, what="the webhook delivered")
        finally:
            task.cancel()
    assert len(receiver.bodies) == 3  # a 500, a timeout, then the delivery
    body = receiver.bodies[-1]
    assert body == {
        "id": "usdm:BTCUSDT:1m/price_above/100.0/300000",
        "alert": "abc",
        "stream": "usdm:BTCUSDT:1m",
        "rule": "price_above",
        "value": 100.0,
        "price": 100.5,
        "open_time": 300000,
        "fired_at": 301234,
        "message": "alert: x",
    }
    assert receiver.headers[-1]["Idempotency-Key"] == body["id"]
    assert warnings == []


async def test_webhook_gives_up_in_the_event_log_and_goes_on() -> None:
    warnings: list[str] = []
    async with Receiver([503, 503, 400]) as receiver:
        sender = WebhookSender(receiver.url, warnings.append, retries=1, retry_first_s=0.01)
        task = asyncio.ensure_future(sender.run())
        try:
            sender.send(a_firing(MINUTE))  # 503, 503: given up
            sender.send(a_firing(2 * MINUTE))  # 400: refused, not tried again
            sender.send(a_firing(3 * MINUTE))  # delivered
            await wait_until(lambda: sender.sent == 1, timeout=20, what="the third delivered")
        finally:
            task.cancel()
    assert [b["open_time"] for b in receiver.bodies] == [MINUTE, MINUTE, 2 * MINUTE, 3 * MINUTE]
    assert sender.failed == 2
    assert ["HTTP 503" in warnings[0], "HTTP 400" in warnings[1]] == [True, True]


# -- in a runtime, against the simulator ------------------------------------------------------


async def test_runtime_fires_on_the_simulators_prices_logs_it_and_posts_the_webhook(
    sim, tmp_path: Path
) -> None:
    async with Receiver() as receiver:
        settings = make_settings(sim, tmp_path, [str(KEY)], history=2)
        settings = dataclasses.replace(
            settings, notify=NotifyConfig(webhook=receiver.url, webhook_timeout_s=2.0)
        )
        runtime = Runtime(settings, keep_closed=0)
        fired: list[Firing] = []
        runtime.alerts.listeners.append(fired.append)
        messages: list[str] = []
        runtime.events.subscribe(lambda e: messages.append(e.message))
        await runtime.start()
        try:
            hub = runtime.pipeline.hub  # type: ignore[union-attr]
            await wait_until(lambda: hub.streams[KEY].forming is not None, what="a price")
            price = hub.streams[KEY].forming.close  # type: ignore[union-attr]
            # A narrow band around the price: the simulated market leaves it one way or the
            # other within seconds of its fast clock.
            for rule, level in (("price_above", price * 1.0002), ("price_below", price * 0.9998)):
                runtime.add_alert(AlertConfig(stream=str(KEY), rule=rule, value=level))
            await wait_until(lambda: fired, timeout=60, what="an alert firing")
            await wait_until(lambda: receiver.bodies, timeout=20, what="the webhook's POST")
        finally:
            await runtime.stop()
    firing = fired[0]
    assert firing.price is not None
    if firing.rule == "price_above":
        assert firing.price > firing.value
    else:
        assert firing.price < firing.value
    # Exchange time: the simulator runs an hour ahead of the local clock.
    assert abs(firing.fired_at - sim.clock.now_ms()) < 120_000
    assert firing.open_time == KEY.interval.open_time_at(firing.fired_at)
    assert firing.message in messages
    assert receiver.bodies[0]["id"] == firing.id
    assert receiver.bodies[0]["fired_at"] == firing.fired_at


# -- the service API ----------------------------------------------------------------------------


async def test_api_adds_lists_mutes_deletes_and_sends_firings_to_an_attached_client(
    sim, tmp_path: Path
) -> None:
    from kline_tui.service.client import RemoteError, RemoteRecorder

    from .service_support import TOKEN, call, live, serve

    async with serve(sim, tmp_path, [str(KEY)]) as served:
        await live(served, [KEY])
        base = served.url + "/api/v1/alerts"
        status, body, _ = await call("POST", base, json={"stream": str(KEY), "rule": "x"})
        assert status == 400 and "rule" in body["error"]
        status, body, _ = await call(
            "POST",
            base,
            json={"stream": "usdm:BTCUSDT:1m:mark", "rule": "volume_spike", "value": 2},
        )
        assert status == 400 and "no volume" in body["error"]
        status, body, _ = await call("POST", base, headers=None, json={})
        assert status == 401

        client = RemoteRecorder(served.url, TOKEN)
        fired: list[Firing] = []
        client.alert_listeners.append(fired.append)
        follow = asyncio.ensure_future(client.run())
        try:
            await client.wait_connected()
            price = served.hub.streams[KEY].forming.close
            ids = []
            for rule, level in (("price_above", price * 1.0002), ("price_below", price * 0.9998)):
                status, body, _ = await call(
                    "POST",
                    base,
                    json={"stream": str(KEY), "rule": rule, "value": level, "cooldown_s": 0},
                )
                assert status == 201, body
                ids.append(body["alert"]["id"])
            status, body, _ = await call("GET", base)
            assert [a["id"] for a in body["alerts"]] == ids
            assert body["alerts"][0]["description"].startswith("price above")
            await wait_until(lambda: len(client.alerts) == 2, what="the mirrored alerts")
            await wait_until(lambda: fired, timeout=60, what="a firing on the events socket")
            assert fired[0].alert in ids and fired[0].stream == str(KEY)
            assert fired[0].id == firing_id(
                str(KEY), fired[0].rule, fired[0].value, fired[0].open_time
            )

            muted = await client.mute_alert(ids[0], True)
            assert muted.muted and served.runtime.alerts.alerts[ids[0]].muted
            await wait_until(lambda: client.alerts[0].muted, what="the mute mirrored")
            status, body, _ = await call("POST", f"{base}/{ids[0]}/mute", data=b"")
            assert status == 200 and body["alert"]["muted"] is True
            status, body, _ = await call("POST", f"{base}/{ids[0]}/mute", json={"muted": False})
            assert body["alert"]["muted"] is False

            deleted = await client.delete_alert(ids[1])
            assert deleted.id == ids[1] and list(served.runtime.alerts.alerts) == [ids[0]]
            with pytest.raises(RemoteError) as missing:
                await client.delete_alert(ids[1])
            assert missing.value.status == 404
            await wait_until(lambda: len(client.alerts) == 1, what="the deletion mirrored")
        finally:
            await client.close()
            follow.cancel()


# -- the UI ---------------------------------------------------------------------------------------


def test_desktop_notifications_go_where_a_desktop_is_and_never_under_systemd() -> None:
    from kline_tui.ui.notify import desktop_channel, osc_notification

    found = {"notify-send": "/usr/bin/notify-send"}.get
    assert desktop_channel({"VTE_VERSION": "7600"}, is_terminal=True) == "osc777"
    assert desktop_channel({"TERM_PROGRAM": "iTerm.app"}, is_terminal=True) == "osc9"
    assert desktop_channel({"DISPLAY": ":0"}, is_terminal=True, which=found) == "notify-send"
    assert desktop_channel({"DISPLAY": ":0"}, is_terminal=True, which=lambda _: None) is None
    systemd = {"VTE_VERSION": "7600", "INVOCATION_ID": "abc", "DISPLAY": ":0"}
    assert desktop_channel(systemd, is_terminal=True, which=found) is None
    assert desktop_channel({"JOURNAL_STREAM": "8:1"}, is_terminal=True, which=found) is None
    assert desktop_channel({"VTE_VERSION": "7600"}, is_terminal=False) is None
    # Text from a server cannot end the sequence early nor smuggle another one.
    sequence = osc_notification("osc777", "t;x", "a\x1b]52;c;bad\x07b", tmux=False)
    assert sequence.startswith("\x1b]777;notify;t,x;") and sequence.count("\x1b") == 2
    assert "\x07" not in sequence
    wrapped = osc_notification("osc9", "t", "b", tmux=True)
    assert wrapped.startswith("\x1bPtmux;\x1b\x1b]9;") and wrapped.endswith("\x1b\\")


async def test_alert_made_in_the_ui_fires_marks_the_row_rings_and_survives_a_restart(
    sim, tmp_path: Path
) -> None:
    from textual.widgets import Input, Select

    from kline_tui.ui.app import KlineApp
    from kline_tui.ui.screens.alert_dialog import AlertDialog
    from kline_tui.ui.screens.alerts import AlertsScreen

    config = tmp_path / "config.toml"
    config.write_text(f'# mine\nwatch = ["{KEY}"]\n[recorder]\nflush_age_s = 1\n')

    def settings():
        return dataclasses.replace(
            load_settings(config), endpoints=dict(sim.endpoints), data_dir=tmp_path / "data"
        )

    app = KlineApp(settings())
    rings: list[int] = []
    app.bell = lambda: rings.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=(160, 45)) as pilot:
        await app.wait_started()
        streams = app.recorder.streams
        await wait_until(lambda: KEY in streams and streams[KEY].forming, what="a price")
        app.table.select(KEY)
        # A band of 0.1 %: narrower, a trending price can pass a level before the alert's
        # first look (not a crossing) and never come back within the wait.
        for rule, factor in (("price_above", 1.001), ("price_below", 0.999)):
            await pilot.press("exclamation_mark")
            assert isinstance(app.screen, AlertDialog)
            dialog = app.screen
            dialog.query_one("#alert-rule", Select).value = rule
            await pilot.pause()
            box = dialog.query_one("#alert-value", Input)
            assert float(box.value) > 0  # the price, to start from
            box.value = ""
            level = streams[KEY].forming.close * factor
            await pilot.press(*f"{level:.2f}", "enter")
            await wait_until(lambda: not isinstance(app.screen, AlertDialog), what="saved")
        assert [r.rule for r in app.recorder.alert_rows()] == ["price_above", "price_below"]

        fired = lambda: any(r.fired for r in app.recorder.alert_rows())  # noqa: E731
        await wait_until(fired, timeout=60, what="an alert firing")
        await wait_until(lambda: rings, what="the bell")
        app.repaint()
        assert app.table.row_cells(KEY)["symbol"] == f"!{KEY.symbol}"
        assert any(e.message.startswith(f"alert: {KEY}") for e in app.events.recent)
        assert any(n.title == "Alert" for n in app._notifications)

        # The list: mute the first, delete the second.
        await pilot.press("L")
        assert isinstance(app.screen, AlertsScreen)
        await pilot.press("m")
        await wait_until(lambda: app.recorder.alert_rows()[0].muted, what="muted")
        await pilot.press("down", "d")
        await wait_until(lambda: len(app.recorder.alert_rows()) == 1, what="deleted")
        await pilot.press("escape")
        await app.runtime.alerts_saved()
    text = config.read_text()
    assert text.startswith("# mine\n")
    saved = load_settings(config).alerts
    assert [(a.rule, a.muted) for a in saved] == [("price_above", True)]

    again = KlineApp(settings())
    async with again.run_test(size=(160, 45)):
        await again.wait_started()
        rows = again.recorder.alert_rows()
        assert [(r.stream, r.rule, r.muted) for r in rows] == [(str(KEY), "price_above", True)]
        assert rows[0].value == saved[0].value


# -- headless -------------------------------------------------------------------------------------


async def test_record_logs_firings_headless(sim, tmp_path: Path) -> None:
    import signal

    from .support import start_record, write_config

    config = write_config(
        tmp_path / "config.toml",
        sim.endpoints,
        data_dir=tmp_path / "data",
        watch=[str(KEY)],
        recorder={"history": 5},
    )
    # The 5 candles of history are missing until fetched: `missing` fires at once. A volume of
    # a thousandth of the previous candle's fires on the second candle that closes live.
    config.write_text(
        config.read_text()
        + f'[[alerts]]\nstream = "{KEY}"\nrule = "missing"\nvalue = 1\n'
        + f'[[alerts]]\nstream = "{KEY}"\nrule = "volume_spike"\nvalue = 0.001\nwindow = 1\n'
    )
    process = await start_record(config)
    assert process.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not (
                any("candles missing" in line for line in seen)
                and any("volume 0.001x" in line for line in seen)
            ):
                line = (await process.stderr.readline()).decode()
                assert line, "".join(seen)
                seen.append(line)
    finally:
        process.send_signal(signal.SIGINT)
        rest = await process.communicate()
    assert process.returncode == 0, "".join(seen) + rest[1].decode()
    assert any(f"alert: {KEY} 1+ candles missing" in line for line in seen)
    assert any(f"alert: {KEY} volume 0.001x the mean of 1 candles at " in line for line in seen)


def test_the_engine_holds_a_bounded_number_of_alerts() -> None:
    from kline_tui.config import MAX_ALERTS

    engine = AlertEngine()
    for i in range(MAX_ALERTS):
        engine.add(AlertConfig(stream=str(KEY), rule="price_above", value=1000.0 + i))
    engine.add(AlertConfig(stream=str(KEY), rule="price_above", value=1000.0, cooldown_s=1))
    assert engine.alerts[next(iter(engine.alerts))].config.cooldown_s == 1  # the same alert
    with pytest.raises(ValueError, match="delete some"):
        engine.add(AlertConfig(stream=str(KEY), rule="price_below", value=1.0))


async def test_an_attached_ui_shows_and_edits_the_recorders_alerts(sim, tmp_path: Path) -> None:
    from kline_tui.service.client import RemoteRecorder
    from kline_tui.ui.recorder import AttachedRecorder

    from .service_support import TOKEN, serve

    async with serve(sim, tmp_path, [str(KEY)]) as served:
        attached = AttachedRecorder(
            RemoteRecorder(served.url, TOKEN), served.url, served.runtime.settings
        )
        fired: list[Firing] = []
        attached.on_alert(fired.append)
        await attached.start([])
        try:
            with pytest.raises(ValueError, match="no volume"):
                await attached.add_alert(
                    AlertConfig(stream=f"{KEY}:mark", rule="volume_spike", value=2)
                )
            # A thousandth of the previous candle's volume: the second live close fires it.
            spike = AlertConfig(stream=str(KEY), rule="volume_spike", value=0.001, window=1)
            await attached.add_alert(spike)
            await attached.add_alert(AlertConfig(stream=str(KEY), rule="stale", value=3600))
            await wait_until(lambda: len(attached.alert_rows()) == 2, what="mirrored alerts")
            await wait_until(lambda: fired, timeout=30, what="a firing sent to the attached UI")
            assert fired[0].rule == "volume_spike" and fired[0].price is not None
            assert any(e.message == fired[0].message for e in attached.events.recent)
            await wait_until(lambda: attached.alert_rows()[0].fired >= 1, what="fired counted")
            first, second = attached.alert_rows()
            await attached.mute_alert(first.id, True)
            await attached.delete_alert(second.id)
            await wait_until(
                lambda: [(r.id, r.muted) for r in attached.alert_rows()] == [(first.id, True)],
                what="the edits mirrored",
            )
            assert [a.config for a in served.runtime.alerts.alerts.values()] == [
                msgspec.structs.replace(spike, muted=True)
            ]
        finally:
            await attached.stop()


# -- the review's fixes ---------------------------------------------------------------------------


def bare_settings(tmp_path: Path) -> Settings:
    """Settings of a runtime that is never started."""
    return Settings(
        config_path=tmp_path / "absent.toml",
        config_exists=False,
        data_dir=tmp_path / "data",
        watch=(KEY,),
    )


def test_ids_keep_the_exact_level_and_name_the_stream_canonically() -> None:
    from kline_tui.alerts.rules import alert_id

    # Levels 6 significant digits cannot tell apart are two alerts: two firing ids.
    assert firing_id(str(KEY), "price_above", 104250.0, MINUTE) != firing_id(
        str(KEY), "price_above", 104250.4, MINUTE
    )
    typed = AlertConfig(stream="usdm:btcusdt:1m", rule="price_above", value=104250.4)
    canonical = AlertConfig(stream="usdm:BTCUSDT:1m", rule="price_above", value=104250.4)
    assert alert_id(typed) == alert_id(canonical)


def test_change_pct_on_a_negative_series_is_of_the_opens_magnitude() -> None:
    premium = StreamKey.parse("usdm:BTCUSDT:1m:premium")
    engine = AlertEngine(
        [
            AlertConfig(stream=str(premium), rule="change_pct", value=40, window=2, cooldown_s=0),
            AlertConfig(stream=str(premium), rule="change_pct", value=-40, window=2, cooldown_s=0),
        ]
    )
    fired: list[Firing] = []
    engine.listeners.append(fired.append)
    engine.on_closed(premium, candle(0, -0.0010, -0.0008))
    engine.on_closed(premium, candle(1, -0.0008, -0.0005))  # -0.0010 -> -0.0005: +50 %
    assert [f.value for f in fired] == [40]
    engine.on_closed(premium, candle(2, -0.0005, -0.0011))  # -0.0008 -> -0.0011: -37.5 %
    engine.on_closed(premium, candle(3, -0.0011, -0.0009))  # -0.0005 -> -0.0009: -80 %
    assert [f.value for f in fired] == [40, -40]
    # A window opening at exactly 0 has no percent: not judged (the series stays armed).
    engine.on_closed(premium, candle(4, 0.0, -0.0011))  # -0.0011 -> -0.0011: 0 %, cleared
    engine.on_closed(premium, candle(5, 0.0004, 0.0009))  # 0 -> 0.0009: no percent of 0
    assert len(fired) == 2


def test_twins_polling_at_different_moments_give_stale_and_missing_the_same_ids() -> None:
    configs = [
        AlertConfig(stream=str(KEY), rule="stale", value=30, cooldown_s=0),
        AlertConfig(stream=str(KEY), rule="missing", value=2, cooldown_s=0),
    ]
    last_event = 50 * MINUTE + 45_000  # silent from 50:45; 30 s later is 51:15
    first_missing = 48 * MINUTE
    ids = []
    for polled_at in (51 * MINUTE + 15_000, 52 * MINUTE + 5_000):  # two minutes apart
        engine = AlertEngine(configs)
        fired: list[Firing] = []
        engine.listeners.append(fired.append)
        engine.on_time(KEY, last_event, 3, polled_at, 1.0, first_missing)
        assert [f.rule for f in fired] == ["stale", "missing"]
        assert [f.open_time for f in fired] == [51 * MINUTE, first_missing]
        ids.append([f.id for f in fired])
    assert ids[0] == ids[1]


def test_an_attached_client_drops_alert_rows_that_cannot_be_real() -> None:
    from kline_tui.service.client import RemoteRecorder
    from kline_tui.service.protocol import AlertRow, Alerts

    def row(id_: str, stream: str = str(KEY), **changes: object) -> AlertRow:
        fields: dict[str, object] = {
            "id": id_,
            "stream": stream,
            "rule": "price_above",
            "value": 1.0,
            "window": 5,
            "cooldown_s": 0.0,
            "muted": False,
            "description": "price above 1",
            "fired": 0,
            "last_fired_at": None,
        }
        fields.update(changes)
        return AlertRow(**fields)  # type: ignore[arg-type]

    client = RemoteRecorder("http://127.0.0.1:9", "token")
    client._apply(
        Alerts(
            [
                row("a", "usdm:btcusdt:1m", last_fired_at=10**20, description="x\x1b[2J[/]y"),
                row("b", "not a stream\x1b]0;t\x07"),
                row("a"),  # the same id twice: the table keys rows by it
                row("c", rule="price_above\x1b[31m", last_fired_at=-5),
            ]
        )
    )
    assert [r.id for r in client.alerts] == ["a", "c"]
    assert client.alerts_dropped == 2
    first, second = client.alerts
    assert first.stream == str(KEY) and first.last_fired_at is None
    assert first.description == "x[/]y" and second.rule == "price_above"
    assert second.last_fired_at is None


async def test_server_text_is_never_read_as_markup_by_the_alert_screens() -> None:
    from textual.app import App
    from textual.widgets import DataTable, Static

    from kline_tui.service.client import RemoteError
    from kline_tui.service.protocol import AlertRow
    from kline_tui.ui.notify import Notifier
    from kline_tui.ui.screens.alert_dialog import AlertDialog
    from kline_tui.ui.screens.alerts import AlertsScreen

    hostile = "[/] [link=x]y[/link] [bold"
    rows = [
        AlertRow(
            id="a",
            stream=str(KEY),
            rule="price_above",
            value=1.0,
            window=5,
            cooldown_s=0.0,
            muted=False,
            description=hostile,
            fired=1,
            last_fired_at=MINUTE,
        )
    ]

    async def refuse(config: AlertConfig) -> None:
        raise RemoteError(hostile, 502)

    app: App[None] = App()
    async with app.run_test() as pilot:
        notifier = Notifier(app, environ={}, is_terminal=False)
        notifier.alert(dataclasses.replace(a_firing(), message=hostile))
        await pilot.pause()
        assert [n.message for n in app._notifications] == [hostile]

        screen = AlertsScreen(lambda: rows, mute=print, edit=print, delete=print)
        await app.push_screen(screen)
        await pilot.pause()
        cells = screen.query_one("#alerts-table", DataTable).get_row_at(0)
        assert [str(c) for c in cells[:2]] == [str(KEY), hostile]
        screen.dismiss(None)
        await pilot.pause()

        dialog = AlertDialog(KEY, refuse, price=100.0)
        await app.push_screen(dialog)
        await pilot.pause()
        await pilot.click("#alert-ok")
        error = dialog.query_one("#alert-error", Static)
        await wait_until(lambda: "-visible" in error.classes, what="the error shown")
        await pilot.pause()
        assert hostile in str(error.render())


async def test_a_burst_of_firings_is_told_once_and_notify_send_is_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from textual.app import App

    from kline_tui.ui.notify import MAX_NOTIFY_SEND, Notifier

    go, shown = tmp_path / "go", tmp_path / "shown"
    script = tmp_path / "notify-send"
    script.write_text(
        f'#!/bin/sh\nwhile [ ! -e "{go}" ]; do sleep 0.02; done\necho "$2" >> "{shown}"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    app: App[None] = App()
    async with app.run_test() as pilot:
        notifier = Notifier(
            app, environ={"DISPLAY": ":0"}, is_terminal=True, which=lambda _: str(script)
        )
        assert notifier.channel == "notify-send"
        for i in range(5):  # one poll's firings: one toast, one notification
            notifier.alert(a_firing(i * MINUTE))
        await pilot.pause()
        assert [n.title for n in app._notifications] == ["5 alerts fired"]
        for i in range(MAX_NOTIFY_SEND + 1):  # one each; beyond the cap, toasts only
            notifier.alert(a_firing(i * MINUTE))
            await pilot.pause()
        assert len(app._notifications) == MAX_NOTIFY_SEND + 2
        assert notifier.skipped == 2
        go.touch()
        await wait_until(lambda: notifier.sent == MAX_NOTIFY_SEND, what="the notifications")
    titles = shown.read_text().splitlines()  # in the order the processes ended
    assert sorted(titles) == ["kline-tui: 5 alerts fired", "kline-tui: alert", "kline-tui: alert"]


async def test_editing_an_alert_adds_before_deleting_and_keeps_an_unchanged_ones_state(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from kline_tui.ui.app import KlineApp

    runtime = Runtime(bare_settings(tmp_path), save_alerts=False)

    async def add(config: AlertConfig) -> None:
        runtime.add_alert(config)

    async def delete(alert_id: str) -> None:
        runtime.remove_alert(alert_id)

    app = SimpleNamespace(
        recorder=SimpleNamespace(add_alert=add, delete_alert=delete),
        notify=lambda *args, **kwargs: None,
    )
    old = runtime.add_alert(AlertConfig(stream=str(KEY), rule="price_above", value=100.0))
    old.last_fired_at, old.armed = 5 * MINUTE, False
    # The same alert with another cooldown: updated in place, its state kept.
    same = AlertConfig(stream=str(KEY), rule="price_above", value=100.0, cooldown_s=5)
    await KlineApp._save_alert(app, same, replacing=old.id)  # type: ignore[arg-type]
    assert list(runtime.alerts.alerts.values()) == [old]
    assert old.config.cooldown_s == 5 and old.last_fired_at == 5 * MINUTE and old.armed is False
    # An edit that cannot work leaves the old alert there.
    with pytest.raises(ValueError):
        bad = AlertConfig(stream=f"{KEY}:mark", rule="volume_spike", value=2.0)
        await KlineApp._save_alert(app, bad, replacing=old.id)  # type: ignore[arg-type]
    assert list(runtime.alerts.alerts) == [old.id]
    # Another level: the new one added, the old one gone.
    other = AlertConfig(stream=str(KEY), rule="price_above", value=101.0)
    await KlineApp._save_alert(app, other, replacing=old.id)  # type: ignore[arg-type]
    assert [a.config for a in runtime.alerts.alerts.values()] == [other]


def test_watch_list_and_alerts_saved_at_once_both_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import kline_tui.config as config_module
    from kline_tui.config import save_watch

    path = tmp_path / "config.toml"
    path.write_text("# mine\n")
    first_writing, second_started = threading.Event(), threading.Event()
    replace_file = config_module._replace_file

    def slow_replace(target: Path, text: str) -> None:
        if not second_started.is_set():
            # The first writer holds on while the second begins; without one lock for both,
            # the second reads the file before this write lands and then writes over it.
            first_writing.set()
            second_started.wait(5)
            time.sleep(0.3)
        replace_file(target, text)

    monkeypatch.setattr(config_module, "_replace_file", slow_replace)
    alert = AlertConfig(stream=str(KEY), rule="stale", value=60.0)

    def alerts_later() -> None:
        second_started.set()
        save_alerts(path, [alert])

    first = threading.Thread(target=save_watch, args=(path, [KEY]))
    first.start()
    assert first_writing.wait(10)
    second = threading.Thread(target=alerts_later)
    second.start()
    first.join(10)
    second.join(10)
    settings = load_settings(path)
    assert settings.alerts == (alert,)
    assert [str(k) for k in settings.watch] == [str(KEY)]


async def test_a_burst_of_alert_changes_is_one_pending_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kline_tui.runtime as runtime_module

    path = tmp_path / "config.toml"
    path.write_text("# mine\n")
    settings = dataclasses.replace(bare_settings(tmp_path), config_path=path)
    writes: list[int] = []

    def counting(target: Path, alerts: list[AlertConfig]) -> None:
        writes.append(len(alerts))
        save_alerts(target, alerts)

    monkeypatch.setattr(runtime_module, "save_alerts", counting)
    runtime = Runtime(settings, save_alerts=True)
    for i in range(50):
        runtime.add_alert(AlertConfig(stream=str(KEY), rule="price_above", value=100.0 + i))
    await runtime.alerts_saved()
    assert len(writes) <= 2 and writes[-1] == 50
    assert len(load_settings(path).alerts) == 50


async def test_the_webhook_drain_sends_what_is_queued_after_its_task_stopped() -> None:
    warnings: list[str] = []
    async with Receiver() as receiver:
        sender = WebhookSender(receiver.url, warnings.append, timeout_s=5.0)
        task = asyncio.ensure_future(sender.run())
        await asyncio.sleep(0)
        task.cancel()  # as the stop's pipeline.stop cancels every supervised task
        await asyncio.gather(task, return_exceptions=True)
        sender.send(a_firing())  # fired while the pipeline stopped
        await sender.drain(10.0)
    assert [b["id"] for b in receiver.bodies] == [a_firing().id] and sender.sent == 1
    assert warnings == []


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ({"window": 12731}, "window: expected a whole number of closed candles from 1 to 1000"),
        ({"cooldown_s": -1.0}, "cooldown: expected a number of seconds of exchange time from 0"),
        ({"value": float("nan")}, "value: expected a finite number"),
    ],
)
def test_a_form_value_out_of_range_is_told_in_the_configs_words(typed, said):
    from kline_tui.config import explain_alert_error

    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(
            {"stream": "usdm:BTCUSDT:1m", "rule": "price_above", "value": 1.0, **typed},
            AlertConfig,
        )
    assert explain_alert_error(caught.value).startswith(said)


# -- the firing state kept across restarts --------------------------------------------------------


def test_a_restored_engine_goes_on_as_if_it_had_kept_running() -> None:
    engine, fired = engine_with(rule="stale", value=30.0, cooldown_s=0)
    engine.on_time(KEY, 0, 0, 40_000, None)
    assert len(fired) == 1  # silent for 40 s, and still silent below
    saved = {i: s for i, s in engine.states().items()}
    again, fired_again = engine_with(rule="stale", value=30.0, cooldown_s=0)
    again.restore(saved)
    again.on_time(KEY, 0, 0, 50_000, None)
    assert fired_again == []  # the silence that fired has not ended: no second firing
    fresh, fired_fresh = engine_with(rule="stale", value=30.0, cooldown_s=0)
    fresh.on_time(KEY, 0, 0, 50_000, None)
    assert len(fired_fresh) == 1  # what the lost state would have done


def test_a_saved_last_firing_far_in_the_future_does_not_silence_the_alert() -> None:
    engine, fired = engine_with(rule="price_above", value=100.0, cooldown_s=60)
    alert_id = next(iter(engine.alerts))
    last = 10 * MINUTE + 30_000  # within a cooldown ahead of the prices below: still in it
    engine.restore({alert_id: AlertState(last, 1, True)})
    feed_prices(engine, [101])
    assert fired == []
    engine.restore({alert_id: AlertState(10 * MINUTE + 3_600_000, 1, True)})
    feed_prices(engine, [99, 101])
    assert len(fired) == 1


async def test_a_restart_keeps_the_cooldown_and_fires_after_it(sim, tmp_path: Path) -> None:
    cooldown_s = 86_400  # a day of exchange time: the simulator's fast clock cannot pass it
    settings = make_settings(sim, tmp_path, [str(KEY)], history=2)
    first = Runtime(settings, keep_closed=0)
    fired: list[Firing] = []
    first.alerts.listeners.append(fired.append)
    await first.start()
    try:
        hub = first.pipeline.hub  # type: ignore[union-attr]
        await wait_until(lambda: hub.streams[KEY].forming is not None, what="a price")
        price = hub.streams[KEY].forming.close  # type: ignore[union-attr]
        for rule, level in (("price_above", price * 1.0002), ("price_below", price * 0.9998)):
            first.add_alert(
                AlertConfig(stream=str(KEY), rule=rule, value=level, cooldown_s=cooldown_s)
            )
        await wait_until(lambda: fired, timeout=60, what="an alert firing")
    finally:
        await first.stop()
    firing = fired[0]
    saved, warning = read_states(state_path(tmp_path), [firing.alert])
    assert warning is None
    assert saved[firing.alert].last_fired_at == firing.fired_at
    assert saved[firing.alert].fired >= 1

    configs = first.alerts.configs()
    second = Runtime(dataclasses.replace(settings, alerts=tuple(configs)), keep_closed=0)
    fired_again: list[Firing] = []  # of the alert that fired (the other may fire meanwhile)

    def same_alert(f: Firing) -> None:
        if f.alert == firing.alert:
            fired_again.append(f)

    second.alerts.listeners.append(same_alert)
    await second.start()
    try:
        alert = second.alerts.alerts[firing.alert]
        assert alert.last_fired_at == firing.fired_at
        assert alert.fired == saved[firing.alert].fired
        assert fired_again == []
        # The condition met again inside the cooldown (a clean crossing: out, then past the
        # level), in exchange time after the first firing: skipped, not fired.
        level, above = alert.value, alert.rule.value == "price_above"
        out, past = (level * 0.99, level * 1.01) if above else (level * 1.01, level * 0.99)
        at = firing.fired_at + 60_000
        for i, p in enumerate((out, past)):
            second.alerts.on_price(KEY, p, KEY.interval.open_time_at(at), at + i)
        assert fired_again == []
        assert alert.skipped >= 1
        at = firing.fired_at + cooldown_s * 1000 + 60_000
        for i, p in enumerate((out, past)):
            second.alerts.on_price(KEY, p, KEY.interval.open_time_at(at), at + i)
        assert [f.fired_at for f in fired_again] == [at + 1]
    finally:
        await second.stop()
    saved, _ = read_states(state_path(tmp_path), [firing.alert])
    assert saved[firing.alert].last_fired_at == at + 1


async def test_a_restart_judges_the_first_close_over_a_window_read_from_the_dataset(
    sim, tmp_path: Path
) -> None:
    """A change_pct over 20 candles judges the first live close after a restart, its window's
    past read from the dataset; before, it waited for 20 live closes."""
    settings = make_settings(sim, tmp_path, [str(KEY)], history=30)
    first = Runtime(settings, keep_closed=0)
    await first.start()
    try:
        ledger = first.pipeline.ledger.streams  # type: ignore[union-attr]
        await wait_until(lambda: ledger[KEY].accepted_rest >= 30, what="the history")
    finally:
        await first.stop()
    config = AlertConfig(stream=str(KEY), rule="change_pct", value=50.0, window=20)
    second = Runtime(dataclasses.replace(settings, alerts=(config,)), keep_closed=0)
    await second.start()
    try:
        alert = next(iter(second.alerts.alerts.values()))
        await wait_until(lambda: len(alert.closes) == 20, timeout=10, what="the window's past")
        live: list[int] = []
        hub = second.pipeline.hub  # type: ignore[union-attr]
        hub.closed_listeners.append(lambda key, c: live.append(c.open_time))
        await wait_until(lambda: live, timeout=30, what="a live close")
        first_live = live[0]
        await wait_until(lambda: alert.judged >= first_live, timeout=5, what="the judgement")
        closes = [c.open_time for c in alert.closes]
        assert closes == [KEY.interval.open_time_at(closes[0]) + i * MINUTE for i in range(20)]
    finally:
        await second.stop()


async def test_a_new_alerts_window_includes_candles_not_written_yet(sim, tmp_path: Path) -> None:
    """The candles of the last minutes wait in the sink's buffer before a flush: a new alert's
    window takes them too, or the first close after it would see a gap and wait `window` more.
    History fills the window but is never judged: the first firing is on a close after it."""
    settings = make_settings(sim, tmp_path, [str(KEY)], history=30, flush_age_s=3600.0)
    runtime = Runtime(settings, keep_closed=0)
    fired: list[Firing] = []
    runtime.alerts.listeners.append(fired.append)
    await runtime.start()
    try:
        pipeline = runtime.pipeline
        assert pipeline is not None
        await wait_until(lambda: pipeline.ledger.streams[KEY].accepted_rest >= 30, what="history")
        assert pipeline.sink.stats.rows_written == 0  # all of it is still in the buffer
        held = {c.open_time for c in pipeline.sink.held(KEY)}
        assert len(held) >= 30
        # volume >= 0.01 x the mean: true of every candle, so only "never on history" holds it.
        alert = runtime.add_alert(
            AlertConfig(stream=str(KEY), rule="volume_spike", value=0.01, window=20, cooldown_s=0)
        )
        await wait_until(lambda: len(alert.closes) == 21, timeout=10, what="the window's past")
        primed = [c.open_time for c in alert.closes]
        assert primed == [primed[0] + i * MINUTE for i in range(21)]
        await wait_until(lambda: fired, timeout=30, what="a firing on a live close")
        # Never on what was history when the alert was made (a close during the read may be
        # judged: it is the last closed).
        assert not {f.open_time for f in fired} & held
        assert pipeline.sink.stats.rows_written == 0
    finally:
        await runtime.stop()


@pytest.mark.parametrize("body", [b"{not json", b'{"alerts": ' + b" " * (1024 * 1024) + b"{}}"])
async def test_a_corrupt_or_huge_state_file_is_one_warning(
    sim, tmp_path: Path, body: bytes
) -> None:
    path = state_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(body)
    alert = AlertConfig(stream=str(KEY), rule="price_above", value=1e12)
    settings = make_settings(sim, tmp_path, [str(KEY)], history=2, alerts=(alert,))
    runtime = Runtime(settings, keep_closed=0)
    messages: list[str] = []
    runtime.events.subscribe(
        lambda e: messages.append(e.message) if e.level == logging.WARNING else None
    )
    await runtime.start()
    await runtime.stop()
    warnings = [m for m in messages if "alerts' state" in m]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert runtime.alerts.alerts[next(iter(runtime.alerts.alerts))].fired == 0


def test_bad_entries_of_the_state_file_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    good = {"last_fired_at": 1_764_547_200_000, "fired": 2, "armed": False}
    path.write_text(
        json.dumps(
            {
                "alerts": {
                    "a": good,
                    "b": {**good, "last_fired_at": 10**30},
                    "c": {**good, "fired": -1},
                    "d": {**good, "armed": "yes"},
                    "gone": good,
                }
            }
        )
    )
    states, warning = read_states(path, ["a", "b", "c", "d"])
    assert list(states) == ["a"] and states["a"].fired == 2 and states["a"].armed is False
    assert warning is not None and "3 bad entries" in warning
