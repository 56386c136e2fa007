"""What each Binance market is: endpoints, REST paths and the limits a client must respect.

The numbers come from ../shared/binance-protocol.md. Endpoints are defaults a user overrides in
the config (`[endpoints.<market>]`) to reach a testnet, a mirror or the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from kline_tui.model import Kind, Market

__all__ = [
    "DEFAULT_ENDPOINTS",
    "MARKETS",
    "Endpoints",
    "MarketSpec",
    "kind_params",
    "kline_weight",
]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a market lives: `ws` is the base under which `/ws/...` and `/stream?...` are served."""

    ws: str
    rest: str


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """A market's protocol facts."""

    market: Market
    rest_prefix: str  # "/api/v3", "/fapi/v1", "/dapi/v1"
    klines_limit: int  # most rows one klines request returns
    control_rate: int  # incoming messages per second per connection before the server cuts it
    streams_per_connection: int
    ping_period_s: float  # how often the server pings
    weight_budget: int  # request weight per minute
    weight_pool: str  # markets that share one weight budget share a pool name
    exchange_info_weight: int
    max_window_ms: int | None  # longest startTime..endTime span of one klines request

    @property
    def klines_path(self) -> str:
        return f"{self.rest_prefix}/klines"

    def kind_klines_path(self, kind: Kind) -> str:
        """The REST path of a kind's klines: `/fapi/v1/markPriceKlines` for USD-M mark klines
        (docs/binance-kline-kinds.md, 1b). All of them share the trade klines' weight table."""
        return f"{self.rest_prefix}/{_KIND_ENDPOINT[kind]}"

    @property
    def exchange_info_path(self) -> str:
        return f"{self.rest_prefix}/exchangeInfo"

    @property
    def time_path(self) -> str:
        return f"{self.rest_prefix}/time"


# The REST endpoint of each kind, under the market's prefix.
_KIND_ENDPOINT = {
    Kind.TRADE: "klines",
    Kind.MARK: "markPriceKlines",
    Kind.INDEX: "indexPriceKlines",
    Kind.PREMIUM: "premiumIndexKlines",
    Kind.PERPETUAL: "continuousKlines",
    Kind.CURRENT_QUARTER: "continuousKlines",
    Kind.NEXT_QUARTER: "continuousKlines",
}


def kind_params(kind: Kind, symbol: str) -> dict[str, str]:
    """How a klines request names its series: `symbol` (trade, mark, premium), `pair` (index),
    or `pair` and `contractType` (continuous); docs/binance-kline-kinds.md, 1b."""
    contract_type = kind.contract_type
    if contract_type is not None:
        return {"pair": symbol, "contractType": contract_type}
    if kind is Kind.INDEX:
        return {"pair": symbol}
    return {"symbol": symbol}


MARKETS: dict[Market, MarketSpec] = {
    Market.SPOT: MarketSpec(
        market=Market.SPOT,
        rest_prefix="/api/v3",
        klines_limit=1000,
        control_rate=5,
        streams_per_connection=1024,
        ping_period_s=20.0,
        weight_budget=6000,
        weight_pool="spot",
        exchange_info_weight=20,
        max_window_ms=None,
    ),
    Market.USDM: MarketSpec(
        market=Market.USDM,
        rest_prefix="/fapi/v1",
        klines_limit=1500,
        control_rate=10,
        streams_per_connection=1024,
        ping_period_s=180.0,
        weight_budget=2400,
        weight_pool="futures",
        exchange_info_weight=1,
        max_window_ms=None,
    ),
    Market.COINM: MarketSpec(
        market=Market.COINM,
        rest_prefix="/dapi/v1",
        klines_limit=1500,
        control_rate=10,
        streams_per_connection=1024,
        ping_period_s=180.0,
        weight_budget=2400,
        weight_pool="futures",
        exchange_info_weight=1,
        max_window_ms=200 * 24 * 3600 * 1000,
    ),
}

DEFAULT_ENDPOINTS: dict[Market, Endpoints] = {
    Market.SPOT: Endpoints("wss://stream.binance.com:9443", "https://api.binance.com"),
    # USD-M klines are served only under /market: the unrouted path acknowledges and stays silent.
    Market.USDM: Endpoints("wss://fstream.binance.com/market", "https://fapi.binance.com"),
    Market.COINM: Endpoints("wss://dstream.binance.com", "https://dapi.binance.com"),
}


def kline_weight(market: Market, limit: int) -> int:
    """Request weight of one klines call with `limit` rows."""
    if market is Market.SPOT:
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10
