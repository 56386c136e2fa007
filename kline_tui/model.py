"""The domain: markets, intervals, stream keys and candles.

Everything here is pure and cheap: no I/O, no asyncio, no Textual.
"""

from __future__ import annotations

import enum
import re
import zlib
from dataclasses import dataclass

import msgspec

__all__ = [
    "EARLIEST_OPEN_MS",
    "FIXED_MS",
    "LATEST_MS",
    "WEEK_ORIGIN_MS",
    "Candle",
    "CandleLike",
    "CandleRow",
    "Interval",
    "Kind",
    "Market",
    "SpecError",
    "StreamKey",
    "parse_partition",
    "partition_label",
    "validate_symbol",
]


class SpecError(ValueError):
    """A market, symbol, interval or stream spec that cannot be accepted; the message says why."""


class Market(enum.StrEnum):
    """A Binance market that serves klines."""

    SPOT = "spot"
    USDM = "usdm"
    COINM = "coinm"

    @classmethod
    def parse(cls, text: str) -> Market:
        """Read a market name, accepting the older `usdt_futures` / `coin_futures` spellings."""
        name = text.strip().lower()
        name = _MARKET_ALIASES.get(name, name)
        try:
            return cls(name)
        except ValueError:
            raise SpecError(f"unknown market {text!r}: use spot, usdm or coinm") from None

    @property
    def intervals(self) -> tuple[Interval, ...]:
        """The kline intervals this market offers, shortest first."""
        if self is Market.SPOT:
            return tuple(Interval)
        return tuple(i for i in Interval if i is not Interval.S1)

    @property
    def push_period_ms(self) -> int:
        """How often the exchange pushes a kline stream's forming candle (for spot `1s`, see
        StreamKey.push_period_ms)."""
        return 2000 if self is Market.SPOT else 250


_MARKET_ALIASES = {
    "usdt_futures": "usdm",
    "usd_m": "usdm",
    "usds_futures": "usdm",
    "coin_futures": "coinm",
    "coin_m": "coinm",
}

_SECOND = 1000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
# 1970-01-05 was the first Monday after the epoch; Binance's weeks open on Mondays 00:00 UTC.
WEEK_ORIGIN_MS = 4 * _DAY

# 2017-01-01 00:00 UTC. Binance opened in July 2017, so no candle opens before this: history is
# never asked for before it, and a candle claiming an earlier open time is bogus.
EARLIEST_OPEN_MS = 1_483_228_800_000
# 2100-01-01 00:00 UTC: no exchange time, event time or open time a server sends can be later.
LATEST_MS = 4_102_444_800_000


class Interval(enum.StrEnum):
    """A kline interval as Binance spells it: `1m` is a minute and `1M` a month."""

    S1 = "1s"
    M1 = "1m"
    M3 = "3m"
    M5 = "5m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H2 = "2h"
    H4 = "4h"
    H6 = "6h"
    H8 = "8h"
    H12 = "12h"
    D1 = "1d"
    D3 = "3d"
    W1 = "1w"
    MO1 = "1M"

    @classmethod
    def parse(cls, text: str) -> Interval:
        """Read an interval exactly as Binance spells it (case matters: `1m` vs `1M`)."""
        value = text.strip()
        if value == "1mo":  # the bulk archives' and the data directory's name for a month
            value = "1M"
        try:
            return cls(value)
        except ValueError:
            raise SpecError(
                f"unknown interval {text!r}: use one of {', '.join(i.value for i in cls)}"
            ) from None

    @property
    def ms(self) -> int | None:
        """Fixed length in milliseconds, or None for the calendar month."""
        return FIXED_MS.get(self)

    @property
    def path_label(self) -> str:
        """The interval's name in the data directory: `1mo` for the month, so `1m` and the month
        never share a folder on a case-insensitive filesystem."""
        return "1mo" if self is Interval.MO1 else self.value

    # Every method below is integer arithmetic (the month too: no datetime), so none raises for
    # any int, however far from today: a bogus time from a server or a huge `history` must not
    # crash the recorder (datetime stops at year 1 and 9999).

    def open_time_at(self, ms: int) -> int:
        """Open time (ms) of the candle that contains the instant `ms`."""
        step = FIXED_MS.get(self)
        if step is not None:
            origin = WEEK_ORIGIN_MS if self is Interval.W1 else 0
            return ms - ((ms - origin) % step)
        return _month_start_ms(_month_index(ms))

    def next_open(self, open_time: int) -> int:
        """Open time of the candle after the one opening at `open_time`."""
        step = FIXED_MS.get(self)
        if step is not None:
            return open_time + step
        return _month_start_ms(_month_index(open_time) + 1)

    def prev_open(self, open_time: int) -> int:
        """Open time of the candle before the one opening at `open_time`."""
        step = FIXED_MS.get(self)
        if step is not None:
            return open_time - step
        return self.open_time_at(open_time - 1)

    def shift(self, open_time: int, candles: int) -> int:
        """Open time `candles` candles after (before, if negative) the one opening at `open_time`,
        in one step however many candles that is."""
        step = FIXED_MS.get(self)
        if step is not None:
            return open_time + candles * step
        return _month_start_ms(_month_index(open_time) + candles)

    def open_at_or_after(self, ms: int) -> int:
        """The first open time at or after the instant `ms`."""
        start = self.open_time_at(ms)
        return start if start == ms else self.next_open(start)

    def close_time(self, open_time: int) -> int:
        """Close time as Binance states it: the next open time minus one millisecond."""
        return self.next_open(open_time) - 1

    def is_aligned(self, open_time: int) -> bool:
        """Whether `open_time` is the open time of a candle of this interval."""
        step = FIXED_MS.get(self)
        if step is not None:
            origin = WEEK_ORIGIN_MS if self is Interval.W1 else 0
            return (open_time - origin) % step == 0
        return self.open_time_at(open_time) == open_time

    def count_between(self, first_open: int, last_open: int) -> int:
        """Number of candles from `first_open` to `last_open`, both included (0 if empty)."""
        if last_open < first_open:
            return 0
        step = FIXED_MS.get(self)
        if step is not None:
            return (last_open - first_open) // step + 1
        # Stepping from `first_open` visits its month, then each next month start up to `last_open`.
        return _month_index(last_open) - _month_index(first_open) + 1


def _month_index(ms: int) -> int:
    """Months from 1970-01 to the month that contains the instant `ms` (negative before 1970)."""
    year, month = _civil_from_days(ms // _DAY)
    return (year - 1970) * 12 + month - 1


def _month_start_ms(index: int) -> int:
    """The first instant of the month `index` months after 1970-01."""
    years, month0 = divmod(index, 12)
    return _days_from_civil(1970 + years, month0 + 1) * _DAY


# The proleptic Gregorian calendar in integer arithmetic (H. Hinnant's `civil_from_days` and
# `days_from_civil`), in 400-year eras of 146,097 days, counted from 0000-03-01 so that the leap
# day falls at the end of each year. Exact for every int.


def _civil_from_days(days: int) -> tuple[int, int]:
    """(year, month) of the day `days` after 1970-01-01."""
    z = days + 719_468  # days from 0000-03-01
    era = z // 146_097
    day_of_era = z - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    march_month = (5 * day_of_year + 2) // 153  # 0 is March
    month = march_month + 3 if march_month < 10 else march_month - 9
    return year_of_era + era * 400 + (month <= 2), month


def _days_from_civil(year: int, month: int) -> int:
    """Days from 1970-01-01 to the first day of `month` of `year`."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


FIXED_MS: dict[Interval, int] = {
    Interval.S1: _SECOND,
    Interval.M1: _MINUTE,
    Interval.M3: 3 * _MINUTE,
    Interval.M5: 5 * _MINUTE,
    Interval.M15: 15 * _MINUTE,
    Interval.M30: 30 * _MINUTE,
    Interval.H1: _HOUR,
    Interval.H2: 2 * _HOUR,
    Interval.H4: 4 * _HOUR,
    Interval.H6: 6 * _HOUR,
    Interval.H8: 8 * _HOUR,
    Interval.H12: 12 * _HOUR,
    Interval.D1: _DAY,
    Interval.D3: 3 * _DAY,
    Interval.W1: 7 * _DAY,
}


class Kind(enum.StrEnum):
    """What a kline series measures (DESIGN.md, "Contracts": the spec's optional fourth part).

    `trade` is the exchange's trade klines (the default, never written in a spec); `mark`,
    `index` and `premium` are the mark price, index price and premium index klines; the three
    contract types are continuous contract klines, keyed by pair. See docs/binance-kline-kinds.md.
    """

    TRADE = "trade"
    MARK = "mark"
    INDEX = "index"
    PREMIUM = "premium"
    PERPETUAL = "perpetual"
    CURRENT_QUARTER = "current_quarter"
    NEXT_QUARTER = "next_quarter"

    @classmethod
    def parse(cls, text: str) -> Kind:
        """Read a kind as the spec writes it (lower case; upper case is accepted)."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise SpecError(
                f"unknown kline kind {text!r}: use one of {', '.join(k.value for k in cls)}"
            ) from None

    @property
    def is_continuous(self) -> bool:
        """Whether this is a continuous contract series (keyed by pair and contract type)."""
        return self in _CONTINUOUS

    @property
    def contract_type(self) -> str | None:
        """Binance's `contractType` for a continuous kind (`PERPETUAL`), else None."""
        return self.value.upper() if self in _CONTINUOUS else None

    @property
    def keyed_by_pair(self) -> bool:
        """Whether Binance keys this kind by pair (index, continuous) rather than by symbol."""
        return self is Kind.INDEX or self in _CONTINUOUS

    @property
    def has_volume(self) -> bool:
        """Whether candles of this kind carry volume, trades and taker fields (mark, index and
        premium klines do not: those fields are null in the dataset)."""
        return self is Kind.TRADE or self in _CONTINUOUS

    def markets(self) -> tuple[Market, ...]:
        """The markets that serve this kind: spot has only trade klines."""
        if self is Kind.TRADE:
            return tuple(Market)
        return (Market.USDM, Market.COINM)

    def has_stream(self, market: Market) -> bool:
        """Whether Binance documents a WebSocket kline stream for this kind on `market` (otherwise
        the recorder polls REST just after each close)."""
        if self is Kind.TRADE or self in _CONTINUOUS:
            return True
        return market is Market.COINM and self in (Kind.MARK, Kind.INDEX)


_CONTINUOUS = frozenset({Kind.PERPETUAL, Kind.CURRENT_QUARTER, Kind.NEXT_QUARTER})


def partition_label(market: Market, kind: Kind = Kind.TRADE) -> str:
    """The `market` partition value of a series: `usdm` for trade klines, `usdm-mark` for the
    others (DESIGN.md, "Contracts": where a kind is stored)."""
    return market.value if kind is Kind.TRADE else f"{market.value}-{kind.value}"


def parse_partition(text: str) -> tuple[Market, Kind]:
    """Read a `market` partition value (`usdm`, `usdm-mark`) back into its market and kind."""
    name, sep, kind_text = text.partition("-")
    market = Market(name)  # the exact value: no aliases in a folder name
    if not sep:
        return market, Kind.TRADE
    kind = Kind(kind_text)
    if kind is Kind.TRADE or market not in kind.markets():
        raise ValueError(f"not a market partition: {text!r}")
    return market, kind


_SYMBOL_RE = re.compile(r"[A-Z0-9_]{1,40}")


def validate_symbol(text: str) -> str:
    """Return the symbol in upper case, or raise SpecError: only A-Z, 0-9 and `_` may reach a
    path."""
    symbol = text.strip().upper()
    if not _SYMBOL_RE.fullmatch(symbol):
        raise SpecError(f"invalid symbol {text!r}: a symbol is 1-40 characters of A-Z, 0-9 and _")
    return symbol


@dataclass(frozen=True, slots=True, order=True)
class StreamKey:
    """One kline stream: a market, a symbol (the pair for index and continuous kinds), an
    interval and a kind, written `usdm:BTCUSDT:1m` (trade) or `usdm:BTCUSDT:1m:mark`."""

    market: Market
    symbol: str
    interval: Interval
    kind: Kind = Kind.TRADE

    @classmethod
    def parse(cls, spec: str) -> StreamKey:
        """Parse `market:SYMBOL:interval[:kind]`, checking that the market offers the interval
        and the kind."""
        parts = spec.strip().split(":")
        if len(parts) not in (3, 4):
            raise SpecError(
                f"invalid stream {spec!r}: write market:SYMBOL:interval[:kind], "
                "e.g. usdm:BTCUSDT:1m or usdm:BTCUSDT:1m:mark"
            )
        return cls.of(*parts)

    @classmethod
    def of(
        cls,
        market: str | Market,
        symbol: str,
        interval: str | Interval,
        kind: str | Kind = Kind.TRADE,
    ) -> StreamKey:
        """Build a key from its parts, validating each."""
        m = market if isinstance(market, Market) else Market.parse(market)
        iv = interval if isinstance(interval, Interval) else Interval.parse(interval)
        k = kind if isinstance(kind, Kind) else Kind.parse(kind)
        if iv not in m.intervals:
            raise SpecError(f"{m.value} has no {iv.value} interval (only spot offers 1s)")
        if m not in k.markets():
            raise SpecError(f"{m.value} has no {k.value} klines (spot has only trade klines)")
        return cls(m, validate_symbol(symbol), iv, k)

    @property
    def partition(self) -> str:
        """The `market` partition value this stream is stored under (`usdm`, `usdm-mark`)."""
        return partition_label(self.market, self.kind)

    @property
    def has_stream(self) -> bool:
        """Whether the exchange pushes this stream over WebSocket (else it is polled over REST)."""
        return self.kind.has_stream(self.market)

    @property
    def stream_name(self) -> str:
        """The exchange's stream name: `btcusdt@kline_1m`, `btcusdt_perpetual@continuousKline_1h`,
        `btcusd_perp@markPriceKline_1m` or `btcusd@indexPriceKline_1m`. Raises ValueError for a
        kind with no stream on its market (see `has_stream`)."""
        sym, iv, kind = self.symbol.lower(), self.interval.value, self.kind
        if kind is Kind.TRADE:
            return f"{sym}@kline_{iv}"
        if not kind.has_stream(self.market):
            raise ValueError(f"{self} has no WebSocket stream: it is polled over REST")
        if kind.is_continuous:
            return f"{sym}_{kind.value}@continuousKline_{iv}"
        if kind is Kind.MARK:
            return f"{sym}@markPriceKline_{iv}"
        return f"{sym}@indexPriceKline_{iv}"

    @property
    def push_period_ms(self) -> int:
        """How often the exchange pushes this stream."""
        if self.interval is Interval.S1:
            return 1000
        return self.market.push_period_ms

    def __str__(self) -> str:
        base = f"{self.market.value}:{self.symbol}:{self.interval.value}"
        return base if self.kind is Kind.TRADE else f"{base}:{self.kind.value}"

    def shard(self, count: int) -> int:
        """The shard (1 to `count`) holding this stream: `zlib.crc32` of its canonical spec
        (`str(key)`, UTF-8) modulo `count`, plus one (DESIGN.md, "Contracts": shards)."""
        return zlib.crc32(str(self).encode("utf-8")) % count + 1


# A candle as a row of the dataset, in CANDLE_COLUMNS order after `symbol`.
CandleRow = tuple[int, int, float, float, float, float, float, float, float, float, int]


class Candle(
    msgspec.Struct,
    gc=False,
    # Binance's names for these fields in a kline event's `k` object, so the wire decoder builds
    # its WireKline (a Candle) straight from a frame. REST rows are arrays: no names there.
    rename={
        "open_time": "t",
        "close_time": "T",
        "open": "o",
        "high": "h",
        "low": "l",
        "close": "c",
        "volume": "v",
        "quote_volume": "q",
        "taker_buy_volume": "V",
        "taker_buy_quote_volume": "Q",
        "trades": "n",
    },
):
    """One kline. Prices and volumes as floats, times as epoch milliseconds (UTC)."""

    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    taker_buy_volume: float
    taker_buy_quote_volume: float
    trades: int

    def as_row(self) -> CandleRow:
        """The candle in CANDLE_COLUMNS order (after `symbol`)."""
        return (
            self.open_time,
            self.close_time,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.quote_volume,
            self.taker_buy_volume,
            self.taker_buy_quote_volume,
            self.trades,
        )


# What the ledger, the sink and the charts take: a Candle or a subclass (the wire's WireKline).
CandleLike = Candle
