"""The alerts screen: every alert of the recorder, what it did; mute, edit, delete."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from kline_tui.service.protocol import AlertRow

__all__ = ["AlertsScreen"]

_COLUMNS = ("Stream", "Rule", "Cooldown", "State", "Fired", "Last fired (UTC)")


def _last_fired(ms: int | None) -> str:
    if ms is None:
        return "—"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
    except (OverflowError, OSError, ValueError):  # no such date (the client bounds it anyway)
        return "?"


class AlertsScreen(ModalScreen[None]):
    """The recorder's alerts, read again at each `update_view`. The app acts on them:
    `mute(row)`, `edit(row)`, `delete(row)`."""

    CSS_PATH = "../alerts.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="alerts-close", tooltip="Back to the streams"),
        Binding("m", "mute", "Mute/unmute", id="alerts-mute", tooltip="Mute or unmute it"),
        Binding("e", "edit", "Edit", id="alerts-edit", tooltip="Change its rule or value"),
        Binding("d,delete", "delete", "Delete", id="alerts-delete", tooltip="Delete the alert"),
    ]

    def __init__(
        self,
        rows: Callable[[], list[AlertRow]],
        *,
        mute: Callable[[AlertRow], None],
        edit: Callable[[AlertRow], None],
        delete: Callable[[AlertRow], None],
    ) -> None:
        super().__init__()
        self._rows = rows
        self._mute, self._edit, self._delete = mute, edit, delete
        self._shown: list[AlertRow] = []
        self._drawn: list[tuple[object, ...]] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="alerts-box") as box:
            box.border_title = "Alerts"
            table: DataTable[Text] = DataTable(id="alerts-table", cursor_type="row")
            table.add_columns(*_COLUMNS)
            yield table
            yield Static("", id="alerts-empty")

    def on_mount(self) -> None:
        self.update_view()
        self.query_one("#alerts-table", DataTable).focus()

    @property
    def selected(self) -> AlertRow | None:
        table = self.query_one("#alerts-table", DataTable)
        if 0 <= table.cursor_row < len(self._shown):
            return self._shown[table.cursor_row]
        return None

    def update_view(self) -> None:
        """Redraw the rows when an alert changed (the app calls this at its repaint rate)."""
        rows = list(self._rows())
        drawn: list[tuple[object, ...]] = [
            (r.id, r.stream, r.description, r.cooldown_s, r.muted, r.fired, r.last_fired_at)
            for r in rows
        ]
        if drawn == self._drawn:
            return
        self._shown, self._drawn = rows, drawn
        table = self.query_one("#alerts-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for row in rows:
            cells = (
                row.stream,
                row.description,
                f"{row.cooldown_s:g} s",
                "muted" if row.muted else "on",
                str(row.fired),
                _last_fired(row.last_fired_at),
            )
            # Text, never a str: a str cell is read as markup, and these come from the recorder.
            table.add_row(*(Text(cell) for cell in cells), key=row.id)
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))
        self.query_one("#alerts-empty", Static).update(
            "" if rows else "No alerts yet: select a stream and press ! to make one."
        )

    def action_close(self) -> None:
        self.dismiss(None)

    def action_mute(self) -> None:
        if (row := self.selected) is not None:
            self._mute(row)

    def action_edit(self) -> None:
        if (row := self.selected) is not None:
            self._edit(row)

    def action_delete(self) -> None:
        if (row := self.selected) is not None:
            self._delete(row)
