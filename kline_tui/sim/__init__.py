"""The built-in Binance simulator: kline WebSockets and REST on loopback, with faults on request.

```python
async with Simulator(speed=60) as sim:
    sim.endpoints[Market.SPOT]  # Endpoints(ws="ws://127.0.0.1:...", rest="http://127.0.0.1:...")
```
Candles are a pure function of (market, symbol, interval, open time, kind): `candle_at` gives
what the simulator sends, `expected_candle` what a recorder should store, `stream_candle` the
same for a `StreamKey` of any kind (mark, index, premium, continuous contract). `sim.faults`
makes it misbehave, up to a hostile server (poisoned candles, floods, slow handshakes, escape
sequences): see `faults`.
"""

from kline_tui.sim.candles import (
    WireCandle,
    candle_at,
    expected_candle,
    forming_at,
    kind_source,
    price_at,
    stream_candle,
)
from kline_tui.sim.clock import SimClock
from kline_tui.sim.faults import HOSTILE_TEXT, Faults, MarketFaults
from kline_tui.sim.poison import POISON_KINDS, REST_POISON_KINDS
from kline_tui.sim.server import Simulator
from kline_tui.sim.stats import ConnStats, MarketStats
from kline_tui.sim.universe import SymbolInfo, contract_symbol, symbol_info, universe

__all__ = [
    "HOSTILE_TEXT",
    "POISON_KINDS",
    "REST_POISON_KINDS",
    "ConnStats",
    "Faults",
    "MarketFaults",
    "MarketStats",
    "SimClock",
    "Simulator",
    "SymbolInfo",
    "WireCandle",
    "candle_at",
    "contract_symbol",
    "expected_candle",
    "forming_at",
    "kind_source",
    "price_at",
    "stream_candle",
    "symbol_info",
    "universe",
]
