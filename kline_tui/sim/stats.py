"""What the simulator saw and did, per market and per connection, for tests to assert on."""

from __future__ import annotations

import collections
import time
from collections import deque
from dataclasses import dataclass, field

from kline_tui.model import Market

__all__ = ["ConnStats", "MarketStats"]


@dataclass(eq=False)
class ConnStats:
    """One WebSocket connection's record. Times are `time.monotonic()` seconds."""

    id: int
    market: Market
    path: str  # path and query as requested, e.g. "/stream?streams=btcusdt@kline_1m"
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    close_reason: str | None = None
    combined: bool = False
    subscriptions: set[str] = field(default_factory=set)  # current
    control: list[tuple[float, str, list]] = field(default_factory=list)  # (time, method, params)
    incoming_times: deque[float] = field(default_factory=deque)  # the last second's messages
    incoming_messages: int = 0
    max_incoming_per_s: int = 0
    rate_violations: int = 0
    frames_sent: int = 0
    kline_events_sent: int = 0
    closed_events_sent: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    poison_frames_sent: int = 0
    flood_pings_sent: int = 0
    stray_replies_sent: int = 0
    client_closed_at: float | None = None  # when the client's close frame arrived
    frames_after_client_close: int = 0  # sent anyway: the hostile server ignores that close

    @property
    def open(self) -> bool:
        """Whether the connection is still open."""
        return self.closed_at is None

    def count_incoming(self, now: float) -> int:
        """Record one incoming message; return how many arrived in the sliding second up to now."""
        window = self.incoming_times
        window.append(now)
        while window[0] <= now - 1.0:
            window.popleft()
        self.incoming_messages += 1
        self.max_incoming_per_s = max(self.max_incoming_per_s, len(window))
        return len(window)


@dataclass(eq=False)
class MarketStats:
    """Counters of one market, WebSocket and REST."""

    market: Market
    connections_opened: int = 0
    handshakes_refused: int = 0
    connections: list[ConnStats] = field(default_factory=list)
    subscribe_messages: int = 0
    unsubscribe_messages: int = 0
    rate_violations: int = 0
    kline_events_sent: int = 0
    closed_events_sent: int = 0
    malformed_frames_sent: int = 0
    poison_frames_sent: int = 0
    sized_frames_sent: int = 0
    flood_pings_sent: int = 0
    stray_replies_sent: int = 0
    handshakes_delayed: int = 0
    rest_calls: int = 0
    rest_kline_calls: int = 0  # calls of the klines path, answered or refused
    # The same, by the symbol asked for (a bounded set: the market's universe and a few typos).
    kline_calls_by_symbol: collections.Counter[str] = field(default_factory=collections.Counter)
    poison_rows_sent: int = 0
    rest_429: int = 0
    rest_418: int = 0
    max_used_weight: int = 0

    def open_connections(self) -> list[ConnStats]:
        """Records of the connections that are open now."""
        return [c for c in self.connections if c.open]
