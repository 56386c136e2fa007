"""The simulated exchange's symbols: well-known majors with realistic prices, synthetic fillers.

Everything here is a pure function of its arguments, so `candles.py` can look a symbol up from
its name alone and stay pure. Synthetic symbols are decoded from their names (`S0042USDT`), which
is what lets `candle_at` work for any universe size without shared state.
"""

from __future__ import annotations

import calendar
import math
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from kline_tui.model import Market

__all__ = [
    "CONTRACT_TYPES",
    "DEFAULT_EXTRA_SYMBOLS",
    "SymbolInfo",
    "contract_symbol",
    "symbol_info",
    "universe",
]

DEFAULT_EXTRA_SYMBOLS = 2000

TRADING = "TRADING"
BREAK = "BREAK"


def _ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, 0, 0)) * 1000


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One tradable (or halted) symbol of one market, with what the candle model needs.

    Prices are whole ticks of `10**-price_decimals` and quantities whole lots of
    `10**-qty_decimals` (COIN-M: whole contracts). `wire_*_decimals` is how many decimals the
    exchange prints: spot prints every price and quantity with 8, futures with the symbol's own
    precision.
    """

    market: Market
    symbol: str
    base_asset: str
    quote_asset: str
    status: str
    pair: str
    price_decimals: int
    qty_decimals: int
    wire_price_decimals: int
    wire_qty_decimals: int
    quote_decimals: int  # decimals of q/Q (quote asset; COIN-M: base asset)
    base_price: float
    daily_vol: float  # typical relative daily move, drives the price noise amplitude
    trades_per_min: int
    units_per_trade: float  # average lots (COIN-M: contracts) per trade
    quiet: float  # 0 = always trades, 1 = often a candle without trades
    onboard_date: int  # ms; REST serves no candle opening before this
    price_seed: int  # shared by the same base asset on every market, so markets track each other
    flow_seed: int  # per market and symbol: volumes, trades, wicks
    basis: float  # log-price offset of this market against spot
    contract_size: int | None = None  # COIN-M: USD per contract
    contract_type: str | None = None  # futures: PERPETUAL, CURRENT_QUARTER, NEXT_QUARTER
    delivery_date: int | None = None
    synthetic: bool = False

    @property
    def trading(self) -> bool:
        """Whether the symbol trades (status TRADING); halted symbols push no kline events."""
        return self.status == TRADING

    @property
    def tick_size(self) -> str:
        """The price step as exchangeInfo prints it."""
        return _decimal_str(self.price_decimals, self.wire_price_decimals)

    @property
    def step_size(self) -> str:
        """The quantity step as exchangeInfo prints it."""
        return _decimal_str(self.qty_decimals, self.wire_qty_decimals)


def _decimal_str(decimals: int, wire_decimals: int) -> str:
    """`10**-decimals` printed with `wire_decimals` decimals, e.g. (2, 8) -> "0.01000000"."""
    shown = max(decimals, wire_decimals)
    if shown == 0:
        return "1"
    units = 10 ** (shown - decimals)
    return f"{units // 10**shown}.{units % 10**shown:0{shown}d}"


# base, price (USD), daily vol, spot USD/min, spot price/qty decimals, futures price/qty decimals.
_MAJORS: tuple[tuple[str, float, float, float, int, int, int, int], ...] = (
    ("BTC", 95_000.0, 0.025, 1_500_000, 2, 5, 1, 3),
    ("ETH", 3_400.0, 0.035, 800_000, 2, 4, 2, 3),
    ("BNB", 900.0, 0.030, 150_000, 2, 3, 2, 2),
    ("SOL", 200.0, 0.045, 300_000, 2, 3, 2, 2),
    ("XRP", 2.3, 0.045, 200_000, 4, 1, 4, 1),
    ("DOGE", 0.2, 0.055, 100_000, 5, 0, 5, 0),
    ("ADA", 0.7, 0.050, 60_000, 4, 1, 4, 0),
    ("TRX", 0.3, 0.030, 40_000, 4, 1, 5, 0),
    ("LINK", 22.0, 0.050, 50_000, 2, 2, 3, 2),
    ("AVAX", 35.0, 0.055, 40_000, 2, 2, 3, 0),
    ("DOT", 6.0, 0.050, 30_000, 3, 2, 3, 1),
    ("LTC", 110.0, 0.045, 40_000, 2, 3, 2, 3),
    ("BCH", 520.0, 0.045, 30_000, 1, 3, 2, 3),
    ("XLM", 0.4, 0.050, 20_000, 4, 0, 5, 0),
    ("UNI", 12.0, 0.055, 20_000, 3, 2, 3, 0),
    ("ATOM", 7.0, 0.050, 15_000, 3, 2, 3, 2),
    ("NEAR", 4.0, 0.060, 20_000, 3, 1, 3, 0),
    ("SUI", 4.0, 0.065, 60_000, 4, 1, 4, 1),
)
_MAJOR_BY_BASE = {row[0]: row for row in _MAJORS}

CONTRACT_TYPES = ("PERPETUAL", "CURRENT_QUARTER", "NEXT_QUARTER")
"""The futures contract types exchangeInfo lists and continuous klines are keyed by."""

# COIN-M delivery contracts: (base, yymmdd, contract type, listed).
_DELIVERIES = (
    ("BTC", "261225", "CURRENT_QUARTER", _ms(2026, 6, 26, 8)),
    ("ETH", "261225", "CURRENT_QUARTER", _ms(2026, 6, 26, 8)),
    ("BTC", "270326", "NEXT_QUARTER", _ms(2026, 9, 25, 8)),
)
# USD-M delivery contracts (`BTCUSDT_261225`, pair `BTCUSDT`), in the same shape.
_USDM_DELIVERIES = (
    ("BTC", "261225", "CURRENT_QUARTER", _ms(2026, 6, 26, 8)),
    ("BTC", "270326", "NEXT_QUARTER", _ms(2026, 9, 25, 8)),
)
_DELIVERIES_OF = {Market.USDM: _USDM_DELIVERIES, Market.COINM: _DELIVERIES}

# Futures trade more than spot (notional), COIN-M less.
_FLOW_SCALE = {Market.SPOT: 1.0, Market.USDM: 6.0, Market.COINM: 0.3}
_USD_PER_TRADE = {Market.SPOT: 800.0, Market.USDM: 2_500.0, Market.COINM: 3_000.0}
_BASIS = {Market.SPOT: 0.0, Market.USDM: 0.0002, Market.COINM: 0.0003}
_MAJOR_ONBOARD = {
    Market.SPOT: _ms(2018, 1, 1),
    Market.USDM: _ms(2019, 9, 8),
    Market.COINM: _ms(2020, 8, 10),
}

_SYNTH_RE = re.compile(r"([SB])(\d{4,})(USDT|USD_PERP)")


def _seed(text: str) -> int:
    # crc32 rather than hash(): str hashes are salted per process and the candles must be the
    # same in a test process and in a `python -m kline_tui.sim` process.
    return zlib.crc32(text.encode())


def _unit(seed: int, salt: int) -> float:
    """A deterministic uniform in [0, 1) from two ints."""
    h = (hash((seed, salt)) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    return (h >> 11) * (1.0 / (1 << 53))


def _quote_of(market: Market) -> str:
    return "USD" if market is Market.COINM else "USDT"


def _coinm_name(base: str, suffix: str = "PERP") -> str:
    return f"{base}USD_{suffix}"


def _make(
    market: Market,
    symbol: str,
    base: str,
    *,
    price: float,
    daily_vol: float,
    usd_per_min: float,
    price_decimals: int,
    qty_decimals: int,
    status: str,
    onboard: int,
    quiet: float,
    synthetic: bool,
    contract_type: str | None = None,
    delivery_date: int | None = None,
    basis: float | None = None,
) -> SymbolInfo:
    usd_per_trade = _USD_PER_TRADE[market] * (0.15 if synthetic else 1.0)
    trades_per_min = max(1, round(usd_per_min / usd_per_trade))
    contract_size = None
    if market is Market.COINM:
        contract_size = 100 if base == "BTC" else 10
        qty_decimals = 0
        units_per_trade = max(1.0, usd_per_trade / contract_size)
    else:
        units_per_trade = max(1.0, usd_per_trade / price * 10**qty_decimals)
    spot = market is Market.SPOT
    return SymbolInfo(
        market=market,
        symbol=symbol,
        base_asset=base,
        quote_asset=_quote_of(market),
        status=status,
        pair=f"{base}{_quote_of(market)}",
        price_decimals=price_decimals,
        qty_decimals=qty_decimals,
        wire_price_decimals=8 if spot else price_decimals,
        wire_qty_decimals=8 if spot else qty_decimals,
        quote_decimals={Market.SPOT: 8, Market.USDM: 5, Market.COINM: 8}[market],
        base_price=price,
        daily_vol=daily_vol,
        trades_per_min=trades_per_min,
        units_per_trade=units_per_trade,
        quiet=quiet,
        onboard_date=onboard,
        price_seed=_seed(base),
        flow_seed=_seed(f"{market.value}:{symbol}"),
        basis=_BASIS[market] if basis is None else basis,
        contract_size=contract_size,
        contract_type=contract_type if market is not Market.SPOT else None,
        delivery_date=delivery_date,
        synthetic=synthetic,
    )


def _major(market: Market, base: str) -> SymbolInfo:
    _, price, vol, usd_min, spd, sqd, fpd, fqd = _MAJOR_BY_BASE[base]
    futures = market is not Market.SPOT
    return _make(
        market,
        _coinm_name(base) if market is Market.COINM else f"{base}USDT",
        base,
        price=price,
        daily_vol=vol,
        usd_per_min=usd_min * _FLOW_SCALE[market],
        price_decimals=fpd if futures else spd,
        qty_decimals=fqd if futures else sqd,
        status=TRADING,
        onboard=_MAJOR_ONBOARD[market],
        quiet=0.01 if usd_min >= 100_000 else 0.03,
        synthetic=False,
        contract_type="PERPETUAL" if futures else None,
        delivery_date=_ms(2100, 12, 25, 8) if futures else None,
    )


def _delivery_name(market: Market, base: str, yymmdd: str) -> str:
    return _coinm_name(base, yymmdd) if market is Market.COINM else f"{base}USDT_{yymmdd}"


def _delivery(
    market: Market, base: str, yymmdd: str, contract_type: str, listed: int
) -> SymbolInfo:
    _, price, vol, usd_min, _spd, _sqd, fpd, fqd = _MAJOR_BY_BASE[base]
    year, month, day = 2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    return _make(
        market,
        _delivery_name(market, base, yymmdd),
        base,
        price=price,
        daily_vol=vol,
        usd_per_min=usd_min * (0.05 if market is Market.COINM else 0.02),
        price_decimals=fpd,
        qty_decimals=fqd,
        status=TRADING,
        onboard=listed,
        quiet=0.2,
        synthetic=False,
        contract_type=contract_type,
        delivery_date=_ms(year, month, day, 8),
        basis=0.004 if contract_type == "CURRENT_QUARTER" else 0.012,  # contango
    )


def _synthetic(market: Market, letter: str, index: int) -> SymbolInfo:
    """A synthetic symbol decoded from its letter (S trading, B halted) and number."""
    base = f"{letter}{index:04d}"
    seed = _seed(f"synthetic:{base}")
    # Log-uniform prices from 0.0001 to 500 and flows from 200 to 20k USD a minute: a long tail of
    # small, often illiquid coins, like most of a real exchange's listing.
    price = 10 ** (-4 + _unit(seed, 1) * math.log10(5e6))
    usd_per_min = 10 ** (2.3 + _unit(seed, 2) * 2.0)
    magnitude = math.floor(math.log10(price))
    price_decimals = min(8, max(0, 4 - magnitude))
    if market is Market.SPOT:
        qty_decimals = min(8, max(0, magnitude + 1))
    else:
        qty_decimals = min(3, max(0, magnitude - 1))
    trades = usd_per_min / (_USD_PER_TRADE[market] * 0.15)
    quiet = min(1.0, max(0.1, 1.0 - math.log10(max(trades, 1.0)) / 2.5))
    onboard = _ms(2019, 1, 1) + int(_unit(seed, 3) * (_ms(2021, 6, 1) - _ms(2019, 1, 1)))
    onboard -= onboard % 86_400_000
    return _make(
        market,
        _coinm_name(base) if market is Market.COINM else f"{base}USDT",
        base,
        price=price,
        daily_vol=0.04 + 0.06 * _unit(seed, 4),
        usd_per_min=usd_per_min,
        price_decimals=price_decimals,
        qty_decimals=qty_decimals,
        status=TRADING if letter == "S" else BREAK,
        onboard=onboard,
        quiet=quiet,
        synthetic=True,
        contract_type="PERPETUAL" if market is not Market.SPOT else None,
        delivery_date=_ms(2100, 12, 25, 8) if market is not Market.SPOT else None,
    )


def _synthetic_name(market: Market, letter: str, index: int) -> str:
    base = f"{letter}{index:04d}"
    return _coinm_name(base) if market is Market.COINM else f"{base}USDT"


@lru_cache(maxsize=16_384)
def symbol_info(market: Market, symbol: str) -> SymbolInfo | None:
    """The symbol's info decoded from its name alone, or None if the exchange has no such symbol.

    Knows every major, every delivery contract and every synthetic name (`S<n>` trading,
    `B<n>` halted) whatever the universe size; `universe()` decides which of them are listed.
    """
    market = Market(market)
    m = _SYNTH_RE.fullmatch(symbol)
    if m:
        letter, digits, suffix = m.groups()
        if (suffix == "USD_PERP") != (market is Market.COINM) or int(digits) == 0:
            return None
        if len(digits) > 4 and digits.startswith("0"):
            return None  # one spelling per number
        return _synthetic(market, letter, int(digits))
    for base, yymmdd, contract_type, listed in _DELIVERIES_OF.get(market, ()):
        if symbol == _delivery_name(market, base, yymmdd):
            return _delivery(market, base, yymmdd, contract_type, listed)
    if market is Market.COINM:
        if symbol.endswith("USD_PERP") and symbol[:-8] in _MAJOR_BY_BASE:
            return _major(market, symbol[:-8])
        return None
    if symbol.endswith("USDT") and symbol[:-4] in _MAJOR_BY_BASE:
        return _major(market, symbol[:-4])
    return None


# Halted symbols per market: listed in exchangeInfo with status BREAK, never push klines.
_BREAK_COUNT = {Market.SPOT: 2, Market.USDM: 2, Market.COINM: 1}


@lru_cache(maxsize=16)
def _listing(market: Market, extra_symbols: int) -> tuple[str, ...]:
    names = [_major(market, row[0]).symbol for row in _MAJORS]
    names += [_delivery_name(market, b, ymd) for b, ymd, _, _ in _DELIVERIES_OF.get(market, ())]
    names += [_synthetic_name(market, "B", i) for i in range(1, _BREAK_COUNT[market] + 1)]
    names += [_synthetic_name(market, "S", i) for i in range(1, extra_symbols + 1)]
    return tuple(names)


def universe(market: Market, extra_symbols: int = DEFAULT_EXTRA_SYMBOLS) -> dict[str, SymbolInfo]:
    """Every symbol the market lists, by name: the majors, COIN-M delivery contracts, one or two
    halted (BREAK) symbols and `extra_symbols` synthetic ones (`S0001USDT`..., COIN-M
    `S0001USD_PERP`...). A fresh dict each call; the infos themselves are shared and frozen."""
    market = Market(market)
    if extra_symbols < 0:
        raise ValueError("extra_symbols must be >= 0")
    return {name: _listed_info(market, name) for name in _listing(market, extra_symbols)}


def _listed_info(market: Market, name: str) -> SymbolInfo:
    info = symbol_info(market, name)
    assert info is not None, f"{name}: every listed name decodes to an info"
    return info


def contract_symbol(market: Market, pair: str, contract_type: str) -> str | None:
    """The contract of `pair` with that `contract_type` (`BTCUSD`, `PERPETUAL` -> `BTCUSD_PERP`;
    `BTCUSDT`, `CURRENT_QUARTER` -> `BTCUSDT_261225`), or None: what a continuous kline series
    follows. Decided from names alone, like `symbol_info`; whether it is listed is `universe`'s
    business.

    The simulator models no quarterly roll: the contract of a type holds it at every time (its
    continuous series starts at that contract's onboard date).
    """
    market = Market(market)
    if market is Market.SPOT or contract_type not in CONTRACT_TYPES:
        return None
    if contract_type == "PERPETUAL":
        candidates = [f"{pair}_PERP" if market is Market.COINM else pair]
    else:
        candidates = [
            _delivery_name(market, base, yymmdd)
            for base, yymmdd, kind, _ in _DELIVERIES_OF[market]
            if kind == contract_type
        ]
    for name in candidates:
        info = symbol_info(market, name)
        if info is not None and info.pair == pair and info.contract_type == contract_type:
            return name
    return None
