"""Choosing the watch table's columns and their order; the app saves the choice in `[ui]`."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import SelectionList, Static
from textual.widgets.selection_list import Selection

from kline_tui.ui.widgets.watch_table import COLUMNS, REQUIRED

__all__ = ["ColumnsScreen"]

_TITLES = {c.id: c.title for c in COLUMNS}


class ColumnsScreen(ModalScreen[tuple[str, ...] | None]):
    """Every column, the chosen ones ticked, in the order shown; dismisses with the chosen ids in
    order (enter), or None (escape). The symbol and the state are always shown."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # Before the list's own enter (which ticks, as space does).
        Binding(
            "enter",
            "apply",
            "Apply",
            id="columns-apply",
            priority=True,
            tooltip="Use these columns",
        ),
        Binding("escape", "cancel", "Cancel", id="columns-cancel", tooltip="Keep the columns"),
        Binding(
            "shift+up,left_square_bracket",
            "move(-1)",
            "Move up",
            id="columns-up",
            tooltip="Move the highlighted column left in the table",
        ),
        Binding(
            "shift+down,right_square_bracket",
            "move(1)",
            "Move down",
            id="columns-down",
            tooltip="Move the highlighted column right in the table",
        ),
    ]

    def __init__(self, chosen: tuple[str, ...]) -> None:
        super().__init__()
        known = [c for c in chosen if c in _TITLES]
        self._order = list(dict.fromkeys([*known, *(c.id for c in COLUMNS)]))
        self._chosen = set(known) | set(REQUIRED)

    def compose(self) -> ComposeResult:
        with Vertical(id="columns-dialog") as dialog:
            dialog.border_title = "Columns"
            dialog.border_subtitle = "space ticks · [ ] move · enter applies · esc cancels"
            yield SelectionList[str](*self._selections(), id="columns-list")
            yield Static(
                "Left to right, top to bottom. Symbol and state are always shown; columns that "
                "do not fit the width are left out, the least useful first.",
                id="columns-hint",
            )

    def on_mount(self) -> None:
        self.query_one("#columns-list", SelectionList).highlighted = 0

    def _selections(self) -> list[Selection[str]]:
        return [
            Selection(
                _TITLES[c] + (" (always shown)" if c in REQUIRED else ""), c, c in self._chosen
            )
            for c in self._order
        ]

    @property
    def chosen(self) -> tuple[str, ...]:
        """The ticked column ids, in the order shown."""
        return tuple(c for c in self._order if c in self._chosen)

    @on(SelectionList.SelectedChanged, "#columns-list")
    def _ticked(self, event: SelectionList.SelectedChanged[str]) -> None:
        self._chosen = set(event.selection_list.selected) | set(REQUIRED)

    def action_move(self, step: int) -> None:
        options = self.query_one("#columns-list", SelectionList)
        at = options.highlighted
        if at is None or not 0 <= at + step < len(self._order):
            return
        order = self._order
        order[at], order[at + step] = order[at + step], order[at]
        with self.app.batch_update():
            options.clear_options()
            options.add_options(self._selections())
            options.highlighted = at + step

    def action_apply(self) -> None:
        self.dismiss(self.chosen)

    def action_cancel(self) -> None:
        self.dismiss(None)
