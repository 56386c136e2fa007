"""Which symbols each market trades, from exchangeInfo, so unknown ones are refused up front.

Binance acknowledges a SUBSCRIBE to a symbol that does not exist and then sends nothing, forever:
the only way to tell a user their symbol is wrong is to check it before subscribing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from kline_tui.binance.rest import RestClient, SymbolInfo
from kline_tui.model import Market, StreamKey

__all__ = ["SymbolDirectory"]


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
            info = (await self.symbols(key.market)).get(key.symbol)
            if info is None:
                problems.append(
                    f"unknown symbol {key.symbol} on {key.market.value} (not in its exchangeInfo)"
                )
            elif not info.tradable:
                problems.append(
                    f"{key.symbol} on {key.market.value} is not trading (status {info.status})"
                )
        return problems
