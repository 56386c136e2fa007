"""The command palette's commands: every key of the app by name, and a sort by each column.

A key is declared once, as a `PaletteBinding` in the app's BINDINGS: the footer shows its short
`description`, the palette its `command` name with the `tooltip` and the key, and the help
screen the tooltip. `KeyCommands` reads them from there, so nothing here repeats a name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from kline_tui.ui.widgets.watch_table import Sort

if TYPE_CHECKING:
    from kline_tui.ui.app import KlineApp

__all__ = ["KeyCommands", "PaletteBinding", "key_names"]


@dataclass(frozen=True)
class PaletteBinding(Binding):
    """A key that is also a command in the palette, named `command` there."""

    command: str = ""


def key_names(app: App[Any], keys: str) -> str:
    """Keys as the footer writes them: `d,delete` as `d / del`, `question_mark` as `?`."""
    return " / ".join(app.get_key_display(Binding(key, "")) for key in keys.split(","))


class Command(NamedTuple):
    name: str
    help: str
    run: Callable[[], object]
    discover: bool  # listed when the palette opens; otherwise only found by searching


class KeyCommands(Provider):
    """The app's keys as commands, offered only while they can run on the screen the palette was
    opened from (so "Resume recording" only while paused, "Remove stream" only on the table);
    and "Sort by …" for each order, found by searching."""

    @property
    def kline_app(self) -> KlineApp:
        return cast("KlineApp", self.app)

    def commands(self) -> Iterator[Command]:
        app = self.kline_app
        for binding in app.BINDINGS:
            if isinstance(binding, PaletteBinding) and app.can_run(binding.action, self.screen):
                run = partial(app.run_action, binding.action)
                what = f"{binding.tooltip} ({key_names(app, binding.key)})"
                yield Command(binding.command, what, run, True)
        if app.can_run("sort_by", self.screen):
            for sort in Sort:
                run = partial(app.run_action, f"sort_by({sort.name!r})")
                name = f"Sort by {sort.label}"
                yield Command(name, f"Order the rows by {sort.label}", run, False)

    async def discover(self) -> Hits:
        for command in self.commands():
            if command.discover:
                yield DiscoveryHit(command.name, command.run, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self.commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(score, matcher.highlight(command.name), command.run, help=command.help)
