"""The simulator: three markets, each one aiohttp application on its own loopback port."""

from __future__ import annotations

import random
from collections.abc import Iterable

from aiohttp import web

from kline_tui.binance.markets import MARKETS, Endpoints
from kline_tui.model import Market
from kline_tui.sim.clock import SimClock
from kline_tui.sim.faults import Faults
from kline_tui.sim.rest import MarketRest, WeightPool
from kline_tui.sim.stats import MarketStats
from kline_tui.sim.universe import DEFAULT_EXTRA_SYMBOLS, SymbolInfo, universe
from kline_tui.sim.ws import Connection, MarketWs

__all__ = ["Simulator"]


class Simulator:
    """A Binance on loopback: WebSocket kline streams and REST for spot, USD-M and COIN-M.

    Exchange time comes from `clock` (fast and offset if asked); pushes and rate limits run on
    real time. `faults` switches misbehaviour at runtime and `stats` records what happened.
    Use `await start()` / `await stop()` or `async with Simulator(...) as sim:`.
    """

    def __init__(
        self,
        speed: float = 1.0,
        offset_ms: int = 0,
        host: str = "127.0.0.1",
        ports: dict[Market, int] | None = None,
        extra_symbols: int = DEFAULT_EXTRA_SYMBOLS,
        ping_interval_s: float | None = None,
        seed: int | None = None,
        start_ms: int | None = None,
    ) -> None:
        self.clock = SimClock(speed, offset_ms, start_ms)
        self.host = host
        self._wanted_ports = {m: int((ports or {}).get(m, 0)) for m in Market}
        self.symbols: dict[Market, dict[str, SymbolInfo]] = {
            m: universe(m, extra_symbols) for m in Market
        }
        self.stats: dict[Market, MarketStats] = {m: MarketStats(m) for m in Market}
        self.faults = Faults(self._open_connections)
        # Markets that share a weight budget share one pool object (USD-M and COIN-M).
        self.weights: dict[str, WeightPool] = {}
        for m in Market:
            spec = MARKETS[m]
            self.weights.setdefault(spec.weight_pool, WeightPool(spec.weight_budget))
        # Fault dice only; candles never use randomness.
        self.rng = random.Random(seed)
        self._ws = {
            m: MarketWs(
                m,
                self.clock,
                self.faults,
                self.stats[m],
                self.symbols[m],
                MARKETS[m].ping_period_s if ping_interval_s is None else ping_interval_s,
                self.rng,
            )
            for m in Market
        }
        self._runners: dict[Market, web.AppRunner] = {}
        self.ports: dict[Market, int] = {}

    def _open_connections(self, market: Market) -> Iterable[Connection]:
        return list(self._ws[market].live)

    @property
    def endpoints(self) -> dict[Market, Endpoints]:
        """Where each market listens; pass these to the client's config."""
        if not self.ports:
            raise RuntimeError("the simulator is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        result = {}
        for m, port in self.ports.items():
            ws = f"ws://{host}:{port}" + ("/market" if m is Market.USDM else "")
            result[m] = Endpoints(ws=ws, rest=f"http://{host}:{port}")
        return result

    async def start(self) -> None:
        """Bind the three ports in the running event loop."""
        if self._runners:
            raise RuntimeError("the simulator is already started")
        try:
            for m in Market:
                app = web.Application()
                self._ws[m].add_routes(app)
                MarketRest(
                    m,
                    self.clock,
                    self.faults,
                    self.stats[m],
                    self.symbols[m],
                    self.weights[MARKETS[m].weight_pool],
                    self.rng,
                ).add_routes(app)
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
                await runner.setup()
                self._runners[m] = runner
                site = web.TCPSite(runner, self.host, self._wanted_ports[m])
                await site.start()
                self.ports[m] = runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every connection (close frame 1001) and release the ports."""
        for m, runner in list(self._runners.items()):
            await self._ws[m].close_all()
            await runner.cleanup()
        self._runners.clear()
        self.ports.clear()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"Simulator(clock={self.clock!r}, ports={self.ports})"
