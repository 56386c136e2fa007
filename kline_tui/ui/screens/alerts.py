"""The alerts screen: every alert of the recorder, what it did; mute, edit, delete."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from kline_tui.service.protocol import AlertRow

__all__ = ["AlertsScreen"]

_COLUMNS = ("Stream", "Rule", "State", "Fired", "Last fired (UTC)", "Cooldown")
_ALWAYS = 3  # stream, rule and state are always shown; the rest only when they fit whole
_CELL_PADDING = 2  # DataTable's, one cell each side


def _last_fired(ms: int | None) -> str:
    if ms is None:
        return "—"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
    except (OverflowError, OSError, ValueError):  # no such date (the client bounds it anyway)
        return "?"


def _fitting(cells: Sequence[tuple[str, ...]], width: int) -> list[int]:
    """The columns (indexes) that fit `width` whole: the first `_ALWAYS`, then each next one
    while it fits."""
    shown: list[int] = []
    used = 0
    for i, title in enumerate(_COLUMNS):
        need = max([cell_len(title), *(cell_len(line[i]) for line in cells)]) + _CELL_PADDING
        if i >= _ALWAYS and used + need > width:
            break
        shown.append(i)
        used += need
    return shown


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
        self._width = 0  # the table's width the columns were chosen for

    def compose(self) -> ComposeResult:
        with Vertical(id="alerts-box") as box:
            box.border_title = "Alerts"
            box.border_subtitle = "m mutes · e edits · d deletes · esc closes"
            yield DataTable[Text](id="alerts-table", cursor_type="row")
            yield Static("", id="alerts-empty")

    def on_mount(self) -> None:
        self.update_view()
        self.call_after_refresh(self.update_view)  # the columns that fit, once laid out
        self.query_one("#alerts-table", DataTable).focus()

    @property
    def selected(self) -> AlertRow | None:
        table = self.query_one("#alerts-table", DataTable)
        if 0 <= table.cursor_row < len(self._shown):
            return self._shown[table.cursor_row]
        return None

    def on_resize(self) -> None:
        self.call_after_refresh(self.update_view)  # once the table has its new size

    def update_view(self) -> None:
        """Redraw the rows when an alert changed (the app calls this at its repaint rate), or
        the width did: columns that do not fit whole are left out, the last first."""
        rows = list(self._rows())
        drawn: list[tuple[object, ...]] = [
            (r.id, r.stream, r.description, r.cooldown_s, r.muted, r.fired, r.last_fired_at)
            for r in rows
        ]
        table = self.query_one("#alerts-table", DataTable)
        width = table.scrollable_content_region.width
        if drawn == self._drawn and width == self._width:
            return
        self._shown, self._drawn, self._width = rows, drawn, width
        cells = [
            (
                row.stream,
                row.description,
                "muted" if row.muted else "on",
                str(row.fired),
                _last_fired(row.last_fired_at),
                f"{row.cooldown_s:g} s",
            )
            for row in rows
        ]
        shown = _fitting(cells, width)
        cursor = table.cursor_row
        table.clear(columns=True)
        table.add_columns(*(_COLUMNS[i] for i in shown))
        for row, line in zip(rows, cells, strict=True):
            # Text, never a str: a str cell is read as markup, and these come from the recorder.
            table.add_row(*(Text(line[i]) for i in shown), key=row.id)
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
