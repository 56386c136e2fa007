"""The kline-tui app: widgets wired to a recorder's state and events, repainted at 4 Hz.

The recorder is either the runtime in this process (`kline_tui.runtime`, which owns its life:
start with retries, the demo simulator, supervision, the bounded stop and the exit code; its
pipeline runs as asyncio tasks in Textual's own event loop) or one running elsewhere that the app
is attached to through its service API; `ui.recorder` gives both one face. The app never waits on
it and never repaints per message: a timer reads its state a few times a second and each widget
redraws only what changed. Every long operation
runs as a worker, and `on_worker_state_changed` is the one place their failures end up: in the
event log and as a notification, never as a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState

from kline_tui.alerts.rules import Firing, alert_id
from kline_tui.binance.connection import ConnectionState, ConnectionStatus
from kline_tui.config import DEFAULT_WATCH, AlertConfig, Settings, UiConfig, save_ui
from kline_tui.model import Interval, Kind, Market, StreamKey
from kline_tui.recorder.events import Event, EventLog
from kline_tui.recorder.hub import StreamState
from kline_tui.recorder.pipeline import Pipeline
from kline_tui.runtime import Runtime
from kline_tui.service.protocol import AlertRow
from kline_tui.ui import format as fmt
from kline_tui.ui.commands import KeyCommands, PaletteBinding
from kline_tui.ui.notify import Notifier
from kline_tui.ui.recorder import AttachedRecorder, LocalRecorder, Recorder
from kline_tui.ui.screens.add_streams import AddStreamsScreen
from kline_tui.ui.screens.alert_dialog import AlertDialog
from kline_tui.ui.screens.alerts import AlertsScreen
from kline_tui.ui.screens.columns import ColumnsScreen
from kline_tui.ui.screens.details import DetailsScreen
from kline_tui.ui.screens.help import HelpScreen
from kline_tui.ui.strip_cycles import install as _no_strip_cycles
from kline_tui.ui.terminal import run_in_terminal
from kline_tui.ui.watch_list import WatchListFile
from kline_tui.ui.widgets.connections import ConnectionsPanel
from kline_tui.ui.widgets.event_log import EventLogPanel
from kline_tui.ui.widgets.recording import RecordingPanel, RecordingView
from kline_tui.ui.widgets.status_bar import Overview, StatusBar
from kline_tui.ui.widgets.watch_table import Group, Sort, WatchTable, receiving

__all__ = ["REPAINT_HZ", "KlineApp", "run_app", "run_attached"]

_no_strip_cycles()

REPAINT_HZ = 4.0
ALERT_MARK_S = 300.0  # a row stays marked this long after its alert fired


PipelineFactory = Callable[[Settings, EventLog], Pipeline]


def _freeze_what_lasts() -> None:
    """Keep what exists now (modules, every stream's state and history: it lives as long as the
    app) out of the collector's full passes, which with thousands of streams stopped the screen
    for a hundred ms and more at a time (benchmarks: ui). Collected first: cyclic garbage still
    pending when frozen would be kept for ever. Undone when the app unmounts."""
    gc.collect()
    gc.freeze()


# Actions on the main screen's table: off while another screen covers it.
_TABLE_ACTIONS = {
    "remove",
    "details",
    "filter",
    "sort",
    "sort_by",
    "reverse_sort",
    "clear_filter",
    "new_alert",
    "alerts",
    "group",
    "columns",
    "compact",
}
# Actions that need the recorder running.
_PIPELINE_ACTIONS = {"add", "remove", "pause", "resume", "flush", "new_alert", "alerts"}
# Warnings and errors shown as notifications per repaint; the rest are summed up in one.
_LOUD_EVENTS_SHOWN = 3


class KlineApp(App[int]):
    """Watch and record Binance candlesticks.

    `demo_speed` runs a simulated Binance in the app's own loop (at that clock speed) and points
    the settings' endpoints at it; `simulator_factory(speed)` builds it (default: `Simulator`).
    `clock` (monotonic seconds) and `wall_clock` (epoch seconds) are what the panels measure ages
    with; tests inject fixed ones.
    """

    CSS_PATH = "app.tcss"
    TITLE = "kline-tui"
    COMMANDS = App.COMMANDS | {KeyCommands}

    BINDINGS: ClassVar[list[BindingType]] = [
        PaletteBinding(
            "a",
            "add",
            "Add",
            id="add",
            command="Add streams",
            tooltip="Add streams: a market, an interval and symbols",
        ),
        PaletteBinding(
            "d,delete",
            "remove",
            "Remove",
            id="remove",
            command="Remove stream",
            tooltip="Stop watching the selected stream; what it recorded stays on disk",
        ),
        PaletteBinding(
            "p",
            "pause",
            "Pause",
            id="pause",
            command="Pause recording",
            tooltip="Pause or resume recording; the live view goes on",
        ),
        PaletteBinding(
            "p",
            "resume",
            "Resume",
            id="resume",
            command="Resume recording",
            tooltip="Resume recording, fetching what closed meanwhile",
        ),
        PaletteBinding(
            "f",
            "flush",
            "Flush",
            id="flush",
            command="Flush now",
            tooltip="Write every buffered candle to Parquet now",
        ),
        PaletteBinding(
            "enter",
            "details",
            "Details",
            id="details",
            command="Details",
            tooltip="Chart and recent candles of the selected stream",
        ),
        # A priority binding runs before the keys queued behind it are handed out, so the words
        # of a quick (or pasted) "/eth" reach the box instead of the table.
        PaletteBinding(
            "slash",
            "filter",
            "Filter",
            id="filter",
            command="Filter",
            priority=True,
            tooltip="Show only the streams matching words (market, symbol, interval, state)",
        ),
        PaletteBinding(
            "s",
            "sort",
            "Sort",
            id="sort",
            command="Sort: next column",
            tooltip="Sort by the next column",
        ),
        PaletteBinding(
            "S",
            "reverse_sort",
            "Reverse sort",
            id="reverse-sort",
            show=False,
            command="Sort: reverse",
            tooltip="Reverse the order of the rows",
        ),
        PaletteBinding(
            "escape",
            "clear_filter",
            "Clear filter",
            id="clear-filter",
            command="Clear filter",
            tooltip="Show every stream again",
        ),
        PaletteBinding(
            "exclamation_mark",
            "new_alert",
            "Alert",
            id="new-alert",
            command="New alert",
            tooltip="Make an alert on the selected stream: a price level, a move, a spike, "
            "silence or a gap",
        ),
        PaletteBinding(
            "L",
            "alerts",
            "Alerts",
            id="alerts",
            command="Alerts",
            tooltip="List the alerts: mute, edit or delete them",
        ),
        PaletteBinding(
            "g",
            "group",
            "Group",
            id="group",
            command="Group rows: next way",
            tooltip="Group the rows by market, by symbol, or not at all (saved in the config)",
        ),
        PaletteBinding(
            "c",
            "columns",
            "Columns",
            id="columns",
            command="Choose columns",
            tooltip="Choose the table's columns and their order (saved in the config)",
        ),
        PaletteBinding(
            "z",
            "compact",
            "Compact",
            id="compact",
            command="Compact mode",
            tooltip="Compact mode for small terminals: the table takes the screen (saved)",
        ),
        PaletteBinding(
            "question_mark",
            "help",
            "Help",
            id="help",
            command="Help",
            tooltip="Keys, columns and where files live",
        ),
        PaletteBinding(
            "q",
            "quit",
            "Quit",
            id="quit",
            command="Quit and flush",
            tooltip="Flush everything buffered, then exit",
        ),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        demo_speed: float | None = None,
        pipeline_factory: PipelineFactory | None = None,
        simulator_factory: Callable[[float], Any] | None = None,
        save_watch_list: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        repaint_hz: float = REPAINT_HZ,
        recorder: Recorder | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.demo_speed = demo_speed
        self.clock = clock
        self.wall_clock = wall_clock
        self.repaint_hz = repaint_hz
        self.runtime: Runtime | None = None  # only when the recorder runs in this process
        if recorder is None:
            self.runtime = Runtime(
                settings,
                events=EventLog(),
                demo_speed=demo_speed,
                simulator_factory=simulator_factory,
                pipeline_factory=pipeline_factory,
                save_alerts=save_watch_list,  # the UI keeps what it makes in the config
            )
            recorder = LocalRecorder(self.runtime)
        self.recorder: Recorder = recorder
        self.events = recorder.events
        # An attached UI leaves the watch list to the recorder it shows; its layout (`[ui]`) is
        # its own, kept in its own config whether attached or not.
        self.save_watch_list = save_watch_list and not recorder.detaches
        self.save_layout = save_watch_list
        self.watch_list = WatchListFile(settings.config_path, self._watched, self.events)
        self.running = False  # the pipeline started and is recording or watching
        self.hold_display = False  # tests freeze the screen to take deterministic snapshots
        self._pending_events: collections.deque[Event] = collections.deque()
        self.events.subscribe(self._pending_events.append)
        self._quitting = False
        self._started = asyncio.Event()
        self._tick_errors = 0
        # Alerts: how a firing is shown, and the rows marked (until a local monotonic time).
        self.notifier = Notifier(self)
        self.alerted: dict[StreamKey, float] = {}
        recorder.on_alert(self._alert_fired)
        self._ui_lock = asyncio.Lock()

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("", id="banner")
        yield Input(
            placeholder="filter: words to match (e.g. usdm btc, or stale); "
            "enter keeps it, esc clears",
            id="filter",
        )
        yield WatchTable(id="watch")
        with Horizontal(id="bottom"):
            with Vertical(id="side"):
                connections = ConnectionsPanel(id="connections")
                connections.border_title = "Connections"
                yield connections
                recording = RecordingPanel(id="recording")
                recording.border_title = "Recording"
                yield recording
            log = EventLogPanel(id="events")
            log.border_title = "Events"
            yield log
        yield Footer()

    @property
    def table(self) -> WatchTable:
        return self.query_one("#watch", WatchTable)

    @property
    def pipeline(self) -> Pipeline | None:
        """The pipeline, when the recorder runs in this process (tests look into it)."""
        return self.runtime.pipeline if self.runtime is not None else None

    def _watched(self) -> list[StreamKey]:
        return list(self.recorder.streams)

    def on_mount(self) -> None:
        self._apply_ui(self.settings.ui)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.table.focus()
        self.set_interval(1 / self.repaint_hz, self._tick, name="repaint")
        what = "attaching to the recorder" if self.recorder.detaches else "starting the recorder"
        self.run_worker(self._start(), name=what, group="pipeline", exit_on_error=False)
        self._tick()

    # -- start and quit: the runtime does the work, the app says what happens -------------------

    async def _start(self) -> None:
        try:
            await self._start_recorder()
        finally:
            self._started.set()  # started or failed: the failure is in the event log

    async def _start_recorder(self) -> None:
        settings = self.settings
        first_launch = not settings.config_exists
        keys = list(settings.watch)
        if not keys and (first_launch or self.demo_speed is not None):
            keys = [StreamKey.parse(s) for s in DEFAULT_WATCH]
        recorder = self.recorder
        if not recorder.detaches:
            config, data = fmt.short_path(settings.config_path), fmt.short_path(settings.location)
            self.events.info(f"config {config}; data {data}")
        if not recorder.detaches:
            # The watch list shows at once, "checking" until the exchange has answered (or
            # "offline" while it cannot be reached), rather than an empty table.
            self.table.placeholder = "checking"
            self.table.streams = {key: StreamState(key) for key in keys}
            self._tick()
        keys = await recorder.start(keys)
        self.table.placeholder = None
        self.table.streams = recorder.streams
        if recorder.detaches:
            self.running = True  # the keys say so themselves while the recorder is unreachable
            self._started.set()
            self.refresh_bindings()
            self._tick()
            _freeze_what_lasts()  # the mirrored streams and their history
            return
        if not recorder.running:
            return  # a stop was asked for while starting
        self.running = True
        self._started.set()
        self.refresh_bindings()
        self._tick()
        if first_launch:
            await self._welcome(keys)
        elif not keys:
            self.notify(
                "Nothing to watch yet: press a to add streams.",
                title="Empty watch list",
                timeout=10,
            )
        _freeze_what_lasts()  # the streams' states: history can take minutes (REST weight)
        await recorder.load_history(keys, count=60)
        _freeze_what_lasts()  # and their history

    async def _welcome(self, keys: list[StreamKey]) -> None:
        """A first launch: keep the watch list for the next one, and say where things live."""
        if self.save_watch_list:
            await self.watch_list.save()
        self.notify(
            f"Watching {len(keys)} streams to start with; a adds more, d removes.\n"
            f"Config: {fmt.short_path(self.settings.config_path)}\n"
            f"Data: {fmt.short_path(self.settings.location)}",
            title="Welcome to kline-tui",
            timeout=20,
        )

    async def shutdown_pipeline(self) -> None:
        """Stop the recorder within its deadline, writing everything buffered (idempotent)."""
        self.running = False
        await self.recorder.stop()

    async def on_unmount(self) -> None:
        try:
            # However the app ends, what was received is written.
            await self.shutdown_pipeline()
        finally:
            # What the start froze is the collector's again, even when the stop failed: another
            # app in this process (tests, scripts) must not keep this one's cycles for ever.
            gc.unfreeze()

    async def action_quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        if self.recorder.detaches:
            self.notify("Closing; the recorder goes on recording.", title="Quitting")
        else:
            stats = self.recorder.sink_stats
            buffered = stats.rows_buffered if stats else 0
            self.notify(f"Writing {buffered:,} buffered rows, then exiting…", title="Quitting")
        self.run_worker(self._quit(), name="quitting", group="quit", exit_on_error=False)

    async def _quit(self) -> None:
        try:
            await self.shutdown_pipeline()
        finally:
            code = self.recorder.exit_code
            problems = [line for level, line in self.recorder.summary() if level >= logging.WARNING]
            message = "\n".join(f"kline-tui: {p}" for p in problems)
            self.exit(code, return_code=code, message=message or None)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures end up."""
        if event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        what = event.worker.name or "a background task"
        self.events.error(f"{what} failed: {str(error) or type(error).__name__}")
        if event.worker.name == "quitting":
            self.exit(1, return_code=1, message=f"kline-tui: quitting failed: {error}")

    # -- repaint ----------------------------------------------------------------------------------

    def _tick(self) -> None:
        if self.recorder.stop_requested and not self._quitting:
            # A signal, or a task that kept failing: flush and leave, saying why.
            self.call_later(self.action_quit)
        if self.hold_display:
            return
        try:
            self.repaint()
        except Exception as exc:  # noqa: BLE001 - a drawing bug must not take the recorder down
            self._tick_errors += 1
            if self._tick_errors in (1, 10, 100):
                self.recorder.report(f"repaint ({self._tick_errors}x)", exc)
                failure = f"{type(exc).__name__}: {exc}"
                self.events.error(f"repaint failed ({self._tick_errors}x): {failure}")

    def repaint(self, *, reload_events: bool = False) -> None:
        """Redraw everything from the pipeline's state (the timer calls this at `repaint_hz`)."""
        self._show_events(reload_events)
        now = self.clock()
        statuses = self.recorder.connection_status()
        self.table.marked = {key for key, until in self.alerted.items() if until > now}
        self._show_offline(now)
        self.table.paused = not self.recorder.recording
        self.table.update_view()
        unreachable = self.recorder.unreachable
        self.query_one("#connections", ConnectionsPanel).show(
            statuses,
            now,
            empty=None if unreachable is None else "none: the recorder is unreachable",
            clock_rate=self._clock_rates(),
        )
        connected = any(s.state is ConnectionState.LIVE for s in statuses)
        self.query_one("#recording", RecordingPanel).view = self._recording_view(connected)
        self.query_one("#status", StatusBar).overview = self._overview(statuses, now)
        for screen in self.screen_stack:
            if isinstance(screen, DetailsScreen | AlertsScreen):
                screen.update_view()

    def _clock_rates(self) -> dict[Market, float]:
        """How fast each market's exchange clock runs, as its REST clock knows it (a simulator's
        speed, given or measured): lag is measured in exchange ms. Empty for an attached UI,
        whose recorder sends lag in real ms already."""
        pipeline = self.pipeline
        if pipeline is None:
            return {}
        return {market: pipeline.rest.clock(market).rate for market in Market}

    def _show_events(self, reload: bool) -> None:
        log = self.query_one("#events", EventLogPanel)
        if reload:
            self._pending_events.clear()
            log.reload(self.events.recent)
        elif self._pending_events:
            batch = list(self._pending_events)
            self._pending_events.clear()
            log.append(batch)
            self._notify_events(batch)

    def _notify_events(self, events: list[Event]) -> None:
        """Warnings and errors as notifications too: a few at a time, the rest summed up."""
        loud = [e for e in events if e.level >= logging.WARNING]
        for event in loud[:_LOUD_EVENTS_SHOWN]:
            error = event.level >= logging.ERROR
            self.notify(
                event.message, severity="error" if error else "warning", timeout=10 if error else 5
            )
        if len(loud) > _LOUD_EVENTS_SHOWN:
            more = len(loud) - _LOUD_EVENTS_SHOWN
            self.notify(f"{more} more warnings and errors: see the event log", severity="warning")

    def _recording_view(self, connected: bool) -> RecordingView:
        recorder = self.recorder
        return RecordingView.of(
            recorder.sink_stats,
            recording=recorder.recording,
            data_dir=recorder.data_dir or "(not known yet)",
            flush_rows=recorder.flush_rows,
            flush_age_s=recorder.flush_age_s,
            now=self.wall_clock(),
            unreachable=recorder.unreachable,
            into=recorder.writes_into,
            # The attached recorder mirrors its connections' states: the truth either way.
            connected=connected,
        )

    def _overview(self, statuses: list[ConnectionStatus], now: float) -> Overview:
        table = self.table
        streams = table.streams.values()
        mode = self.recorder.mode
        if not self.recorder.detaches and not self.recorder.running:
            mode = f"{mode} starting…".strip()
        placeholder = table.placeholder is not None
        return Overview(
            streams=len(streams),
            # Live is what receives live events, a stream whose backfill runs beside included.
            live=0 if placeholder else sum(1 for s in streams if receiving(s)),
            connected=sum(1 for s in statuses if s.state is ConnectionState.LIVE),
            unreachable=self.recorder.unreachable is not None,
            connections=len(statuses),
            rate=round(sum(s.frames_per_s(now) for s in statuses)),
            recording=self.recorder.recording,
            shown=len(table.order),
            sort=table.sort_label,
            filter_text=table.filter_text,
            mode=mode,
        )

    # -- which keys work now ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.can_run(action, self.screen)

    def can_run(self, action: str, screen: Screen) -> bool | None:
        """Whether `action` can run while `screen` is on top (the command palette asks for the
        screen it was opened from): True; None, shown dimmed in the footer (the recorder is not
        running, or no row is selected); False, hidden (another screen covers the table, or the
        key's other action is the one that applies, as with pause and resume)."""
        if action in _TABLE_ACTIONS and screen is not self.screen_stack[0]:
            return False
        running = self.running and self.recorder.running
        if action == "pause":
            return self.recorder.recording if running else None
        if action == "resume":
            return running and not self.recorder.recording
        if action == "clear_filter":
            return bool(self.table.filter_text) or self.query_one("#filter").has_class("-visible")
        if action in _PIPELINE_ACTIONS and not running:
            return None
        if action in ("remove", "details", "new_alert") and self.table.selected is None:
            return None
        return True

    # -- actions ----------------------------------------------------------------------------------

    def action_add(self) -> None:
        selected = self.table.selected
        self.push_screen(
            AddStreamsScreen(
                self.add_streams,
                self._symbols_of,
                market=selected.market if selected else Market.USDM,
                interval=selected.interval if selected else Interval.M1,
                kind=selected.kind if selected else Kind.TRADE,
            )
        )

    async def _symbols_of(self, market: Market) -> list[str]:
        return await self.recorder.symbols(market)

    async def add_streams(self, keys: list[StreamKey]) -> list[StreamKey]:
        """Subscribe `keys` on the open connections; raises StreamRefused (shown by the dialog)."""
        added = await self.recorder.add(keys)
        if added:
            self.table.update_view()
            self.table.select(added[0])
            self.notify(f"Added {', '.join(str(k) for k in added)}", timeout=4)
            # Charts start full: the streams' recent candles, where the recorder can fetch them.
            self.run_worker(
                self.recorder.load_history(added, count=60),
                name="loading history",
                exit_on_error=False,
            )
            self._save_watch_list()
        return added

    def action_remove(self) -> None:
        key = self.table.selected
        if key is None or not self.running:
            return
        self.run_worker(self._remove(key), name="removing a stream", exit_on_error=False)

    async def _remove(self, key: StreamKey) -> None:
        await self.recorder.remove([key])
        self.table.update_view()
        where = fmt.short_path(self.recorder.data_dir)
        self.notify(f"Removed {key}; what it recorded stays in {where}", timeout=4)
        self._save_watch_list()
        self.refresh_bindings()

    def _save_watch_list(self) -> None:
        if self.save_watch_list:
            self.run_worker(
                self.watch_list.save(), name="saving the watch list", exit_on_error=False
            )

    def action_pause(self) -> None:
        if self.running:
            self.run_worker(self._switch(self.recorder.pause()), name="pausing", group="pause")

    def action_resume(self) -> None:
        if self.running:
            self.run_worker(self._switch(self.recorder.resume()), name="resuming", group="pause")

    async def _switch(self, change: Awaitable[None]) -> None:
        await change
        self.refresh_bindings()
        self._tick()

    def action_flush(self) -> None:
        if self.running:
            self.run_worker(self._flush_now(), name="flushing", group="flush", exit_on_error=False)

    async def _flush_now(self) -> None:
        # Not `_flush`: Textual's App has one, called with `stderr=` whenever a print is flushed.
        stats = self.recorder.sink_stats
        if stats is None or not stats.rows_buffered:
            self.notify("Nothing buffered: everything received is on disk.", timeout=4)
            return
        written = await self.recorder.flush()
        stats = self.recorder.sink_stats
        if written and stats is not None and not stats.failing:
            where = fmt.short_path(self.recorder.data_dir)
            self.notify(f"Flushed {written:,} rows to {where}", timeout=4)
        self._tick()

    def action_details(self) -> None:
        key = self.table.selected
        if key is None or not self.running:
            return

        def listed() -> list[StreamKey]:
            """The table's order as it is when stepping, not when the screen opened."""
            return list(self.table.order)

        details = DetailsScreen(
            key, self.recorder.streams, listed, self._load_chart_history, self.recorder.read_candles
        )
        self.push_screen(details, callback=self._details_closed)

    def _details_closed(self, key: StreamKey | None) -> None:
        if key is not None and key in self.table.streams:
            self.table.select(key)

    def _load_chart_history(self, key: StreamKey) -> None:
        """Fill the stream's recent candles as far back as they are kept, for a full chart."""
        streams = self.recorder.streams
        if self.running and key in streams:
            count = streams[key].closed.maxlen or 120
            self.run_worker(
                self.recorder.load_history([key], count=count),
                name="loading history",
                group="chart-history",
                exclusive=True,
                exit_on_error=False,
            )

    @on(WatchTable.Activated)
    def _row_activated(self) -> None:
        self.action_details()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-visible")
        self._focus_now(box)
        self.refresh_bindings()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.filter_text = event.value

    @on(Input.Submitted, "#filter")
    def _filter_kept(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.remove_class("-visible")
        self._focus_now(self.table)
        self.refresh_bindings()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("-visible")
        self.table.filter_text = ""
        self._focus_now(self.table)
        self.refresh_bindings()

    def _focus_now(self, widget: Widget) -> None:
        # `focus()` waits behind the keys already queued: typed fast (or pasted), "/eth" would
        # send "eth" to the table, where d removes a stream. Moving the focus at once sends
        # them where this key meant them to go.
        widget.screen.set_focus(widget)

    def action_sort(self) -> None:
        self.table.cycle_sort()
        self._tick()

    def action_sort_by(self, name: str) -> None:
        self.table.reverse = False
        self.table.sort = Sort[name]
        self._tick()

    def action_reverse_sort(self) -> None:
        self.table.reverse_sort()
        self._tick()

    # -- layout: grouping, columns, compact mode and theme, kept in the config's [ui] ----------

    def _apply_ui(self, ui: UiConfig) -> None:
        table = self.table
        table.chosen = ui.columns
        table.group = Group(ui.group)
        table.compact = ui.compact
        self.screen.set_class(ui.compact, "-compact")
        if ui.theme != self.theme:
            if ui.theme in self.available_themes:
                self.theme = ui.theme
            else:
                self.events.warning(f"unknown theme {ui.theme!r} in the config: using {self.theme}")

    @property
    def ui_config(self) -> UiConfig:
        """The layout as it is now, as the config's `[ui]` table holds it."""
        table = self.table
        return UiConfig(
            columns=table.chosen,
            group=table.group.value,
            compact=table.compact,
            theme=self.theme,
        )

    def _save_ui(self) -> None:
        ui = self.ui_config
        if ui == self.settings.ui:
            return
        self.settings = replace(self.settings, ui=ui)
        if self.save_layout:
            self.run_worker(self._write_ui(ui), name="saving the layout", exit_on_error=False)

    async def _write_ui(self, ui: UiConfig) -> None:
        async with self._ui_lock:  # one at a time, each writing the newest layout
            if ui != self.settings.ui:
                return  # a newer change follows, with its own save
            path = self.settings.config_path
            try:
                await asyncio.to_thread(save_ui, path, ui)
            except OSError as exc:
                self.events.error(f"could not save the layout to {path}: {exc}")

    def _theme_changed(self, _theme: object) -> None:
        self._save_ui()

    def action_group(self) -> None:
        self.table.cycle_group()
        self.notify(f"Rows grouped by {self.table.group.value}", timeout=2)
        self._save_ui()
        self._tick()

    def action_columns(self) -> None:
        self.push_screen(ColumnsScreen(self.table.chosen), callback=self._columns_chosen)

    def _columns_chosen(self, chosen: tuple[str, ...] | None) -> None:
        if chosen is not None:
            self.table.chosen = chosen
            self._save_ui()
            self._tick()

    def action_compact(self) -> None:
        table = self.table
        table.compact = not table.compact
        self.screen_stack[0].set_class(table.compact, "-compact")
        self._save_ui()
        self._tick()

    # -- an exchange that cannot be reached --------------------------------------------------

    def _show_offline(self, now: float) -> None:
        """The banner and the rows' state while the start waits for an unreachable exchange."""
        offline = self.runtime.offline() if self.runtime is not None else None
        banner = self.query_one("#banner", Static)
        if offline is None:
            if self.table.placeholder == "offline":
                self.table.placeholder = "checking"
            banner.set_class(False, "-visible")
            return
        reason, retry_at = offline
        self.table.placeholder = "offline"
        wait = None if retry_at is None else retry_at - now
        when = f"next try in {math.ceil(wait)} s" if wait is not None and wait >= 0.5 else "trying"
        # The first line fits 80 columns whole; the reason below it may be cut.
        banner.update(
            f"⚠ The exchange cannot be reached · {when} · no network? kline-tui --demo\n{reason}"
        )
        banner.set_class(True, "-visible")

    def action_help(self) -> None:
        settings = self.settings
        self.push_screen(
            HelpScreen(fmt.short_path(settings.config_path), fmt.short_path(settings.location))
        )

    # -- alerts -----------------------------------------------------------------------------------

    def _alert_fired(self, firing: Firing) -> None:
        """A firing (the recorder's loop is the app's): mark the row, ring, toast, notify."""
        with contextlib.suppress(ValueError):
            self.alerted[StreamKey.parse(firing.stream)] = self.clock() + ALERT_MARK_S
        self.notifier.alert(firing)

    def action_new_alert(self) -> None:
        key = self.table.selected
        if key is None or not self.running:
            return
        state = self.recorder.streams.get(key)
        price = state.forming.close if state is not None and state.forming is not None else None
        self.push_screen(AlertDialog(key, self._save_alert, price=price))

    async def _save_alert(self, config: AlertConfig, replacing: str | None = None) -> None:
        """Add an alert (ValueError: why it cannot work), then delete the one it edits: only
        once the add worked, and only when it is another alert (the same id is updated in
        place, keeping its state)."""
        await self.recorder.add_alert(config)
        if replacing is not None and replacing != alert_id(config):
            await self.recorder.delete_alert(replacing)
        self.notify(f"Alert saved: {config.stream} {config.rule} {config.value:g}", timeout=4)

    def action_alerts(self) -> None:
        self.push_screen(
            AlertsScreen(
                self.recorder.alert_rows,
                mute=self._mute_alert,
                edit=self._edit_alert,
                delete=self._delete_alert,
            )
        )

    def _mute_alert(self, row: AlertRow) -> None:
        self.run_worker(
            self.recorder.mute_alert(row.id, not row.muted),
            name="muting an alert",
            exit_on_error=False,
        )

    def _delete_alert(self, row: AlertRow) -> None:
        self.run_worker(
            self.recorder.delete_alert(row.id), name="deleting an alert", exit_on_error=False
        )

    def _edit_alert(self, row: AlertRow) -> None:
        try:
            key = StreamKey.parse(row.stream)
        except ValueError:
            return

        async def save(config: AlertConfig) -> None:
            await self._save_alert(config, replacing=row.id)

        self.push_screen(AlertDialog(key, save, editing=row))

    async def wait_started(self) -> None:
        """Wait until the pipeline has started (for tests and scripts)."""
        await self._started.wait()


def run_app(settings: Settings, *, demo_speed: float | None = None) -> int:
    """Run the UI in this terminal until the user quits; returns the exit code (see ui.terminal)."""
    return run_in_terminal(KlineApp(settings, demo_speed=demo_speed))


def run_attached(
    settings: Settings, url: str, token: str | None, *, add: list[StreamKey] | None = None
) -> int:
    """Run the UI on the recorder at `url` until the user quits (the recorder goes on); `add`:
    streams to add to it once attached."""
    from kline_tui.service.client import RemoteRecorder

    client = RemoteRecorder(url, token, EventLog())
    recorder = AttachedRecorder(client, url, settings, add_on_attach=add)
    return run_in_terminal(KlineApp(settings, recorder=recorder))
