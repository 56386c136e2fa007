"""The recorder as the UI sees it: one in this process, or one it is attached to over the API.

The app draws and acts through `Recorder` and never asks which it has:

- `LocalRecorder` runs the runtime in the app's own event loop (plain `kline-tui`): quitting
  stops recording, after writing everything buffered.
- `AttachedRecorder` reads a running recorder through its service API (`kline-tui attach`, or
  plain `kline-tui` on a data folder a recorder already uses): the same streams, connections,
  sink counters and events, kept by the events socket; the keys act on that recorder, and
  quitting only closes the UI while the recorder goes on.

Both hand the widgets the core's own types (`StreamState`, `ConnectionStatus`, `SinkStats`), so
no widget has two ways to draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import polars as pl

from kline_tui.alerts.rules import Firing
from kline_tui.binance.connection import ConnectionStatus
from kline_tui.config import AlertConfig, Settings
from kline_tui.model import Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import StreamState
from kline_tui.recorder.sink import SinkStats
from kline_tui.runtime import EXIT_INTERRUPTED, EXIT_OK, Runtime
from kline_tui.service.candles import MAX_CANDLES_PAGE, HistoryRow
from kline_tui.service.client import RemoteError
from kline_tui.service.feed import alert_row
from kline_tui.service.protocol import AlertRow
from kline_tui.store.candle_pages import MAX_PAGE, CandlePage, read_page
from kline_tui.store.dataset import Dataset, open_dataset
from kline_tui.store.resample import CANDLES_SCHEMA

if TYPE_CHECKING:
    from kline_tui.service.client import RemoteRecorder

__all__ = ["AttachedRecorder", "LocalRecorder", "Recorder"]

log = logging.getLogger("kline_tui")


class Recorder(Protocol):
    """What the UI reads from a recorder and asks of it."""

    events: EventLog
    streams: dict[StreamKey, StreamState]  # the live rows; the same dict for the app's life

    @property
    def running(self) -> bool:
        """Started and answering: the keys that act on the recorder work."""
        ...

    @property
    def recording(self) -> bool: ...

    @property
    def sink_stats(self) -> SinkStats | None: ...

    @property
    def data_dir(self) -> str: ...

    @property
    def flush_rows(self) -> int: ...

    @property
    def flush_age_s(self) -> float: ...

    @property
    def mode(self) -> str:
        """A few words for the status bar: "demo 60x", "attached to ...", "" for a plain run."""
        ...

    @property
    def detaches(self) -> bool:
        """Quitting leaves the recorder running (attached), rather than stopping it."""
        ...

    @property
    def unreachable(self) -> str | None:
        """Why the recorder cannot be reached and when it is tried again; None while it can."""
        ...

    @property
    def writes_into(self) -> str:
        """What the rows are written into, in words: "Parquet", "a Delta table"."""
        ...

    @property
    def stop_requested(self) -> bool: ...

    @property
    def exit_code(self) -> int: ...

    def connection_status(self) -> list[ConnectionStatus]: ...

    async def start(self, keys: list[StreamKey]) -> list[StreamKey]:
        """Start (or attach); returns the streams watched. Returns once running, or once a stop
        was asked for meanwhile."""
        ...

    async def stop(self) -> None:
        """Stop recording (local) or close the connection (attached); idempotent."""
        ...

    async def add(self, keys: list[StreamKey]) -> list[StreamKey]: ...

    async def remove(self, keys: list[StreamKey]) -> list[StreamKey]: ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def flush(self) -> int: ...

    async def symbols(self, market: Market) -> list[str]:
        """The market's tradable symbols, for the add dialog."""
        ...

    async def load_history(self, keys: list[StreamKey], count: int) -> None:
        """Fill the streams' recent closed candles (for charts), where the recorder can."""
        ...

    async def read_candles(
        self,
        key: StreamKey,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1500,
        newest_first: bool = False,
    ) -> CandlePage:
        """Candles of `key` the dataset holds opening in [start_ms, end_ms), at most `limit`:
        the oldest, or the newest when `newest_first` (see `store.candle_pages.read_page`).
        Read off the event loop. Raises OSError, RemoteError or a Polars error when the dataset
        cannot be read."""
        ...

    def summary(self) -> list[tuple[int, str]]:
        """Lines to print when the UI has closed, as (logging level, line)."""
        ...

    def alert_rows(self) -> list[AlertRow]:
        """The recorder's alerts and what they did, in the order they were made."""
        ...

    def on_alert(self, callback: Callable[[Firing], None]) -> None:
        """Call `callback` (on the app's loop) with each firing from now on."""
        ...

    async def add_alert(self, config: AlertConfig) -> None:
        """Add an alert, kept in the recorder's config; raises ValueError (one sentence) when it
        cannot work."""
        ...

    async def mute_alert(self, alert_id: str, muted: bool) -> None: ...

    async def delete_alert(self, alert_id: str) -> None: ...

    def report(self, what: str, exc: BaseException) -> None:
        """Log an unexpected failure of the UI's own (a repaint) once, with its traceback."""
        ...

    def handle_signals(
        self,
        first: Callable[[], None] | None = None,
        *,
        signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    ) -> None: ...


class LocalRecorder:
    """The runtime, in the app's own loop: the UI is the recorder's face and its life."""

    detaches = False
    unreachable = None

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.events = runtime.events
        self.streams: dict[StreamKey, StreamState] = {}
        self._dataset: Dataset | None = None

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def running(self) -> bool:
        return self.runtime.started and self.runtime.pipeline is not None

    @property
    def writes_into(self) -> str:
        pipeline = self.runtime.pipeline
        delta = pipeline is not None and pipeline.dataset.format == "delta"
        return "a Delta table" if delta else "Parquet"

    @property
    def recording(self) -> bool:
        return self.runtime.recording

    @property
    def sink_stats(self) -> SinkStats | None:
        pipeline = self.runtime.pipeline
        return pipeline.sink.stats if pipeline is not None else None

    @property
    def data_dir(self) -> str:
        return self.settings.location

    @property
    def flush_rows(self) -> int:
        return self.settings.flush_rows

    @property
    def flush_age_s(self) -> float:
        return self.settings.flush_age_s

    @property
    def mode(self) -> str:
        speed = self.runtime.demo_speed
        return "" if speed is None else f"demo {speed:g}x"

    @property
    def stop_requested(self) -> bool:
        return self.runtime.stop_requested

    @property
    def exit_code(self) -> int:
        return self.runtime.exit_code

    def connection_status(self) -> list[ConnectionStatus]:
        pipeline = self.runtime.pipeline
        return pipeline.hub.connection_status() if pipeline is not None else []

    async def start(self, keys: list[StreamKey]) -> list[StreamKey]:
        keys = await self.runtime.start(keys, leave_out_refused=True)
        pipeline = self.runtime.pipeline
        if self.runtime.started and pipeline is not None:
            self.streams = pipeline.hub.streams
        return keys

    async def stop(self) -> None:
        await self.runtime.stop()

    async def add(self, keys: list[StreamKey]) -> list[StreamKey]:
        return await self.runtime.add(keys)

    async def remove(self, keys: list[StreamKey]) -> list[StreamKey]:
        return self.runtime.remove(keys)

    async def pause(self) -> None:
        self.runtime.pause()

    async def resume(self) -> None:
        self.runtime.resume()

    async def flush(self) -> int:
        return await self.runtime.flush()

    async def symbols(self, market: Market) -> list[str]:
        pipeline = self.runtime.pipeline
        assert pipeline is not None
        symbols = await pipeline.symbols.symbols(market)
        return [name for name, info in symbols.items() if info.tradable]

    async def load_history(self, keys: list[StreamKey], count: int) -> None:
        pipeline = self.runtime.pipeline
        if pipeline is not None and self.running:
            await pipeline.seed_history(keys, count=count)

    async def read_candles(
        self,
        key: StreamKey,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1500,
        newest_first: bool = False,
    ) -> CandlePage:
        pipeline = self.runtime.pipeline
        if pipeline is not None:
            dataset = pipeline.dataset
        else:  # not started (or stopped): the dataset is read all the same
            if self._dataset is None:
                self._dataset = open_dataset(self.settings.storage)
            dataset = self._dataset
        return await asyncio.to_thread(
            read_page,
            dataset,
            key,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=min(limit, MAX_PAGE),
            newest_first=newest_first,
        )

    def summary(self) -> list[tuple[int, str]]:
        return self.runtime.summary()

    def alert_rows(self) -> list[AlertRow]:
        return [alert_row(alert) for alert in self.runtime.alerts.alerts.values()]

    def on_alert(self, callback: Callable[[Firing], None]) -> None:
        self.runtime.alerts.listeners.append(callback)

    async def add_alert(self, config: AlertConfig) -> None:
        self.runtime.add_alert(config)

    async def mute_alert(self, alert_id: str, muted: bool) -> None:
        self.runtime.mute_alert(alert_id, muted)

    async def delete_alert(self, alert_id: str) -> None:
        self.runtime.remove_alert(alert_id)

    def report(self, what: str, exc: BaseException) -> None:
        self.runtime.supervisor.report(what, exc)

    def handle_signals(
        self,
        first: Callable[[], None] | None = None,
        *,
        signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        self.runtime.handle_signals(first, signals=signals)


class AttachedRecorder:
    """A recorder in another process, read and steered through its service API."""

    detaches = True

    def __init__(
        self,
        client: RemoteRecorder,
        url: str,
        settings: Settings,
        *,
        add_on_attach: list[StreamKey] | None = None,
    ) -> None:
        self.client = client
        self.url = url
        self.settings = settings
        self.add_on_attach = add_on_attach or []  # streams named on the command line
        self.events = client.events
        self.streams = client.streams
        self._task: asyncio.Task[None] | None = None
        self._stop_requested = False
        self._reported: set[str] = set()

    @property
    def running(self) -> bool:
        return self.client.connected

    writes_into = "its dataset"

    @property
    def recording(self) -> bool:
        return self.client.recording

    @property
    def sink_stats(self) -> SinkStats | None:
        return self.client.sink if self.client.connected or self.client.sink.flushes else None

    @property
    def data_dir(self) -> str:
        return self.client.server.data_dir if self.client.server else ""

    @property
    def flush_rows(self) -> int:
        server = self.client.server
        return server.flush_rows if server else self.settings.flush_rows

    @property
    def flush_age_s(self) -> float:
        server = self.client.server
        return server.flush_age_s if server else self.settings.flush_age_s

    @property
    def mode(self) -> str:
        if self.client.connected:
            server = self.client.server
            demo = f", {server.demo}" if server is not None and server.demo else ""
            return f"attached {self.url}{demo}"
        return f"unreachable {self.url}"

    @property
    def unreachable(self) -> str | None:
        client = self.client
        if client.connected:
            return None
        retry = client.next_attempt_at
        if retry is None:
            when = "trying now"
        else:
            when = f"next try in {max(0.0, retry - time.monotonic()):.0f} s"
        return f"{when} ({client.last_error or 'connecting to ' + self.url})"

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @property
    def exit_code(self) -> int:
        return EXIT_OK

    def connection_status(self) -> list[ConnectionStatus]:
        return self.client.connections

    async def start(self, keys: list[StreamKey]) -> list[StreamKey]:
        """Connect (and keep reconnecting in the background); returns once the first snapshot
        arrived, or at once when the recorder cannot be reached yet (the UI says so and the
        client goes on trying)."""
        self._task = asyncio.ensure_future(self.client.run())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.client.wait_connected()
        if self.add_on_attach and self.client.connected:
            await self.add([k for k in self.add_on_attach if k not in self.streams])
        return list(self.streams)

    async def stop(self) -> None:
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def add(self, keys: list[StreamKey]) -> list[StreamKey]:
        added = await self.client.add(keys)
        await self._mirrored(lambda: all(k in self.streams for k in added))
        return added

    async def remove(self, keys: list[StreamKey]) -> list[StreamKey]:
        removed = await self.client.remove(keys)
        await self._mirrored(lambda: not any(k in self.streams for k in removed))
        return removed

    async def _mirrored(self, done: Callable[[], bool]) -> None:
        """Until the events socket has brought a change the API has answered (so the table can
        select a stream just added), for at most 3 s: a slow socket only delays the rows."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                while not done():
                    await asyncio.sleep(0.02)

    async def pause(self) -> None:
        await self.client.pause()

    async def resume(self) -> None:
        await self.client.resume()

    async def flush(self) -> int:
        return await self.client.flush()

    async def symbols(self, market: Market) -> list[str]:
        return await self.client.symbols(market)

    async def load_history(self, keys: list[StreamKey], count: int) -> None:
        return None  # the snapshot carries each stream's recent closed candles already

    async def read_candles(
        self,
        key: StreamKey,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1500,
        newest_first: bool = False,
    ) -> CandlePage:
        """Through the API, a page of at most MAX_CANDLES_PAGE at a time."""
        limit = max(1, min(limit, MAX_PAGE))
        pages: list[list[HistoryRow]] = []
        got, cursor = 0, None
        while got < limit:
            rows, cursor = await self.client.candles(
                key,
                start_ms=start_ms,
                end_ms=end_ms,
                limit=min(MAX_CANDLES_PAGE, limit - got),
                newest_first=newest_first,
            )
            pages.append(rows)
            got += len(rows)
            if cursor is None or not rows:
                break
            # The cursor must move the way the pages go, or a server could keep us here.
            if newest_first and (end_ms is None or cursor < end_ms):
                end_ms = cursor
            elif not newest_first and (start_ms is None or cursor > start_ms):
                start_ms = cursor
            else:
                break
        ordered = [row for page in (reversed(pages) if newest_first else pages) for row in page]
        # Up to MAX_PAGE rows of Python tuples into a frame: in a thread, not on the UI's loop.
        return CandlePage(await asyncio.to_thread(_page_frame, ordered), cursor)

    def summary(self) -> list[tuple[int, str]]:
        return [(logging.INFO, f"detached from {self.url}; the recorder goes on recording")]

    def alert_rows(self) -> list[AlertRow]:
        return self.client.alerts

    def on_alert(self, callback: Callable[[Firing], None]) -> None:
        self.client.alert_listeners.append(callback)

    async def add_alert(self, config: AlertConfig) -> None:
        try:
            await self.client.add_alert(config)
        except RemoteError as exc:
            if exc.status == 400:
                raise ValueError(str(exc).partition("/api/v1/alerts: ")[2] or str(exc)) from None
            raise

    async def mute_alert(self, alert_id: str, muted: bool) -> None:
        await self.client.mute_alert(alert_id, muted)

    async def delete_alert(self, alert_id: str) -> None:
        await self.client.delete_alert(alert_id)

    def report(self, what: str, exc: BaseException) -> None:
        kind = f"{what}: {type(exc).__name__}"
        if kind not in self._reported:
            self._reported.add(kind)
            log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))

    def handle_signals(
        self,
        first: Callable[[], None] | None = None,
        *,
        signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        """The first signal closes the UI (the recorder goes on); a second one ends it at once."""
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def handler(sig: signal.Signals) -> None:
            received.append(sig)
            if len(received) == 1:
                self._stop_requested = True
                if first is not None:
                    first()
            else:
                print("kline-tui: closed at once", file=sys.stderr, flush=True)
                os._exit(EXIT_INTERRUPTED)

        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handler, sig)


def _page_frame(rows: list[HistoryRow]) -> pl.DataFrame:
    """Rows a recorder sent (each sane, see `service.candles.accepted`) as a page's frame:
    CANDLES_SCHEMA, oldest first, each open time once."""
    frame = pl.DataFrame(rows, schema=CANDLES_SCHEMA, orient="row")
    return frame.unique("open_time", keep="first").sort("open_time")
