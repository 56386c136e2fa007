"""Candles as a pure function of (market, symbol, interval, open time).

The price is a deterministic continuous function P(symbol, t): multi-octave value noise on the
log price, so it wanders like a random walk at every scale from seconds to weeks yet stays
bounded around the symbol's base price. A candle needs no history: it opens at P(open) and
closes at P(next open), so consecutive candles join up; the path in between is a hashed
Brownian bridge through a few sample points, which also gives the forming candle a plausible
close that never leaves the final high/low. Volumes and trade counts are hashed around the
symbol's typical flow.

A candle without trades has o = h = l = c = the previous close. To keep that pure, whether a
candle trades is itself a hash, and every 16th candle of an interval is forced to trade, so the
previous close is at most 16 hashes away.

Every kind of kline (`model.Kind`) is a pure function too; pass `kind=` to the public functions
or use `stream_candle(key, open_time)`:

- continuous (`perpetual`, `current_quarter`, `next_quarter`, keyed by pair): exactly the trade
  candle of the contract holding that type (`universe.contract_symbol`; no quarterly roll).
- `mark` (symbol) and `index` (pair: follows the pair's perpetual, less its basis): the trade
  price model times a hashed wobble of a few hundredths of a percent; `premium` (symbol): a
  hashed wobble around -0.0003, between -0.0008 and +0.0002. These sample their value
  `_KIND_SAMPLES` times per candle (open = the first sample, close = the last one seen, high and
  low over the samples), print it with 8 decimals, send "0" for every volume field and count
  one "basic data" per second in `n` (60 for a whole minute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import msgspec

from kline_tui.model import Candle, Interval, Kind, Market, StreamKey
from kline_tui.sim.universe import SymbolInfo, contract_symbol, symbol_info

__all__ = [
    "WireCandle",
    "candle_at",
    "expected_candle",
    "final_for",
    "forming_at",
    "forming_for",
    "kind_source",
    "kline_event",
    "price_at",
    "series_event",
    "stream_candle",
]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_INV53 = 1.0 / (1 << 53)
_IV_CODE = {iv: i for i, iv in enumerate(Interval)}

# Octaves of the price noise: lattice periods from 2 s to ~39 days, 6x apart.
_OCTAVE_MS = tuple(2000 * 6**k for k in range(9))
_MAX_OCTAVE_AMP = 0.05  # caps the slowest octaves, which keeps the price near its base

_BRIDGE_STEPS = 4  # sample points inside a candle: open, 3 hashed, close
_FORCED_TRADE_EVERY = 16

# Probability that a candle has no trades: a floor for everyone plus a part scaled by the
# symbol's quietness. Longer intervals always trade.
_NO_TRADE_FLOOR = {Interval.S1: 0.02, Interval.M1: 0.001}
_NO_TRADE_QUIET = {
    Interval.S1: 0.55,
    Interval.M1: 0.15,
    Interval.M3: 0.06,
    Interval.M5: 0.04,
    Interval.M15: 0.01,
    Interval.M30: 0.005,
}


def _u(a: int, b: int, c: int) -> float:
    """A deterministic uniform in [0, 1) from three ints.

    Tuple-of-int hashes are not salted per process (only str/bytes are), so this is stable
    across processes; the multiply and the high bits spread the hash over the whole range.
    """
    return (((hash((a, b, c)) * _GOLDEN) & _MASK64) >> 11) * _INV53


class WireCandle(msgspec.Struct, frozen=True, gc=False):
    """A kline as Binance sends it: prices and volumes as formatted strings, times in ms."""

    t: int
    T: int
    o: str
    h: str
    l: str  # noqa: E741 - Binance's field name
    c: str
    v: str
    q: str
    V: str
    Q: str
    n: int
    f: int
    L: int

    def to_candle(self) -> Candle:
        """The same values parsed to floats, as a client decodes them."""
        return Candle(
            open_time=self.t,
            close_time=self.T,
            open=float(self.o),
            high=float(self.h),
            low=float(self.l),
            close=float(self.c),
            volume=float(self.v),
            quote_volume=float(self.q),
            taker_buy_volume=float(self.V),
            taker_buy_quote_volume=float(self.Q),
            trades=self.n,
        )


@dataclass(frozen=True, slots=True)
class _Model:
    """Per-symbol constants, computed once."""

    info: SymbolInfo
    log_base: float
    octaves: tuple[tuple[int, float, int], ...]  # (period ms, amplitude, salt)
    sigma_per_s: float  # relative price sd per sqrt(second)
    price_scale: int  # ticks per unit of price
    qty_scale: int  # lots per unit of quantity
    price_pad: int  # 10 ** (wire decimals - tick decimals)
    qty_pad: int
    id_base: int
    no_trade_p: dict[Interval, float]


@lru_cache(maxsize=16_384)
def _model(market: Market, symbol: str) -> _Model:
    info = symbol_info(market, symbol)
    if info is None:
        raise ValueError(f"{market.value} has no symbol {symbol!r}")
    sigma = info.daily_vol / math.sqrt(86_400)
    # Value noise of amplitude A changes by about A over its period; scaling A with sqrt(period)
    # makes the sum behave like a random walk with the symbol's volatility.
    octaves = tuple(
        (period, min(_MAX_OCTAVE_AMP, 1.2 * sigma * math.sqrt(period / 1000)), 7919 * k + 1)
        for k, period in enumerate(_OCTAVE_MS)
    )
    return _Model(
        info=info,
        log_base=math.log(info.base_price) + info.basis,
        octaves=octaves,
        sigma_per_s=sigma,
        price_scale=10**info.price_decimals,
        qty_scale=10**info.qty_decimals,
        price_pad=10 ** max(0, info.wire_price_decimals - info.price_decimals),
        qty_pad=10 ** max(0, info.wire_qty_decimals - info.qty_decimals),
        id_base=int(_u(info.flow_seed, 11, 0) * 1e9),
        no_trade_p={
            iv: min(0.9, _NO_TRADE_FLOOR.get(iv, 0.0) + info.quiet * _NO_TRADE_QUIET.get(iv, 0.0))
            for iv in Interval
        },
    )


@lru_cache(maxsize=1 << 16)
def _price_ticks(market: Market, symbol: str, t: int) -> int:
    """P(symbol, t) in whole ticks (>= 1)."""
    m = _model(market, symbol)
    seed = m.info.price_seed
    lp = m.log_base
    for period, amp, salt in m.octaves:
        i = t // period
        s = (t - i * period) / period
        a = _u(seed, salt, i)
        b = _u(seed, salt, i + 1)
        s = s * s * (3.0 - 2.0 * s)  # smoothstep: continuous slope across lattice points
        lp += amp * (2.0 * (a + (b - a) * s) - 1.0)
    return max(1, round(math.exp(lp) * m.price_scale))


def price_at(market: Market, symbol: str, t: int) -> float:
    """The model price P(symbol, t) quantised to the tick, as a float."""
    m = _model(Market(market), symbol)
    return _price_ticks(m.info.market, symbol, t) / m.price_scale


def _trade_id(m: _Model, t: int) -> int:
    """Trade id counter at instant t: monotonic, advancing at the symbol's trade rate."""
    return m.id_base + t * m.info.trades_per_min // 60_000


def _traded(m: _Model, interval: Interval, t: int, next_t: int) -> bool:
    p = m.no_trade_p[interval]
    if p == 0.0:
        return True
    index = t // (next_t - t)  # only fixed-length intervals can lack trades
    if index % _FORCED_TRADE_EVERY == 0:
        return True
    if _trade_id(m, next_t) == _trade_id(m, t):
        return False  # so illiquid a symbol that no trade falls in this short candle
    return _u(m.info.flow_seed, 1000 + _IV_CODE[interval], index) >= p


def _previous_close(m: _Model, interval: Interval, t: int) -> int:
    """Close (ticks) of the last candle with trades before the one opening at t."""
    market, symbol = m.info.market, m.info.symbol
    at = t
    for _ in range(_FORCED_TRADE_EVERY):
        prev = interval.prev_open(at)
        if _traded(m, interval, prev, at):
            return _price_ticks(market, symbol, at)  # a traded candle closes at P(next open)
        at = prev
    return _price_ticks(market, symbol, at)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything about one candle, final and forming, computed once."""

    m: _Model
    t: int
    next_t: int
    samples: tuple[int, ...]  # price path in ticks; a single point when there are no trades
    wick_up: int
    wick_dn: int
    wick_up_at: float  # fraction of the candle after which the wick is part of the high
    wick_dn_at: float
    n: int
    f: int
    v: int  # lots (COIN-M: contracts)
    V: int
    final: WireCandle


def _fmt_fixed(units: int, pad: int, decimals: int) -> str:
    """Whole `units` of 10**-d, printed with `decimals` (= d + log10(pad)) decimals, exactly."""
    if decimals == 0:
        return str(units)
    scaled = units * pad
    scale = 10**decimals
    return f"{scaled // scale}.{scaled % scale:0{decimals}d}"


def _wire(
    m: _Model,
    t: int,
    close_time: int,
    o: int,
    h: int,
    low: int,
    c: int,
    v: int,
    V: int,
    n: int,
    f: int,
) -> WireCandle:
    info = m.info
    pd, qd = info.wire_price_decimals, info.wire_qty_decimals
    if n:
        vwap = (o + h + low + c) / (4 * m.price_scale)
        if info.contract_size is not None:  # COIN-M: q and Q in the base asset
            q = v * info.contract_size / vwap
            bq = V * info.contract_size / vwap
        else:
            q = v / m.qty_scale * vwap
            bq = V / m.qty_scale * vwap
        last = f + n - 1
    else:
        q = bq = 0.0
        f = last = -1
    qdec = info.quote_decimals
    return WireCandle(
        t=t,
        T=close_time,
        o=_fmt_fixed(o, m.price_pad, pd),
        h=_fmt_fixed(h, m.price_pad, pd),
        l=_fmt_fixed(low, m.price_pad, pd),
        c=_fmt_fixed(c, m.price_pad, pd),
        v=_fmt_fixed(v, m.qty_pad, qd),
        q=f"{q:.{qdec}f}",
        V=_fmt_fixed(V, m.qty_pad, qd),
        Q=f"{bq:.{qdec}f}",
        n=n,
        f=f,
        L=last,
    )


@lru_cache(maxsize=1 << 16)
def _plan(market: Market, symbol: str, interval: Interval, open_time: int) -> _Plan:
    m = _model(market, symbol)
    t, next_t = open_time, interval.next_open(open_time)
    close_time = next_t - 1
    if not _traded(m, interval, t, next_t):
        p = _previous_close(m, interval, t)
        final = _wire(m, t, close_time, p, p, p, p, 0, 0, 0, -1)
        return _Plan(m, t, next_t, (p,), 0, 0, 1.0, 1.0, 0, -1, 0, 0, final)

    seed = m.info.flow_seed ^ (_IV_CODE[interval] << 40)
    o = _price_ticks(market, symbol, t)
    c = _price_ticks(market, symbol, next_t)
    # Typical move over the whole candle, in ticks: scales the bridge and the wicks.
    spread = o * m.sigma_per_s * math.sqrt((next_t - t) / 1000)
    steps = _BRIDGE_STEPS
    samples = [o]
    for j in range(1, steps):
        z = 2.0 * (_u(seed, t, 3 * j) + _u(seed, t, 3 * j + 1) + _u(seed, t, 3 * j + 2) - 1.5)
        mid = o + (c - o) * j / steps + z * spread * math.sqrt(j * (steps - j)) / steps
        samples.append(max(1, round(mid)))
    samples.append(c)
    wick_up = round(_u(seed, t, 20) ** 2 * 0.4 * spread)
    wick_dn = round(_u(seed, t, 21) ** 2 * 0.4 * spread)
    high = max(samples) + wick_up
    low = max(1, min(samples) - wick_dn)
    wick_dn = min(samples) - low

    ids = _trade_id(m, t)
    room = _trade_id(m, next_t) - ids
    n = max(1, int(room * (0.55 + 0.45 * _u(seed, t, 30))))
    v = max(n, round(n * m.info.units_per_trade * (0.6 + 0.8 * _u(seed, t, 31))))
    V = int(v * (0.3 + 0.4 * _u(seed, t, 32)))
    final = _wire(m, t, close_time, o, high, low, c, v, V, n, ids)
    return _Plan(
        m,
        t,
        next_t,
        tuple(samples),
        wick_up,
        wick_dn,
        0.1 + 0.8 * _u(seed, t, 22),
        0.1 + 0.8 * _u(seed, t, 23),
        n,
        ids,
        v,
        V,
        final,
    )


def kind_source(
    market: Market | str, symbol: str, kind: Kind | str = Kind.TRADE
) -> SymbolInfo | None:
    """The contract whose prices a series of `kind` keyed by `symbol` follows, or None if the
    market has no such series: the symbol itself for trade, mark and premium klines, the pair's
    perpetual for index klines, the contract holding the type for continuous klines.

    Its `onboard_date` is where the series starts and its `trading` whether it streams.
    """
    market, kind = Market(market), Kind(kind)
    if market not in kind.markets():
        return None
    if kind in (Kind.TRADE, Kind.MARK, Kind.PREMIUM):
        info = symbol_info(market, symbol)
        if info is None or (kind is not Kind.TRADE and info.contract_type is None):
            return None
        return info
    contract_type = "PERPETUAL" if kind is Kind.INDEX else kind.contract_type
    assert contract_type is not None
    holder = contract_symbol(market, symbol, contract_type)
    return None if holder is None else symbol_info(market, holder)


def _source_symbol(market: Market, symbol: str, kind: Kind) -> str:
    info = kind_source(market, symbol, kind)
    if info is None:
        raise ValueError(f"{market.value} has no {kind.value} klines for {symbol!r}")
    return info.symbol


def _checked(
    market: Market | str, interval: Interval | str, open_time: int, kind: Kind | str
) -> tuple[Market, Interval, Kind]:
    iv = Interval(interval)
    if not iv.is_aligned(open_time):
        raise ValueError(f"{open_time} is not the open time of a {iv.value} candle")
    return Market(market), iv, Kind(kind)


def candle_at(
    market: Market | str,
    symbol: str,
    interval: Interval | str,
    open_time: int,
    kind: Kind | str = Kind.TRADE,
) -> WireCandle:
    """The final (closed) candle opening at `open_time`, exactly as the simulator sends it.

    Pure and deterministic: the same arguments give the same candle in any process. `symbol` is
    what Binance keys `kind` by (the pair for index and continuous klines). Raises ValueError
    for a series the market does not have or an unaligned open time.
    """
    m, iv, k = _checked(market, interval, open_time, kind)
    if k is Kind.TRADE:
        _model(m, symbol)  # the unknown symbol's error
    return final_for(m, symbol, iv, open_time, k)


def stream_candle(key: StreamKey, open_time: int) -> WireCandle:
    """`candle_at` for a stream key (`StreamKey.parse("coinm:BTCUSD:1m:index")`)."""
    return candle_at(key.market, key.symbol, key.interval, open_time, key.kind)


def expected_candle(
    market: Market | str,
    symbol: str,
    interval: Interval | str,
    open_time: int,
    kind: Kind | str = Kind.TRADE,
) -> Candle:
    """`candle_at` parsed to floats: what a recorder should have stored for this candle.

    For mark, index and premium klines the volume fields parse to 0.0 and `trades` is the count
    of basic data; a recorder stores those fields as null (DESIGN.md, "Contracts").
    """
    return candle_at(market, symbol, interval, open_time, kind).to_candle()


def forming_at(
    market: Market | str,
    symbol: str,
    interval: Interval | str,
    open_time: int,
    now_ms: int,
    kind: Kind | str = Kind.TRADE,
) -> WireCandle:
    """The candle opening at `open_time` as it stands at exchange time `now_ms`.

    Its open is the final open; close, high and low follow the candle's price path so far and
    never leave the final high/low; trades (basic data) and volumes grow with time. At or after
    the close time it is the final candle.
    """
    m, iv, k = _checked(market, interval, open_time, kind)
    if k is Kind.TRADE:
        _model(m, symbol)
    return forming_for(m, symbol, iv, open_time, now_ms, k)


def _forming(plan: _Plan, now_ms: int) -> WireCandle:
    frac = (now_ms - plan.t) / (plan.next_t - plan.t)
    if frac >= 1.0 or plan.n == 0:
        return plan.final
    frac = max(frac, 0.0)
    samples = plan.samples
    x = frac * _BRIDGE_STEPS
    j = int(x)
    a, b = samples[j], samples[j + 1]
    close = round(a + (b - a) * (x - j))
    seen = samples[: j + 1]
    high = max(max(seen), close) + (plan.wick_up if frac >= plan.wick_up_at else 0)
    low = min(min(seen), close) - (plan.wick_dn if frac >= plan.wick_dn_at else 0)
    n = max(1, int(plan.n * frac))
    v = max(1, int(plan.v * frac))
    V = int(plan.V * frac)
    return _wire(plan.m, plan.t, plan.next_t - 1, samples[0], high, low, close, v, V, n, plan.f)


def forming_for(
    market: Market,
    symbol: str,
    interval: Interval,
    open_time: int,
    now_ms: int,
    kind: Kind = Kind.TRADE,
) -> WireCandle:
    """`forming_at` for callers that already hold Market/Interval/Kind members and aligned times
    (the push loop): skips the argument checks."""
    if kind is Kind.TRADE:
        return _forming(_plan(market, symbol, interval, open_time), now_ms)
    if kind.is_continuous:
        holder = _source_symbol(market, symbol, kind)
        return _forming(_plan(market, holder, interval, open_time), now_ms)
    return _kind_forming(_kind_plan(market, symbol, interval, open_time, kind), now_ms)


def final_for(
    market: Market, symbol: str, interval: Interval, open_time: int, kind: Kind = Kind.TRADE
) -> WireCandle:
    """`candle_at` without the argument checks, for the push loop and REST."""
    if kind is Kind.TRADE:
        return _plan(market, symbol, interval, open_time).final
    if kind.is_continuous:
        holder = _source_symbol(market, symbol, kind)
        return _plan(market, holder, interval, open_time).final
    return _kind_plan(market, symbol, interval, open_time, kind).final


# -- mark, index and premium klines -------------------------------------------------------------

_KIND_DECIMALS = 8  # Binance prints mark, index and premium values with 8 decimals
_KIND_SCALE = 10**_KIND_DECIMALS
_KIND_SAMPLES = 6  # values sampled per candle (every 10 s in a minute): cheap enough for REST
_KIND_OCTAVES_MS = (30_000, 450_000)
_MARK_SWING = 0.0004  # relative: the mark strays at most this far from the trade price
_INDEX_SWING = 0.0003
_PREMIUM_MID = -0.0003  # premium = _PREMIUM_MID + _PREMIUM_SWING * wobble: mostly negative
_PREMIUM_SWING = 0.0005
_KIND_SALT = {Kind.MARK: 101, Kind.INDEX: 202, Kind.PREMIUM: 303}


def _wobble(seed: int, salt: int, t: int) -> float:
    """Smooth hashed noise in [-1, 1]: two octaves of value noise, equally weighted."""
    total = 0.0
    for k, period in enumerate(_KIND_OCTAVES_MS):
        i = t // period
        s = (t - i * period) / period
        s = s * s * (3.0 - 2.0 * s)
        a = _u(seed, salt + k, i)
        b = _u(seed, salt + k, i + 1)
        total += 2.0 * (a + (b - a) * s) - 1.0
    return total / len(_KIND_OCTAVES_MS)


_raw_price_ticks = _price_ticks.__wrapped__  # samples are not worth a slot in the trade cache


def _kind_value(m: _Model, kind: Kind, t: int) -> int:
    """The value of a mark, index or premium series at instant t, in units of 1e-8."""
    info = m.info
    if kind is Kind.PREMIUM:
        return round(
            (_PREMIUM_MID + _PREMIUM_SWING * _wobble(info.flow_seed, _KIND_SALT[kind], t))
            * _KIND_SCALE
        )
    price = _raw_price_ticks(info.market, info.symbol, t) / m.price_scale
    if kind is Kind.MARK:
        return round(
            price * (1.0 + _MARK_SWING * _wobble(info.flow_seed, _KIND_SALT[kind], t)) * _KIND_SCALE
        )
    # Index: the spot index the perpetual tracks, so its basis comes off.
    wobble = _INDEX_SWING * _wobble(info.price_seed, _KIND_SALT[kind], t)
    return round(price * math.exp(-info.basis) * (1.0 + wobble) * _KIND_SCALE)


def _fmt_signed(units: int) -> str:
    text = _fmt_fixed(abs(units), 1, _KIND_DECIMALS)
    return f"-{text}" if units < 0 else text


@dataclass(frozen=True, slots=True)
class _KindPlan:
    """One mark, index or premium candle: its samples (times, values) and its final form."""

    t: int
    next_t: int
    times: tuple[int, ...]
    values: tuple[int, ...]
    final: WireCandle


def _kind_wire(
    plan_t: int, next_t: int, times: tuple[int, ...], values: tuple[int, ...], n: int
) -> WireCandle:
    return WireCandle(
        t=plan_t,
        T=next_t - 1,
        o=_fmt_signed(values[0]),
        h=_fmt_signed(max(values)),
        l=_fmt_signed(min(values)),
        c=_fmt_signed(values[-1]),
        v="0",
        q="0",
        V="0",
        Q="0",
        n=n,
        f=plan_t,  # Binance's examples carry times in the ignored f/L
        L=times[-1],
    )


@lru_cache(maxsize=1 << 14)
def _kind_plan(
    market: Market, symbol: str, interval: Interval, open_time: int, kind: Kind
) -> _KindPlan:
    m = _model(market, _source_symbol(market, symbol, kind))
    t, next_t = open_time, interval.next_open(open_time)
    span = next_t - t
    count = max(1, min(_KIND_SAMPLES, span // 1000))
    step = span // count
    times = tuple(t + k * step for k in range(count))
    values = tuple(_kind_value(m, kind, at) for at in times)
    final = _kind_wire(t, next_t, times, values, max(1, span // 1000))
    return _KindPlan(t, next_t, times, values, final)


def _kind_forming(plan: _KindPlan, now_ms: int) -> WireCandle:
    if now_ms >= plan.next_t - 1:
        return plan.final
    seen = max(1, sum(1 for at in plan.times if at <= now_ms))
    n = max(1, min(plan.final.n, (now_ms - plan.t) // 1000 + 1))
    return _kind_wire(plan.t, plan.next_t, plan.times[:seen], plan.values[:seen], n)


def kline_event(
    symbol: str, interval: str, candle: WireCandle, closed: bool, event_time: int
) -> dict:
    """A kline event in Binance's field order."""
    return {
        "e": "kline",
        "E": event_time,
        "s": symbol,
        "k": {
            "t": candle.t,
            "T": candle.T,
            "s": symbol,
            "i": interval,
            "f": candle.f,
            "L": candle.L,
            "o": candle.o,
            "c": candle.c,
            "h": candle.h,
            "l": candle.l,
            "v": candle.v,
            "n": candle.n,
            "x": closed,
            "q": candle.q,
            "V": candle.V,
            "Q": candle.Q,
            "B": "0",
        },
    }


_SERIES_EVENT = {Kind.MARK: "markPrice_kline", Kind.INDEX: "indexPrice_kline"}


def series_event(
    market: Market,
    kind: Kind,
    key: str,
    interval: str,
    candle: WireCandle,
    closed: bool,
    event_time: int,
) -> dict:
    """The event of a stream of any kind, in Binance's field order; `key` is what the kind is
    keyed by (symbol, or pair for index and continuous klines).

    Continuous: `continuous_kline` with `ps` (pair) and `ct` (upper case), no `s` in `k`. COIN-M
    mark: `markPrice_kline` with `ps` (the symbol's pair) and `k.s` the symbol. COIN-M index:
    `indexPrice_kline` with `ps` (pair) and `k.s` "0".
    """
    if kind is Kind.TRADE:
        return kline_event(key, interval, candle, closed, event_time)
    k = kline_event(key, interval, candle, closed, event_time)["k"]
    if kind.is_continuous:
        del k["s"]
        return {
            "e": "continuous_kline",
            "E": event_time,
            "ps": key,
            "ct": kind.contract_type,
            "k": k,
        }
    if kind is Kind.MARK:
        info = symbol_info(market, key)
        pair = key if info is None else info.pair
    else:
        pair, k["s"] = key, "0"
    return {"e": _SERIES_EVENT[kind], "E": event_time, "ps": pair, "k": k}
