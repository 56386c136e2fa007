"""The alert engine: every alert of a runtime, fed by its hub, firing to listeners.

    engine = AlertEngine(settings.alerts)
    engine.listeners.append(on_firing)          # the event log, the webhook, the faces
    hub.closed_listeners.append(engine.on_closed)
    ledger.fetched_listeners.append(engine.on_fetched)  # a gap's candles complete windows
    engine.prime(key, candles)                  # the windows' past, read from the dataset
    engine.poll(hub.streams, exchange_now)      # a few times a second: prices, stale, missing

Crossings are judged on the live price each poll (the latest forming update of the stream; the
updates between two polls are coalesced, as the UI's are), and on the forming candle's high and
low: a high (low) the candle reached since the previous poll is a price the stream traded at in
between, so a spike past the level and back within one poll still fires, once. change_pct and
volume_spike judge the candle that closed last over a window with no gap, whether its candles
came live, fetched or from the dataset (`rules`); stale and missing on each poll
against the exchange's clock and the ledger's count. A listener is called on the event loop and
must not block (the webhook queues its request).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import msgspec

from kline_tui.alerts.rules import Alert, Firing, Rule, firing_id
from kline_tui.alerts.state import AlertState
from kline_tui.config import MAX_ALERTS, AlertConfig
from kline_tui.model import CandleLike, Market, StreamKey

__all__ = ["AlertEngine", "LiveStream"]

log = logging.getLogger(__name__)

MAX_FIRINGS = 200  # the recent firings kept for the faces


class LiveStream(Protocol):
    """What the engine reads of a stream's live state (the hub's `StreamState`)."""

    @property
    def forming(self) -> CandleLike | None: ...

    @property
    def event_time(self) -> int | None: ...

    @property
    def updates(self) -> int: ...

    @property
    def backfill(self) -> int: ...


class AlertEngine:
    """Every alert of one runtime, keyed by id, and what they fired."""

    def __init__(self, configs: Iterable[AlertConfig] = ()) -> None:
        self.alerts: dict[str, Alert] = {}
        self._by_key: dict[StreamKey, list[Alert]] = collections.defaultdict(list)
        self.listeners: list[Callable[[Firing], None]] = []
        # Called after any add, mute or delete (the runtime saves the config; the feed re-sends).
        self.change_listeners: list[Callable[[], None]] = []
        self.recent: collections.deque[Firing] = collections.deque(maxlen=MAX_FIRINGS)
        self.version = 0  # bumped by every change and firing: the faces redraw on it
        # Bumped whenever an alert's firing state (armed, last firing, count) changes: the
        # runtime keeps that state across restarts (alerts.state).
        self.state_version = 0
        self._seen_updates: dict[StreamKey, int] = {}
        # The forming candle of each stream at the previous poll: (open time, high, low).
        self._extremes: dict[StreamKey, tuple[int, float, float]] = {}
        self._silent_since: dict[StreamKey, int] = {}  # exchange time a never-heard stream began
        for config in configs:
            self.add(config, announce=False)

    # -- the set of alerts --------------------------------------------------------------------

    def add(self, config: AlertConfig, *, announce: bool = True) -> Alert:
        """Add an alert (or return the one with the same id: same stream, rule, value, window,
        whose cooldown and mute are then updated). Raises ValueError when it cannot work."""
        alert = Alert.of(config)
        known = self.alerts.get(alert.id)
        if known is None and len(self.alerts) >= MAX_ALERTS:
            raise ValueError(f"there are {MAX_ALERTS} alerts already: delete some first")
        if known is not None:
            known.config = config
        else:
            self.alerts[alert.id] = alert
            self._by_key[alert.key].append(alert)
        self._changed(announce)
        return known or alert

    def remove(self, alert_id: str) -> Alert | None:
        """Delete an alert; returns it, or None when there is no such alert."""
        alert = self.alerts.pop(alert_id, None)
        if alert is not None:
            siblings = self._by_key[alert.key]
            siblings.remove(alert)
            if not siblings:
                del self._by_key[alert.key]
            self._changed(True)
        return alert

    def mute(self, alert_id: str, muted: bool) -> Alert | None:
        """Mute or unmute an alert; returns it, or None when there is no such alert."""
        alert = self.alerts.get(alert_id)
        if alert is not None and alert.muted != muted:
            alert.config = _with(alert.config, muted=muted)
            self._changed(True)
        return alert

    def configs(self) -> list[AlertConfig]:
        """The alerts as the config file holds them, in the order they were made."""
        return [alert.config for alert in self.alerts.values()]

    def _changed(self, announce: bool) -> None:
        self.version += 1
        if announce:
            for listener in self.change_listeners:
                listener()

    @property
    def keys(self) -> set[StreamKey]:
        """The streams some alert watches."""
        return set(self._by_key)

    # -- what the pipeline feeds in -----------------------------------------------------------

    def on_price(
        self,
        key: StreamKey,
        price: float,
        open_time: int,
        at_ms: int,
        *,
        high: float | None = None,
        low: float | None = None,
    ) -> None:
        """A live price of `key` (the forming candle's close) at exchange time `at_ms`; `high`
        and `low`: the highest and lowest prices traded since the previous one, where known
        beyond it. A level the price went past and came back from in between fires (at that
        extreme) and re-arms, as if both moments had been seen."""
        for alert in self._by_key.get(key, ()):
            if not alert.rule.is_crossing:
                continue
            extreme = high if alert.rule is Rule.PRICE_ABOVE else low
            if (
                extreme is not None
                and alert.armed
                and alert.crossed(extreme)
                and not alert.crossed(price)
                and self._check(alert, True, at_ms)
            ):
                self._fire(alert, extreme, open_time, at_ms)
            if self._check(alert, alert.crossed(price), at_ms):
                self._fire(alert, price, open_time, at_ms)

    def _since_last_poll(
        self, key: StreamKey, candle: CandleLike
    ) -> tuple[float | None, float | None]:
        """The high and low `candle` reached after the previous poll saw it (None where they
        are not new), remembering it as seen. A candle opening after the one seen happened
        wholly since; the first sight of a stream tells nothing."""
        seen = self._extremes.get(key)
        self._extremes[key] = (candle.open_time, candle.high, candle.low)
        if seen is None or candle.open_time < seen[0]:
            return None, None
        if candle.open_time > seen[0]:
            return candle.high, candle.low
        return (
            candle.high if candle.high > seen[1] else None,
            candle.low if candle.low < seen[2] else None,
        )

    def on_closed(self, key: StreamKey, candle: CandleLike) -> None:
        """A closed candle of `key` as the hub took it live (never one twice; a late close may
        be older than the newest)."""
        seen = self._extremes.get(key)
        if seen is not None and seen[0] == candle.open_time:
            # The candle's last moments, after the previous poll saw it forming.
            high, low = self._since_last_poll(key, candle)
            if high is not None or low is not None:
                self.on_price(
                    key, candle.close, candle.open_time, candle.close_time, high=high, low=low
                )
        self._take_closed(key, candle, True)

    def on_fetched(self, key: StreamKey, candle: CandleLike, server_now: int) -> None:
        """A closed candle of `key` fetched over REST at exchange time `server_now` (a gap being
        filled, a new stream's history), as the ledger took it: it may complete the window of
        a candle that came live; it is judged itself only when it is the last closed one."""
        if key in self._by_key:  # a new stream's 1,000 candles of history, most often: none
            iv = key.interval
            last_closed = iv.prev_open(iv.open_time_at(server_now))
            self._take_closed(key, candle, candle.open_time >= last_closed, last_closed)

    def prime(self, key: StreamKey, candles: Iterable[CandleLike]) -> None:
        """Candles of `key` read from the dataset (at a start, or for a new alert): the windows'
        past, so change_pct and volume_spike judge the next close without waiting for `window`
        live ones. Never judged themselves."""
        for candle in candles:
            self._take_closed(key, candle, False)

    def history_needed(self) -> dict[StreamKey, int]:
        """The closed candles each stream's alerts read (the most any of them needs)."""
        needed: dict[StreamKey, int] = {}
        for key, alerts in self._by_key.items():
            most = max((alert.needs for alert in alerts), default=0)
            if most:
                needed[key] = most
        return needed

    def _take_closed(
        self, key: StreamKey, candle: CandleLike, judge: bool, last_closed: int | None = None
    ) -> None:
        for alert in self._by_key.get(key, ()):
            if not alert.rule.on_closed:
                continue
            condition = alert.closed(candle, judge, last_closed)
            if condition is None:
                continue
            judged = alert.closes[-1]  # a candle filling a gap completes a later one's window
            at_ms = judged.close_time + 1
            if self._check(alert, condition, at_ms):
                self._fire(alert, judged.close, judged.open_time, at_ms)

    def on_time(
        self,
        key: StreamKey,
        last_event: int | None,
        missing: int,
        now_ms: int,
        price: float | None,
        first_missing: int | None = None,
    ) -> None:
        """The exchange's time now, the stream's last event time (None: never heard) and the
        candles the ledger knows missing (`first_missing`: the open time of the oldest, when
        known): for stale and missing.

        A firing's candle comes from the data, never from the moment of the poll, so twin
        recorders polling at different moments give it the same id: for stale, the candle in
        which the silence reached its length; for missing, the first missing candle (else the
        candle of the last event)."""
        alerts = self._by_key.get(key, ())
        if not alerts:
            return
        if last_event is None:
            last_event = self._silent_since.setdefault(key, now_ms)
        interval = key.interval
        for alert in alerts:
            if alert.rule is Rule.STALE:
                silent_until = last_event + int(alert.value * 1000)
                condition = now_ms >= silent_until
                open_time = interval.open_time_at(silent_until)
            elif alert.rule is Rule.MISSING:
                condition = missing >= alert.value
                open_time = interval.open_time_at(
                    last_event if first_missing is None else first_missing
                )
            else:
                continue
            if self._check(alert, condition, now_ms):
                self._fire(alert, price, open_time, now_ms)

    def poll(
        self,
        streams: Mapping[StreamKey, LiveStream],
        exchange_now: Callable[[Market], int | None],
        first_missing: Callable[[StreamKey], int | None] = lambda key: None,
    ) -> None:
        """One round over the watched streams that have alerts: live prices (only of streams
        that updated since the last round), then stale and missing (`first_missing`: the open
        time of a stream's oldest missing candle, as the ledger knows it)."""
        for key in list(self._by_key):
            state = streams.get(key)
            if state is None:
                continue  # not watched (now): nothing to judge
            forming = state.forming
            price = forming.close if forming is not None else None
            if forming is not None and self._seen_updates.get(key) != state.updates:
                self._seen_updates[key] = state.updates
                at_ms = state.event_time if state.event_time is not None else forming.close_time
                high, low = self._since_last_poll(key, forming)
                self.on_price(key, forming.close, forming.open_time, at_ms, high=high, low=low)
            now_ms = exchange_now(key.market)
            if now_ms is not None:
                missing = state.backfill
                first = first_missing(key) if missing else None
                self.on_time(key, state.event_time, missing, now_ms, price, first)

    def _check(self, alert: Alert, condition: bool, at_ms: int) -> bool:
        armed, fired = alert.armed, alert.fired
        firing = alert.check(condition, at_ms)
        if alert.armed is not armed or alert.fired != fired:
            self.state_version += 1
        return firing

    # -- the state kept across restarts -------------------------------------------------------

    def states(self) -> dict[str, AlertState]:
        """Each alert's firing state, by id."""
        return {
            alert_id: AlertState(alert.last_fired_at, alert.fired, alert.armed)
            for alert_id, alert in self.alerts.items()
        }

    def restore(self, states: Mapping[str, AlertState]) -> None:
        """Give the alerts their saved state (ids with no alert are ignored), so the engine goes
        on as if it had kept running: no firing inside a cooldown that began before, no new
        firing for a condition that has not cleared since it fired."""
        for alert_id, state in states.items():
            alert = self.alerts.get(alert_id)
            if alert is not None:
                alert.last_fired_at, alert.fired, alert.armed = (
                    state.last_fired_at,
                    state.fired,
                    state.armed,
                )
        self.version += 1

    def _fire(self, alert: Alert, price: float | None, open_time: int, at_ms: int) -> None:
        stream, rule = str(alert.key), alert.rule.value
        shown = "" if price is None else f" at {price:g}"
        firing = Firing(
            id=firing_id(stream, rule, alert.value, open_time),
            alert=alert.id,
            stream=stream,
            rule=rule,
            value=alert.value,
            price=price,
            open_time=open_time,
            fired_at=at_ms,
            message=f"alert: {stream} {alert.describe()}{shown}",
        )
        self.recent.append(firing)
        self.version += 1
        for listener in self.listeners:
            try:
                listener(firing)
            except Exception:  # one face's bug must not silence the others
                log.exception("alert listener failed")


def _with(config: AlertConfig, **changes: object) -> AlertConfig:
    return msgspec.structs.replace(config, **changes)
