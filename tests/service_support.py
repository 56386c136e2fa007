"""Serving a recorder in tests: a runtime against the simulator with its service API on loopback,
and plain HTTP calls to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kline_tui.model import StreamKey
from kline_tui.retry import Backoff
from kline_tui.runtime import Runtime
from kline_tui.service.api import Service
from kline_tui.service.auth import Token

from .support import make_settings, wait_until

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USDM = ["usdm:BTCUSDT:1m", "usdm:ETHUSDT:1m"]


@dataclass
class Served:
    """A running recorder and its service."""

    runtime: Runtime
    service: Service
    url: str

    @property
    def hub(self):
        assert self.runtime.pipeline is not None
        return self.runtime.pipeline.hub


@contextlib.asynccontextmanager
async def serve(
    sim,
    data_dir: Path,
    watch: list[str] = USDM,
    *,
    start: bool = True,
    service: dict[str, Any] | None = None,
    keep_closed: int = 120,
    **settings: Any,
) -> AsyncIterator[Served]:
    """A runtime recording `watch` from the simulator into `data_dir`, its service on
    127.0.0.1:0 with the token TOKEN; started unless `start` is False. Stopped at the end."""
    settings.setdefault("history", 3)
    runtime = Runtime(
        make_settings(sim, data_dir, watch, **settings),
        keep_closed=keep_closed,
        backoff=Backoff(base=0.2, cap=1.0),
    )
    api = Service(runtime, "127.0.0.1", 0, token=Token(TOKEN, "env"), **(service or {}))
    url = await api.start()
    try:
        if start:
            await runtime.start()
        yield Served(runtime, api, url)
    finally:
        await api.stop()
        await runtime.stop()


async def call(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = AUTH,
    json: Any = None,
    data: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request: (status, the JSON body or the text, the headers)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=headers, json=json, data=data) as response,
    ):
        text = await response.text()
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = text
        return response.status, body, dict(response.headers)


async def live(served: Served, keys: list[StreamKey] | None = None, closed: int = 1) -> None:
    """Until each stream (all by default) is live and has taken `closed` candles live."""
    pipeline = served.runtime.pipeline
    assert pipeline is not None
    keys = list(pipeline.hub.streams) if keys is None else keys
    ledgers = pipeline.ledger.streams
    await wait_until(
        lambda: all(k in ledgers and ledgers[k].accepted_ws >= closed for k in keys),
        timeout=20,
        what="live streams",
    )
