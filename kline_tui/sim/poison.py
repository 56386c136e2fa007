"""Impossible candles for the hostile server: kline events and REST rows no exchange would send.

Each shape breaks one rule a client must check before it stores a candle or infers missing ones
from it. A poisoned candle never reuses a real candle's values: its prices are twice the real
ones, so a stored poisoned row differs from `expected_candle` even where its open time is real.

WebSocket shapes (`POISON_KINDS`), for a stream of `symbol` and `interval` at exchange time `now`:

| kind | what is wrong |
|---|---|
| `event_ahead` | `E` is `POISON_HOURS` after the clock (the candle fits `E`) |
| `event_behind` | `E` is `POISON_HOURS` before the clock (the candle fits `E`) |
| `unaligned` | `t` is 7 ms past an open time |
| `before_2017` | `t` is in 2016 (Binance opened in July 2017) |
| `after_event` | `t` is the next candle's open time, after `E` |
| `far_future` | `t = 10**16` (year 318857) |
| `early_close` | `x: true` with `E = t`: closed a whole interval before its `T` |
| `nan` / `negative` / `infinite` | one price or volume is `"NaN"`, negative, or infinite |
| `wrong_symbol` | `s` names another symbol of the market (one a client may also record) |
| `wrong_interval` | `i` names another interval (with a candle aligned to it) |
| `huge_int` | one of `E t T n f L` is beyond 64 bits |

REST shapes (`REST_POISON_KINDS`): `unaligned`, `before_2017`, `future` (opens `POISON_HOURS`
after the server time), `far_future`, `bad_close_time` (`T` a day after `t + interval`), `nan`,
`negative`, `infinite`, `huge_int`.
"""

from __future__ import annotations

import random
from decimal import Decimal

import msgspec

from kline_tui.model import Interval, Kind, Market
from kline_tui.sim.candles import WireCandle, forming_for, series_event

__all__ = ["POISON_HOURS", "POISON_KINDS", "REST_POISON_KINDS", "poison_event", "poison_row"]

POISON_HOURS = 3
POISON_KINDS = (
    "event_ahead",
    "event_behind",
    "unaligned",
    "before_2017",
    "after_event",
    "far_future",
    "early_close",
    "nan",
    "negative",
    "infinite",
    "wrong_symbol",
    "wrong_interval",
    "huge_int",
)
REST_POISON_KINDS = (
    "unaligned",
    "before_2017",
    "future",
    "far_future",
    "bad_close_time",
    "nan",
    "negative",
    "infinite",
    "huge_int",
)

_HOURS_MS = POISON_HOURS * 3_600_000
_Y2016_MS = 1_451_606_400_000  # 2016-01-01T00:00:00Z
_FAR_FUTURE_MS = 10**16
_HUGE = 10**30
_NUMBER_FIELDS = ("o", "h", "l", "c", "v", "q", "V", "Q")
_VOLUME_FIELDS = ("v", "q", "V", "Q")
_INFINITIES = ("Infinity", "inf", "1e999", "-Infinity")


def _twice(text: str) -> str:
    """A decimal string doubled, with its decimals kept (exact: no float rounding)."""
    return str(Decimal(text) * 2)


def _bogus(candle: WireCandle, t: int, close_time: int) -> WireCandle:
    """A sane-looking candle at `t`: the real candle's volumes, its prices doubled."""
    return msgspec.structs.replace(
        candle,
        t=t,
        T=close_time,
        o=_twice(candle.o),
        h=_twice(candle.h),
        l=_twice(candle.l),
        c=_twice(candle.c),
    )


def _span_ms(interval: Interval) -> int:
    """An interval's length, with a month taken as 30 days (for times no calendar can place)."""
    return interval.ms or 30 * 86_400_000


def _with_number(fields: dict, kind: str, rng: random.Random, series: Kind) -> dict:
    """`fields` (a kline's `k` object or a REST row as a dict) with one number made impossible.

    A premium index may be negative: a negative premium candle spoils one of its volumes."""
    names = _VOLUME_FIELDS if kind == "negative" and series is Kind.PREMIUM else _NUMBER_FIELDS
    name = rng.choice(names)
    if kind == "nan":
        fields[name] = rng.choice(("NaN", "nan"))
    elif kind == "negative":
        fields[name] = "-" + fields[name].lstrip("-") if fields[name].strip("0.") else "-1.5"
    else:
        fields[name] = rng.choice(_INFINITIES)
    return fields


def poison_event(
    kind: str,
    market: Market,
    symbol: str,
    interval: Interval,
    now_ms: int,
    rng: random.Random,
    decoy_symbol: str,
    series: Kind = Kind.TRADE,
) -> dict:
    """A kline event of shape `kind` for the stream of `symbol` and `interval` (unwrapped), of a
    `series` kind of klines (shaped as that kind's event; `symbol` is its key).

    `decoy_symbol` is the key (symbol, or pair) a `wrong_symbol` event claims to be.
    """
    current = interval.open_time_at(now_ms)
    real = forming_for(market, symbol, interval, current, now_ms, series)
    event_time, closed, iv, sym = now_ms, False, interval.value, symbol
    if kind in ("event_ahead", "event_behind"):
        event_time = now_ms + (_HOURS_MS if kind == "event_ahead" else -_HOURS_MS)
        t = interval.prev_open(interval.open_time_at(event_time))
        candle, closed = _bogus(real, t, interval.close_time(t)), True
    elif kind == "unaligned":
        t = interval.prev_open(current) + 7
        candle = _bogus(real, t, t + (current - interval.prev_open(current)) - 1)
    elif kind == "before_2017":
        t = interval.open_time_at(_Y2016_MS)
        candle, closed = _bogus(real, t, interval.close_time(t)), True
    elif kind == "after_event":
        t = interval.next_open(current)
        candle = _bogus(real, t, interval.close_time(t))
    elif kind == "far_future":
        candle, closed = _bogus(real, _FAR_FUTURE_MS, _FAR_FUTURE_MS + _span_ms(interval) - 1), True
    elif kind == "early_close":
        candle, closed, event_time = _bogus(real, current, real.T), True, current
    elif kind == "wrong_symbol":
        candle, sym = _bogus(real, current, real.T), decoy_symbol
    elif kind == "wrong_interval":
        other = _decoy_interval(market, interval)
        t = other.open_time_at(now_ms)
        candle, iv = _bogus(real, t, other.close_time(t)), other.value
    elif kind in ("nan", "negative", "infinite", "huge_int"):
        candle = _bogus(real, current, real.T)
    else:
        raise ValueError(f"no poison shape {kind!r}; use one of {', '.join(POISON_KINDS)}")
    event = series_event(market, series, sym, iv, candle, closed, event_time)
    if kind in ("nan", "negative", "infinite"):
        _with_number(event["k"], kind, rng, series)
    elif kind == "huge_int":
        name = rng.choice(("E", "t", "T", "n", "f", "L"))
        (event if name == "E" else event["k"])[name] = _HUGE + rng.randrange(1000)
    return event


def _decoy_interval(market: Market, interval: Interval) -> Interval:
    """Another interval of the market: the next longer one, or the one before the longest."""
    offered = market.intervals
    i = offered.index(interval)
    return offered[i + 1] if i + 1 < len(offered) else offered[i - 1]


_ROW_FIELDS = ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q")


def poison_row(
    kind: str,
    market: Market,
    symbol: str,
    interval: Interval,
    now_ms: int,
    rng: random.Random,
    series: Kind = Kind.TRADE,
) -> list:
    """A REST klines row of shape `kind` (`REST_POISON_KINDS`) for `symbol` and `interval` of a
    `series` kind (its key: the pair for index and continuous klines)."""
    current = interval.open_time_at(now_ms)
    real = forming_for(market, symbol, interval, current, now_ms, series)
    closed_t = interval.prev_open(current)
    if kind == "unaligned":
        candle = _bogus(real, closed_t + 7, current + 6)
    elif kind == "before_2017":
        t = interval.open_time_at(_Y2016_MS)
        candle = _bogus(real, t, interval.close_time(t))
    elif kind == "future":
        t = interval.open_time_at(now_ms + _HOURS_MS)
        candle = _bogus(real, t, interval.close_time(t))
    elif kind == "far_future":
        candle = _bogus(real, _FAR_FUTURE_MS, _FAR_FUTURE_MS + _span_ms(interval) - 1)
    elif kind == "bad_close_time":
        candle = _bogus(real, closed_t, interval.close_time(closed_t) + 86_400_000)
    elif kind in ("nan", "negative", "infinite", "huge_int"):
        candle = _bogus(real, closed_t, interval.close_time(closed_t))
    else:
        raise ValueError(
            f"no REST poison shape {kind!r}; use one of {', '.join(REST_POISON_KINDS)}"
        )
    fields = {name: getattr(candle, name) for name in _ROW_FIELDS}
    if kind in ("nan", "negative", "infinite"):
        _with_number(fields, kind, rng, series)
    elif kind == "huge_int":
        fields[rng.choice(("t", "T", "n"))] = _HUGE + rng.randrange(1000)
    return [*(fields[name] for name in _ROW_FIELDS), "0"]
