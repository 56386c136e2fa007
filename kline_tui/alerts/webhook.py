"""The webhook: each firing POSTed as JSON to the URL of `[notify] webhook`, off the pipeline.

`send` only queues (bounded: a receiver that is down for hours costs at most MAX_QUEUED
bodies, the oldest dropped and counted); `run`, a supervised task, posts them one by one, each
with a timeout, tried again on a timeout, a refused connection or a 5xx with a growing pause.
A 4xx is the receiver refusing the body: not tried again. Every failure is told through `warn`
(the event log), never raised into the pipeline.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import aiohttp
import msgspec

from kline_tui.alerts.rules import Firing
from kline_tui.safe_text import safe_text

__all__ = ["MAX_QUEUED", "WebhookSender"]

MAX_QUEUED = 1000
_RETRY_FIRST_S = 0.5
_RETRY_CAP_S = 30.0


class WebhookSender:
    """Posts firings to one URL; `run` must be running (the runtime's supervisor starts it)."""

    def __init__(
        self,
        url: str,
        warn: Callable[[str], None],
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        retry_first_s: float = _RETRY_FIRST_S,
    ) -> None:
        self.url = url
        self.warn = warn
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_first_s = retry_first_s
        self.sent = 0
        self.failed = 0  # firings given up on
        self.dropped = 0  # firings dropped because the queue was full
        self._queue: collections.deque[Firing] = collections.deque()
        self._wake = asyncio.Event()
        self._posting = asyncio.Lock()  # `run` and `drain` never post the same firing twice

    def send(self, firing: Firing) -> None:
        """Queue a firing (never blocks)."""
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100, 1000):
                self.warn(f"webhook: {self.dropped} alerts dropped, the receiver is not keeping up")
        self._queue.append(firing)
        self._wake.set()

    async def run(self) -> None:
        """Post what is queued, forever (cancel to stop)."""
        async with self._session() as session:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._post_first(session)

    async def drain(self, timeout_s: float) -> None:
        """Post what is still queued, for at most `timeout_s` (a stop's last chance, after the
        stop has cancelled `run`)."""
        if not self._queue:
            return
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session() as session:
                    while self._queue:
                        await self._post_first(session)
        except TimeoutError:
            self.warn(f"webhook: {len(self._queue)} alerts not sent before stopping")

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def _post_first(self, session: aiohttp.ClientSession) -> None:
        async with self._posting:
            if not self._queue:
                return
            firing = self._queue[0]
            await self._post(session, firing)
            if self._queue and self._queue[0] is firing:
                self._queue.popleft()

    async def _post(self, session: aiohttp.ClientSession, firing: Firing) -> None:
        body = msgspec.json.encode(firing.body())
        headers = {"Content-Type": "application/json", "Idempotency-Key": firing.id}
        delay = self.retry_first_s
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_CAP_S)
            try:
                async with session.post(self.url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status < 400:
                        self.sent += 1
                        return
                    problem = f"HTTP {response.status}"
                    if response.status < 500:
                        break  # the receiver refuses this body: trying again will not help
            except TimeoutError:
                problem = f"no answer within {self.timeout_s:g} s"
            except (aiohttp.ClientError, OSError) as exc:
                problem = safe_text(str(exc) or type(exc).__name__, 200)
        self.failed += 1
        self.warn(f"webhook: {firing.message} not delivered ({problem})")
