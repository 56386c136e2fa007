"""Which symbols each market trades, from exchangeInfo, so unknown ones are refused up front.

Binance acknowledges a SUBSCRIBE to a symbol that does not exist and then sends nothing, forever:
the only way to tell a user their symbol is wrong is to check it before subscribing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from kline_tui.binance.rest import RestClient, SymbolInfo
from kline_tui.model import Market, StreamKey

__all__ = ["SymbolDirectory", "key_problem"]


class SymbolDirectory:
    """Caches each market's exchangeInfo for `ttl_s` and checks stream keys against it."""

    def __init__(self, rest: RestClient, ttl_s: float = 3600.0) -> None:
        self.rest = rest
        self.ttl_s = ttl_s
        self._symbols: dict[Market, tuple[float, dict[str, SymbolInfo]]] = {}

    async def symbols(self, market: Market) -> dict[str, SymbolInfo]:
        """The market's symbols (fetched at most once per ttl); raises RestError."""
        cached = self._symbols.get(market)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        symbols = await self.rest.exchange_info(market)
        self._symbols[market] = (time.monotonic(), symbols)
        return symbols

    def known(self, market: Market) -> dict[str, SymbolInfo] | None:
        """The cached symbols, if fetched already (for autocompletion)."""
        cached = self._symbols.get(market)
        return cached[1] if cached else None

    async def problems(self, keys: Iterable[StreamKey]) -> list[str]:
        """One sentence per key that must not be subscribed; empty when all are fine."""
        problems = []
        for key in keys:
            problem = key_problem(key, await self.symbols(key.market))
            if problem is not None:
                problems.append(problem)
        return problems


def key_problem(
    key: StreamKey, symbols: dict[str, SymbolInfo], *, trading: bool = True
) -> str | None:
    """Why `key` cannot be watched on a market listing `symbols`, or None if it can.

    Trade, mark and premium klines are keyed by a symbol, which must be listed and trading.
    Index klines are keyed by a pair: some listed symbol must have it. Continuous klines by a
    pair and a contract type: some trading symbol must have both (docs/binance-kline-kinds.md, 4).
    Without `trading` (history of a delisted symbol), being listed is enough.
    """
    market, kind = key.market.value, key.kind
    if not kind.keyed_by_pair:
        info = symbols.get(key.symbol)
        if info is None:
            return f"unknown symbol {key.symbol} on {market} (not in its exchangeInfo)"
        if trading and not info.tradable:
            return f"{key.symbol} on {market} is not trading (status {info.status})"
        return None
    with_pair = [i for i in symbols.values() if i.pair == key.symbol]
    if not with_pair:
        hint = " (index and continuous klines name a pair, e.g. BTCUSD, not a symbol)"
        return f"unknown pair {key.symbol} on {market} (not in its exchangeInfo){hint}"
    contract_type = kind.contract_type
    if contract_type is None:
        return None
    if not any(i.contract_type == contract_type and (i.tradable or not trading) for i in with_pair):
        status = "trading " if trading else ""
        return (
            f"no {status}{contract_type} contract of pair {key.symbol} on {market}, "
            f"so no {kind.value} klines"
        )
    return None
