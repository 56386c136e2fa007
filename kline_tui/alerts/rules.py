"""One alert: its rule (a fixed kind, never an expression), its state, and when it fires.

Every rule is edge-triggered: it fires when its condition becomes true, and is armed again only
once the condition has been false. A firing inside the alert's cooldown (measured in exchange
time, from the previous firing) is skipped, and the alert waits for the condition to clear again.

- `price_above` / `price_below`: the live (forming) price crosses the level, or the forming
  candle's new high (low) does: a spike past the level and back between two looks fires too. The
  first price seen only arms the alert (a level already passed when the alert is made is not a
  crossing).
- `change_pct`: over the last `window` closed candles, from the open of the oldest to the close
  of the newest, the price moved by at least `value` percent (a negative value: fell by at least
  that much). The percent is of the open's magnitude, so a series that is negative (a premium
  index) rises when it goes towards and past 0; a window whose open is 0 is not judged.
- `volume_spike`: the newest closed candle's volume is at least `value` times the mean volume of
  the `window` closed candles before it.

  Both judge the candle that closed last, once, over a window with no gap: candles arrive live,
  fetched over REST (a gap being filled, a new stream's history) or read from the dataset at a
  start, in any order, and a window a candle is missing from is judged once the candle arrives,
  if its newest candle is still the last closed. A candle from history is a window's past, never
  judged itself, so a restart neither waits `window` candles nor fires on the downtime (but for
  its last candle, the one that closed last, judged once as a live one would have been).
- `stale`: no update of the stream for `value` seconds of exchange time.
- `missing`: the ledger knows at least `value` closed candles of the stream missing (a gap, or a
  new stream's history, not fetched yet).
"""

from __future__ import annotations

import bisect
import enum
import hashlib
from dataclasses import dataclass, field

from kline_tui.config import AlertConfig, parse_alert
from kline_tui.model import CandleLike, SpecError, StreamKey

__all__ = ["Alert", "Firing", "Rule", "alert_id", "firing_id"]


class Rule(enum.StrEnum):
    """The kinds of alert (config's `ALERT_RULES`)."""

    PRICE_ABOVE = "price_above"
    PRICE_BELOW = "price_below"
    CHANGE_PCT = "change_pct"
    VOLUME_SPIKE = "volume_spike"
    STALE = "stale"
    MISSING = "missing"

    @property
    def is_crossing(self) -> bool:
        """Evaluated on the live price, and fires only on a crossing."""
        return self in (Rule.PRICE_ABOVE, Rule.PRICE_BELOW)

    @property
    def on_closed(self) -> bool:
        """Evaluated on closed candles (else on live updates or on the exchange's time)."""
        return self in (Rule.CHANGE_PCT, Rule.VOLUME_SPIKE)

    def describe(self, value: float, window: int) -> str:
        """The rule in words, for the event log and the list screen."""
        return {
            Rule.PRICE_ABOVE: f"price above {value:g}",
            Rule.PRICE_BELOW: f"price below {value:g}",
            Rule.CHANGE_PCT: f"change of {value:+g}% over {window} candles",
            Rule.VOLUME_SPIKE: f"volume {value:g}x the mean of {window} candles",
            Rule.STALE: f"no update for {value:g} s",
            Rule.MISSING: f"{value:g}+ candles missing",
        }[self]


def alert_id(config: AlertConfig) -> str:
    """A short id, the same for the same stream, rule, value and window in any process (so an
    attached UI, the API and a twin recorder name an alert alike). The stream is hashed in its
    canonical spelling, so `usdm:btcusdt:1m` and `usdm:BTCUSDT:1m` are one alert."""
    try:
        stream = str(StreamKey.parse(config.stream))
    except SpecError:
        stream = config.stream  # cannot work anyway (parse_alert refuses it): any stable id
    text = f"{stream}|{config.rule}|{config.value!r}|{config.window}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def firing_id(stream: str, rule: str, value: float, open_time: int) -> str:
    """The id of one firing: stream, rule, level and the candle's open time. Two recorders of
    the same stream (twins) give the same id, so a receiver drops the second copy. The level is
    written exactly (`repr`): levels 104250.0 and 104250.4 are two alerts, two ids."""
    return f"{stream}/{rule}/{value!r}/{open_time}"


@dataclass(frozen=True, slots=True)
class Firing:
    """One firing of an alert. Times are exchange times in ms."""

    id: str
    alert: str  # the alert's id
    stream: str
    rule: str
    value: float
    price: float | None  # the last price known when it fired
    open_time: int  # of the candle it fired on
    fired_at: int
    message: str

    def body(self) -> dict[str, object]:
        """The webhook's JSON body (README, "Alerts"; DESIGN.md, "Contracts")."""
        return {
            "id": self.id,
            "alert": self.alert,
            "stream": self.stream,
            "rule": self.rule,
            "value": self.value,
            "price": self.price,
            "open_time": self.open_time,
            "fired_at": self.fired_at,
            "message": self.message,
        }


@dataclass(slots=True)
class Alert:
    """An alert and its state. `check` is given the condition and says whether to fire."""

    config: AlertConfig
    key: StreamKey
    rule: Rule
    id: str
    armed: bool | None = None  # None: no observation yet (crossings need a side to start from)
    last_fired_at: int | None = None
    fired: int = 0  # firings, kept across restarts (alerts.state) as are the two above
    skipped: int = 0  # conditions met within the cooldown
    # The newest closed candles the rule reads (at most `needs`), oldest first.
    closes: list[CandleLike] = field(default_factory=list)
    judged: int = -1  # open time of the newest candle judged or taken as history: never again

    @classmethod
    def of(cls, config: AlertConfig) -> Alert:
        """Build one from its config; raises ValueError (one sentence) when it cannot work."""
        key, rule = parse_alert(config)
        return cls(config, key, Rule(rule), alert_id(config))

    @property
    def muted(self) -> bool:
        return self.config.muted

    @property
    def value(self) -> float:
        return self.config.value

    def describe(self) -> str:
        return self.rule.describe(self.config.value, self.config.window)

    def check(self, condition: bool, at_ms: int) -> bool:
        """Feed the condition's truth at exchange time `at_ms`; True when the alert fires."""
        if not condition:
            self.armed = True
            return False
        if self.armed is None and self.rule.is_crossing:
            self.armed = False  # the first price is past the level already: not a crossing
            return False
        if self.armed is False:
            return False  # fired (or skipped) and not cleared since
        self.armed = False
        cooldown = self.config.cooldown_s * 1000
        # A last firing later than now by more than a cooldown came from another clock (a saved
        # state, a demo's fast clock): it must not silence the alert until that date.
        if self.last_fired_at is not None and -cooldown < at_ms - self.last_fired_at < cooldown:
            self.skipped += 1
            return False
        if self.muted:
            return False
        self.last_fired_at = at_ms
        self.fired += 1
        return True

    # -- conditions ---------------------------------------------------------------------------

    def crossed(self, price: float) -> bool:
        """price_above / price_below: the price is past the level."""
        if self.rule is Rule.PRICE_ABOVE:
            return price > self.config.value
        return price < self.config.value

    @property
    def needs(self) -> int:
        """How many closed candles the rule reads: 0 for the rules of live prices and time."""
        if self.rule is Rule.CHANGE_PCT:
            return self.config.window
        if self.rule is Rule.VOLUME_SPIKE:
            return self.config.window + 1
        return 0

    def closed(
        self, candle: CandleLike, judge: bool = True, last_closed: int | None = None
    ) -> bool | None:
        """Take a closed candle (change_pct, volume_spike), in any order; the condition of the
        newest candle held when its window (the `needs` candles ending at it, each the interval
        after the one before) is complete for the first time, else None. With `judge` False
        the candle is history: it may complete a window, but is never judged itself. With
        `last_closed` (the open time of the candle that closed last, by the exchange's clock),
        a newest candle older than it is not judged: newer ones are still to come."""
        need, closes = self.needs, self.closes
        t = candle.open_time
        i = bisect.bisect_left(closes, t, key=_open_time)
        if i < len(closes) and closes[i].open_time == t:
            return None  # a repeated close
        if not judge:
            self.judged = max(self.judged, t)
        if i == 0 and len(closes) >= need:
            return None  # older than the window
        closes.insert(i, candle)
        del closes[:-need]
        newest = closes[-1]
        if newest.open_time <= self.judged or len(closes) < need:
            return None
        if last_closed is not None and newest.open_time < last_closed:
            return None
        # Sorted, each open time once, on the interval's grid: no gap exactly when the window
        # spans `need` intervals.
        if self.key.interval.shift(closes[0].open_time, need - 1) != newest.open_time:
            return None  # a gap: judged once it is filled
        self.judged = newest.open_time
        if self.rule is Rule.CHANGE_PCT:
            first = closes[0].open
            if not abs(first) > 0:  # 0 (or NaN): no percent of it
                return None
            change = (newest.close - first) / abs(first) * 100
            value = self.config.value
            return change >= value if value > 0 else change <= value
        before = closes[:-1]
        mean = sum(c.volume for c in before) / len(before)
        return mean > 0 and newest.volume >= self.config.value * mean


def _open_time(candle: CandleLike) -> int:
    return candle.open_time
