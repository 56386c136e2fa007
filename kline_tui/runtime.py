"""The recorder's life cycle, one for every face: the terminal UI, `kline-tui record`, and later
the service and the clients that attach to it.

    runtime = Runtime(settings, demo_speed=60.0)
    keys = await runtime.start()          # the simulator (demo), the checks, the pipeline
    ...                                   # the face shows runtime.pipeline's state
    runtime.request_stop("SIGTERM")       # or a key, or a task the supervisor gave up on
    report = await runtime.stop()         # bounded: flush, close, drain, flush
    sys.exit(runtime.exit_code)

What it owns, so that no face has its own copy: the demo simulator; starting with retries (a
face that must go on with what it can leaves refused streams out); the supervisor of every
long-lived task; the stop, bounded by `stop_timeout_s` whatever the servers do, which writes what
is buffered before anything that can hang and fetches every candle known to be missing (the
drain); a last-resort timer that ends the process if even that overruns; the exit summary and the
exit codes. Nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kline_tui.alerts.engine import AlertEngine
from kline_tui.alerts.rules import Alert, Firing
from kline_tui.alerts.state import encode_states, read_states, state_path, write_states
from kline_tui.alerts.webhook import WebhookSender
from kline_tui.binance.rest import RestError
from kline_tui.config import AlertConfig, Settings, save_alerts
from kline_tui.model import StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import SPARK_LENGTH
from kline_tui.recorder.pipeline import Pipeline, StopReport, StreamRefused
from kline_tui.recorder.poller import within_budget
from kline_tui.recorder.supervisor import Supervisor
from kline_tui.retry import Backoff
from kline_tui.store.candle_pages import candles_of, read_page
from kline_tui.store.read import READ_ERRORS
from kline_tui.store.series import stored_series

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Runtime",
    "format_ms",
    "log_to",
]

EXIT_OK = 0
EXIT_FAILED = 1  # rows could not be written, or a task kept failing
EXIT_USAGE = 2  # bad input: nothing was written
EXIT_INTERRUPTED = 130  # stopped at once by a second interrupt

# Past the stop deadline, this much more is allowed (a disk that hangs in a write) before the
# process is ended without waiting further.
HARD_STOP_GRACE_S = 5.0
# Start-up retries while the exchange cannot be reached (faces that go on with what they can).
_START_RETRY_FIRST_S = 2.0
_START_RETRY_CAP_S = 60.0
ALERT_POLL_S = 0.25  # live prices, stale and missing are judged this often
_WEBHOOK_DRAIN_S = 2.0  # of a stop: firings still queued for the webhook get this long
# A firing writes the alerts' state at once; other changes of it (a condition clearing, which
# arms an alert again) at most this often, as a price hovering at a level flips it every poll.
ALERT_STATE_SAVE_S = 5.0

log = logging.getLogger("kline_tui")

PipelineFactory = Callable[..., Pipeline]


class Runtime:
    """Owns one pipeline's life: start, supervision, stop, exit code.

    `demo_speed` runs a simulated Binance in this process at that clock speed and points the
    settings' endpoints at it (`simulator_factory(speed)` builds it; the default continues the
    clock from the newest candle of the demo's data folder, so a fast demo run after another
    records rather than finding its clock behind what is on disk). `keep_closed` is the number
    of closed candles kept per stream for sparklines (0 headless).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        events: EventLog | None = None,
        demo_speed: float | None = None,
        keep_closed: int = SPARK_LENGTH,
        simulator_factory: Callable[[float], Any] | None = None,
        pipeline_factory: PipelineFactory | None = None,
        backoff: Backoff | None = None,
        seed_history: bool = False,
        save_alerts: bool | None = None,
    ) -> None:
        self.settings = settings
        # Fill each stream's recent closed candles from REST at its start, for the charts of a UI
        # that attaches to this recorder (a UI in this process asks for them itself).
        self.seed_history = seed_history and keep_closed > 0
        # Called with the streams whose older candles were just filled in (the service re-sends
        # them to attached UIs).
        self.history_listeners: list[Callable[[list[StreamKey]], None]] = []
        self._seeding: set[asyncio.Task[None]] = set()
        self.events = events or EventLog()
        self.demo_speed = demo_speed
        self.keep_closed = keep_closed
        self.simulator_factory = simulator_factory
        self.pipeline_factory = pipeline_factory
        self.backoff = backoff
        self.supervisor = Supervisor(self.events, on_fatal=self.request_stop)
        self.pipeline: Pipeline | None = None
        self.sim: Any = None
        self.started = False  # the pipeline is recording (or watching, when paused)
        self.stop_reason: str | None = None
        self.report: StopReport | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stopping: asyncio.Task[StopReport] | None = None
        # Alerts (README, "Alerts"): judged here, so they work headless; every face is told of
        # each firing through `alerts.listeners`. Changes made through a face are written back
        # to the config file (by default when there is one).
        self.alerts = AlertEngine(settings.alerts)
        self.alerts.listeners.append(self._alert_fired)
        self.save_alerts = settings.config_exists if save_alerts is None else save_alerts
        self.webhook: WebhookSender | None = None
        self._alerts_dirty = False  # changed since the writer last read them
        self._alerts_writer: asyncio.Task[None] | None = None  # at most one, writing the newest
        # The alerts' firing state, kept across restarts in the data folder (alerts.state):
        # read at the start, written (once this runtime holds the folder) after each firing,
        # now and then as it changes, and by the stop. One writer at a time, the newest state.
        self._state_saved = -1  # the engine's state_version last written (or being written)
        self._state_saved_at = 0.0  # local monotonic seconds
        self._state_writer: asyncio.Task[None] | None = None
        # While a start waits for the exchange: why it failed last, and when it is tried again.
        self._start_failure: str | None = None
        self._start_retry_at: float | None = None

    @property
    def stop_timeout_s(self) -> float:
        return self.settings.stop_timeout_s

    # -- start ------------------------------------------------------------------------------------

    def _stop_event(self) -> asyncio.Event:
        if self._stop_requested is None:
            self._stop_requested = asyncio.Event()
        return self._stop_requested

    async def start(
        self,
        keys: Iterable[StreamKey] | None = None,
        *,
        leave_out_refused: bool = False,
        on_locked: Callable[[], None] | None = None,
    ) -> list[StreamKey]:
        """Start recording `keys` (the settings' watch list by default); returns those watched.

        Raises StreamRefused when a stream is refused (or the exchange cannot be reached to check
        them), unless `leave_out_refused`: then refused streams are left out with a line each in
        the event log, and an unreachable exchange is retried with backoff until it answers or a
        stop is requested. A stop requested meanwhile ends the start at once (the returned list
        is then empty and `started` False).

        `on_locked`: take the data folder before the exchange is asked anything, then call it (a
        service says it is up there: config valid, folder taken, whatever the exchange does).
        """
        keys = list(self.settings.watch if keys is None else keys)
        attempt = asyncio.ensure_future(self._start(keys, leave_out_refused, on_locked))
        stop = asyncio.ensure_future(self._stop_event().wait())
        try:
            await asyncio.wait([attempt, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not attempt.done():
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            return []
        return attempt.result()

    async def _start(
        self,
        keys: list[StreamKey],
        leave_out_refused: bool,
        on_locked: Callable[[], None] | None,
    ) -> list[StreamKey]:
        settings = self.settings
        if self.demo_speed is not None:
            settings = await self._start_simulator(settings, keys)
        if self.pipeline_factory is not None:
            self.pipeline = self.pipeline_factory(settings, self.events)
        else:
            self.pipeline = Pipeline(
                settings,
                events=self.events,
                keep_closed=self.keep_closed,
                backoff=self.backoff,
                supervisor=self.supervisor,
                source="sim" if self.demo_speed is not None else None,
                clock_rate=self.demo_speed,
            )
        await self._load_alert_state()
        self._start_alerts(self.pipeline)
        if on_locked is not None:
            self.pipeline.lock()
            on_locked()
        keys = await self._start_pipeline(keys, leave_out_refused)
        self.started = True
        self._seed(keys)
        self._prime_alerts()
        if self.demo_speed is not None:
            self.events.info(
                f"demo: a simulated Binance on 127.0.0.1 at {self.demo_speed:g}x speed; "
                "nothing touches the network"
            )
        return keys

    async def _start_simulator(self, settings: Settings, keys: list[StreamKey]) -> Settings:
        speed = self.demo_speed
        assert speed is not None
        if self.simulator_factory is not None:
            self.sim = self.simulator_factory(speed)
        else:
            from kline_tui.sim import Simulator

            self.sim = Simulator(speed=speed, start_ms=await self._demo_clock_start(keys))
        await self.sim.start()
        return replace(settings, endpoints=dict(self.sim.endpoints))

    async def _demo_clock_start(self, keys: list[StreamKey]) -> int | None:
        """Where the demo's clock starts: now, or where the newest demo candle on disk ends if
        that is later (a fast clock runs ahead of real time, and must not restart behind it)."""
        try:
            stored = await asyncio.to_thread(stored_series, self.settings.data_dir, keys)
        except Exception as exc:  # noqa: BLE001 - an unreadable folder only costs continuity
            log.warning("demo: cannot read %s: %s", self.settings.data_dir, exc)
            return None
        ends = [key.interval.next_open(series.last) for key, series in stored.items()]
        now_ms = int(time.time() * 1000)
        return max(ends) + 1000 if ends and max(ends) + 1000 > now_ms else None

    async def _start_pipeline(
        self, keys: list[StreamKey], leave_out_refused: bool
    ) -> list[StreamKey]:
        pipeline = self.pipeline
        assert pipeline is not None
        delay = _START_RETRY_FIRST_S
        while True:
            try:
                self._start_retry_at = None
                await pipeline.start(keys)
                self._start_failure = None
                return keys
            except StreamRefused as refused:
                if not leave_out_refused:
                    raise
                try:
                    good = [k for k in keys if not await pipeline.symbols.problems([k])]
                    good = within_budget(good)  # polled streams past the budget's share
                except RestError as exc:
                    self.events.error(
                        f"cannot reach the exchange to check the watch list ({exc}); "
                        f"retrying in {delay:.0f} s"
                    )
                    self._start_failure = str(exc)
                    self._start_retry_at = time.monotonic() + delay
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _START_RETRY_CAP_S)
                    continue
                for problem in refused.problems:
                    self.events.error(f"{problem}: left out of this session")
                keys = good

    # -- alerts -----------------------------------------------------------------------------------

    def _start_alerts(self, pipeline: Pipeline) -> None:
        """Feed the alerts from the pipeline: closed candles as the hub takes them, live prices,
        the exchange's time and the ledger's gaps every ALERT_POLL_S; start the webhook."""
        engine = self.alerts
        pipeline.hub.closed_listeners.append(engine.on_closed)
        pipeline.ledger.fetched_listeners.append(engine.on_fetched)

        def first_missing(key: StreamKey) -> int | None:
            ledger = pipeline.ledger.streams.get(key)
            return ledger.missing[0].first if ledger is not None and ledger.missing else None

        async def poll() -> None:
            while True:
                await asyncio.sleep(ALERT_POLL_S)
                engine.poll(pipeline.hub.streams, pipeline.exchange_now, first_missing)
                if time.monotonic() - self._state_saved_at >= ALERT_STATE_SAVE_S:
                    self._keep_alert_state()

        self.supervisor.spawn("alerts", poll)
        notify = self.settings.notify
        if notify.webhook is not None:
            self.webhook = WebhookSender(
                notify.webhook,
                self.events.warning,
                timeout_s=notify.webhook_timeout_s,
                retries=notify.webhook_retries,
            )
            engine.listeners.append(self.webhook.send)
            self.supervisor.spawn("webhook", self.webhook.run)

    def _alert_fired(self, firing: Firing) -> None:
        self.events.info(firing.message)  # info: each face shows a firing its own way
        self._keep_alert_state()

    async def _load_alert_state(self) -> None:
        path = state_path(self.settings.data_dir)
        known = list(self.alerts.alerts)
        states, warning = await asyncio.to_thread(read_states, path, known)
        if warning is not None:
            self.events.warning(warning)
        self.alerts.restore(states)
        self._state_saved = self.alerts.state_version

    def _keep_alert_state(self) -> None:
        """Write the alerts' firing state when it changed, off the loop; at most one writer.
        Only a started runtime writes: it holds the data folder (a start refused by another
        recorder's lock must not overwrite that recorder's state)."""
        if not self.started or self.alerts.state_version == self._state_saved:
            return
        self._state_saved_at = time.monotonic()
        if self._state_writer is None or self._state_writer.done():
            self._state_writer = asyncio.ensure_future(self._write_alert_state())

    async def _write_alert_state(self) -> None:
        path = state_path(self.settings.data_dir)
        while self._state_saved != self.alerts.state_version:
            self._state_saved = self.alerts.state_version
            body = encode_states(self.alerts.states())  # on the loop: one consistent state
            try:
                await asyncio.to_thread(write_states, path, body)
            except OSError as exc:
                self.events.error(f"cannot save the alerts' state in {path}: {exc}")

    async def _save_alert_state(self, timeout_s: float) -> None:
        """Of a stop: the state as it is now, written within `timeout_s`."""
        self._keep_alert_state()
        if self._state_writer is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._state_writer)
        except TimeoutError:
            self.events.error(f"the alerts' state was not saved within {timeout_s:g} s")

    def add_alert(self, config: AlertConfig) -> Alert:
        """Add an alert (ValueError: one sentence, when it cannot work) and keep it in the
        config file."""
        alert = self.alerts.add(config)
        self.events.info(f"alert added: {alert.key} {alert.describe()}")
        if alert.needs and self.started:
            self._prime_alerts({alert.key: alert.needs})
        if self.pipeline is not None and alert.key not in self.pipeline.hub.streams:
            self.events.warning(f"alert on {alert.key}: not watched, judged once it is added")
        self._keep_alerts()
        return alert

    def _prime_alerts(self, needed: dict[StreamKey, int] | None = None) -> None:
        """Give change_pct and volume_spike alerts the newest closed candles of their streams
        (`needed`: how many per stream; all the alerts' when None): those the dataset holds,
        read off the loop, and those the sink holds but has not written yet. A restart or a new
        alert then judges the next close at once instead of after `window` live ones. Candles
        after the exchange's clock (a fast demo's, in the same folder) are not the past. A
        failure is one warning per stream: that window fills live instead."""
        pipeline = self.pipeline
        needed = self.alerts.history_needed() if needed is None else needed
        if pipeline is None or not needed or self._stopping is not None:
            return
        dataset, sink, engine = pipeline.dataset, pipeline.sink, self.alerts

        async def prime() -> None:
            for key, count in needed.items():
                try:
                    now = pipeline.exchange_now(key.market)
                    end = None if now is None else key.interval.open_time_at(now)
                    # Before the read, as a flush may write them meanwhile. What the sink takes
                    # after this, the engine is told as it comes (live or fetched).
                    held = sink.held(key)
                    page = await asyncio.to_thread(
                        read_page, dataset, key, end_ms=end, limit=count, newest_first=True
                    )
                    recent = [c for c in held if end is None or c.open_time < end]
                    engine.prime(key, [*candles_of(page.frame), *recent])
                except READ_ERRORS as exc:  # a warm-up: any failure leaves the window to fill live
                    self.events.warning(f"alerts on {key}: cannot read their past ({exc})")

        self.supervisor.spawn("alert history", prime, restart=False)

    def mute_alert(self, alert_id: str, muted: bool) -> Alert | None:
        """Mute or unmute an alert; None when there is no such alert."""
        alert = self.alerts.mute(alert_id, muted)
        if alert is not None:
            done = "muted" if muted else "unmuted"
            self.events.info(f"alert {done}: {alert.key} {alert.describe()}")
            self._keep_alerts()
        return alert

    def remove_alert(self, alert_id: str) -> Alert | None:
        """Delete an alert; None when there is no such alert."""
        alert = self.alerts.remove(alert_id)
        if alert is not None:
            self.events.info(f"alert deleted: {alert.key} {alert.describe()}")
            self._keep_alerts()
        return alert

    def _keep_alerts(self) -> None:
        """Write the alerts into the config file, off the loop; a failure is logged. Changes
        coming faster than the file is written mark it dirty: one writer, the newest list."""
        if not self.save_alerts:
            return
        self._alerts_dirty = True
        if self._alerts_writer is None or self._alerts_writer.done():
            self._alerts_writer = asyncio.ensure_future(self._write_alerts())

    async def _write_alerts(self) -> None:
        path = self.settings.config_path
        while self._alerts_dirty:
            self._alerts_dirty = False
            try:
                await asyncio.to_thread(save_alerts, path, self.alerts.configs())
            except (OSError, ValueError) as exc:
                self.events.error(f"cannot save the alerts in {path}: {exc}")

    async def alerts_saved(self) -> None:
        """Until every change to the alerts is in the config file (tests, a face that quits)."""
        if self._alerts_writer is not None:
            await asyncio.shield(self._alerts_writer)

    def offline(self) -> tuple[str, float | None] | None:
        """While the start waits for an exchange it cannot reach: why (the latest failure) and
        when it is tried next (local monotonic seconds, None if not known); else None."""
        pipeline = self.pipeline
        if self.started or pipeline is None:
            return None
        rest = pipeline.rest
        reason = rest.unreachable or self._start_failure
        if reason is None:
            return None
        retry_at = rest.retry_at if rest.retry_at is not None else self._start_retry_at
        return reason, retry_at

    # -- what a face asks of a running recorder ---------------------------------------------------

    def _running(self) -> Pipeline:
        if self.pipeline is None or not self.started:
            raise RuntimeError("the recorder has not started")
        return self.pipeline

    async def add(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Validate and watch more streams; returns those not watched already. Raises
        StreamRefused (one sentence per refused stream) for symbols the exchange does not list."""
        added = await self._running().add(keys)
        self._seed(added)
        return added

    def _seed(self, keys: list[StreamKey]) -> None:
        """Fill the streams' recent closed candles in the background (see `seed_history`)."""
        pipeline = self.pipeline
        if not self.seed_history or pipeline is None or not keys:
            return
        task = asyncio.ensure_future(pipeline.seed_history(keys, count=self.keep_closed))
        self._seeding.add(task)  # held until done, so it is not collected midway

        def seeded(task: asyncio.Task[None]) -> None:
            self._seeding.discard(task)
            if not task.cancelled():
                for listener in self.history_listeners:
                    listener(keys)

        task.add_done_callback(seeded)

    def remove(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Stop watching streams; what they recorded stays on disk."""
        return self._running().remove(keys)

    @property
    def recording(self) -> bool:
        """False while paused: the live view goes on, closed candles are not stored."""
        return self.pipeline is None or self.pipeline.recording

    def pause(self) -> None:
        """Stop storing closed candles; what closes meanwhile is fetched from REST on resume."""
        pipeline = self._running()
        if pipeline.recording:
            pipeline.recording = False
            self.events.info(
                "recording paused: the live view goes on, closed candles are not recorded"
            )

    def resume(self) -> None:
        """Store closed candles again, starting with those that closed during the pause."""
        pipeline = self._running()
        if not pipeline.recording:
            pipeline.recording = True
            self.events.info("recording resumed")

    async def flush(self) -> int:
        """Write everything buffered now; returns the rows written (0 when nothing was buffered
        or the disk refused: the sink's stats say which)."""
        sink = self._running().sink
        before = sink.stats.rows_written
        await sink.flush()
        return sink.stats.rows_written - before

    # -- stop -------------------------------------------------------------------------------------

    def request_stop(self, reason: str = "") -> None:
        """Ask every face to stop (a signal, a key, or a task the supervisor gave up on)."""
        if self.stop_reason is None:
            self.stop_reason = reason or "asked to stop"
        self._stop_event().set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested is not None and self._stop_requested.is_set()

    async def wait_for_stop_request(self) -> None:
        await self._stop_event().wait()

    async def stop(self) -> StopReport:
        """Stop within the deadline: flush, close the sockets, drain, flush (idempotent).

        A timer armed here ends the process if the stop overruns its deadline by more than
        HARD_STOP_GRACE_S (only a write the disk never finishes can cause that).
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        return await asyncio.shield(self._stopping)

    async def _stop(self) -> StopReport:
        deadline = self.stop_timeout_s
        timer = _arm_hard_stop(deadline + HARD_STOP_GRACE_S)
        for task in self._seeding:
            task.cancel()  # display history only: nothing to keep
        started = time.monotonic()
        try:
            if self.pipeline is not None:
                self.report = await self.pipeline.stop(deadline)
            else:
                self.report = StopReport()
            # The alerts are judged no more (the pipeline's stop ended their task): keep how
            # they stand, so the next start neither repeats a firing nor waits on a lost one.
            left = deadline - (time.monotonic() - started)
            await self._save_alert_state(max(0.5, min(2.0, left)))
            if self.webhook is not None:  # after the last flush: what is written comes first
                left = deadline - (time.monotonic() - started)
                await self.webhook.drain(max(0.0, min(_WEBHOOK_DRAIN_S, left)))
            if self.sim is not None:
                try:
                    async with asyncio.timeout(2.0):
                        await self.sim.stop()
                except (TimeoutError, Exception) as exc:  # noqa: BLE001 - the demo's server only
                    log.warning("demo simulator did not stop cleanly: %s", exc)
        finally:
            timer.cancel()
        return self.report

    # -- what a face shows at the end -------------------------------------------------------------

    @property
    def exit_code(self) -> int:
        """0 when everything received was written; 1 when rows could not be written or a task
        kept failing."""
        if self.supervisor.fatal is not None:
            return EXIT_FAILED
        if self.report is not None and self.report.unwritten:
            return EXIT_FAILED
        return EXIT_OK

    def summary(self) -> list[tuple[int, str]]:
        """The exit summary, as (logging level, line) pairs."""
        lines: list[tuple[int, str]] = []
        pipeline, report = self.pipeline, self.report
        if pipeline is None or report is None:
            return lines
        stats = pipeline.sink.stats
        if not self.started:
            why = f" ({self.stop_reason})" if self.stop_reason else ""
            return [
                (logging.INFO, f"stopped while starting{why}: {stats.rows_written} rows written")
            ]
        done = (
            f"done in {report.seconds:.1f} s: {stats.rows_written} rows in "
            f"{stats.files_written} files under {self.settings.location}"
        )
        if report.drained:
            done += f"; {report.drained} missing candles fetched before stopping"
        lines.append((logging.INFO, f"{done}; {self.status_line()}"))
        if report.missing:
            lines.append((logging.WARNING, _missing_line(report)))
        if report.cut_short:
            lines.append(
                (
                    logging.WARNING,
                    f"cut short by the {self.stop_timeout_s:g} s stop deadline: "
                    + ", ".join(report.cut_short),
                )
            )
        if report.unwritten:
            lines.append(
                (logging.ERROR, f"{report.unwritten} rows could not be written: {stats.last_error}")
            )
        if self.supervisor.fatal is not None:
            lines.append((logging.ERROR, f"stopped because {self.supervisor.fatal}"))
        return lines

    def status_line(self) -> str:
        """Counters since this process started, for the log of a server that runs for months."""
        pipeline = self.pipeline
        if pipeline is None:
            return "not started"
        ledgers = pipeline.ledger.streams.values()
        states = collections.Counter(s.status.value for s in pipeline.hub.streams.values())
        sink = pipeline.sink.stats
        text = (
            "streams "
            + ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
            + f"; rows {sink.rows_written} written, {sink.rows_buffered} buffered"
            + (f", {sink.dropped} dropped" if sink.dropped else "")
            + (f", {sink.dead_letters} set aside as unwritable" if sink.dead_letters else "")
            + f"; candles {sum(s.accepted_ws for s in ledgers)} live, "
            + (f"{polled} polled, " if (polled := sum(s.accepted_poll for s in ledgers)) else "")
            + f"{sum(s.accepted_rest for s in ledgers)} backfilled, "
            f"{sum(s.duplicates for s in ledgers)} duplicates dropped, "
            f"{sum(s.missing_count() for s in ledgers)} missing; "
            f"{pipeline.hub.stalls_detected} stalls"
        )
        if pipeline.hub.malformed:
            text += f"; {pipeline.hub.malformed} malformed frames dropped"
        if self.supervisor.crashes:
            text += f"; {self.supervisor.crashes} task failures"
        return text

    # -- signals ----------------------------------------------------------------------------------

    def handle_signals(
        self,
        first: Callable[[], None] | None = None,
        *,
        signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
        on_second: Callable[[], None] | None = None,
    ) -> None:
        """Install handlers: the first signal asks for a stop (`first`, by default
        `request_stop`); a second one ends the process at once (`on_second`, by default an exit
        with code 130 and one line saying what was left unwritten)."""
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def handler(sig: signal.Signals) -> None:
            received.append(sig)
            if len(received) == 1:
                (first or (lambda: self.request_stop(sig.name)))()
            else:
                (on_second or self._exit_at_once)()

        for sig in signals:
            # Not on every platform, nor outside the main thread: then the default stays.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handler, sig)

    def _exit_at_once(self) -> None:
        buffered = self.pipeline.sink.stats.rows_buffered if self.pipeline is not None else 0
        note = (
            f"; {buffered} buffered rows not written (the next start fetches them again)"
            if buffered
            else ""
        )
        print(f"kline-tui: stopped at once{note}", file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)


def _missing_line(report: StopReport, show: int = 5) -> str:
    parts = [
        f"{key} {format_ms(a)}" + ("" if a == b else f" to {format_ms(b)}")
        for key, a, b in report.missing[:show]
    ]
    more = f" and {len(report.missing) - show} more ranges" if len(report.missing) > show else ""
    return (
        f"{report.missing_count} candles still missing, fetched at the next start: "
        + "; ".join(parts)
        + more
    )


def format_ms(ms: int) -> str:
    """An exchange time as `2026-11-30 13:05 UTC` (seconds when they are not zero)."""
    stamp = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S" if stamp.tm_sec else "%Y-%m-%d %H:%M", stamp) + " UTC"


def _arm_hard_stop(after_s: float) -> threading.Timer:
    """The last resort: end the process if the stop is still running `after_s` from now."""

    def overrun() -> None:
        print(
            f"kline-tui: the stop overran its deadline by {HARD_STOP_GRACE_S:g} s; exiting now",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_FAILED)

    timer = threading.Timer(after_s, overrun)
    timer.daemon = True
    timer.start()
    return timer


def log_to(target: Path | None) -> logging.Handler:
    """Send the package's log (tracebacks of failed tasks, warnings) to a file, or to stderr
    when `target` is None. The UI uses a file: the terminal is its screen."""
    if target is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("kline_tui")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    return handler
