"""The alert dialog: a rule, its value, window and cooldown, for the selected stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

import msgspec
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from kline_tui.config import ALERT_RULES, AlertConfig, explain_alert_error, parse_alert
from kline_tui.model import StreamKey
from kline_tui.service.client import RemoteError
from kline_tui.service.protocol import AlertRow

__all__ = ["AlertDialog"]

_HINTS = {
    "price_above": "Fires when the live price rises past this level.",
    "price_below": "Fires when the live price falls past this level.",
    "change_pct": "Fires when the close moved this many percent over the window's closed "
    "candles (negative: a fall).",
    "volume_spike": "Fires when a closed candle's volume is this multiple of the window's mean.",
    "stale": "Fires after this many seconds (exchange time) without an update.",
    "missing": "Fires when at least this many closed candles are missing (a gap not filled).",
}

SaveAlert = Callable[[AlertConfig], Awaitable[None]]


class AlertDialog(ModalScreen[AlertConfig | None]):
    """Asks for one alert on `key`; `save` adds it (raising ValueError with a sentence when it
    cannot work, shown here). Dismisses with the alert saved, or None when cancelled."""

    CSS_PATH = "../alerts.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="alert-cancel", tooltip="Close, saving nothing"),
    ]

    def __init__(
        self,
        key: StreamKey,
        save: SaveAlert,
        *,
        price: float | None = None,
        editing: AlertRow | None = None,
    ) -> None:
        super().__init__()
        self.key = key
        self._save = save
        self._price = price
        self._editing = editing

    def compose(self) -> ComposeResult:
        editing = self._editing
        rule = editing.rule if editing is not None else "price_above"
        with Vertical(id="alert-dialog") as dialog:
            dialog.border_title = f"{'Edit' if editing else 'New'} alert on {self.key}"
            with Horizontal(classes="alert-row"):
                yield Label("Rule", classes="alert-label")
                yield Select(
                    [(name.replace("_", " "), name) for name in ALERT_RULES],
                    value=rule,
                    allow_blank=False,
                    id="alert-rule",
                )
            with Horizontal(classes="alert-row"):
                yield Label("Value", classes="alert-label")
                yield Input(
                    self._value_for(rule) if editing is None else f"{editing.value:g}",
                    type="number",
                    id="alert-value",
                )
            with Horizontal(classes="alert-row"):
                yield Label("Window", classes="alert-label")
                yield Input(
                    str(editing.window if editing else 5), type="integer", id="alert-window"
                )
                yield Label("Cooldown s", classes="alert-label")
                yield Input(
                    f"{editing.cooldown_s:g}" if editing else "300",
                    type="number",
                    id="alert-cooldown",
                )
            yield Static(_HINTS[rule], id="alert-hint")
            yield Static("", id="alert-error", markup=False)  # may quote the recorder
            with Horizontal(id="alert-buttons"):
                yield Button("Cancel", id="alert-cancel-button")
                yield Button("Save", variant="primary", id="alert-ok")

    def on_mount(self) -> None:
        self.query_one("#alert-value", Input).focus()

    def _value_for(self, rule: str) -> str:
        """A starting value: the price for a crossing, a typical level for the rest."""
        if rule in ("price_above", "price_below"):
            return f"{self._price:g}" if self._price is not None else ""
        return {"change_pct": "1", "volume_spike": "3", "stale": "60", "missing": "1"}[rule]

    @property
    def rule(self) -> str:
        return str(self.query_one("#alert-rule", Select).value)

    def show_error(self, message: str) -> None:
        error = self.query_one("#alert-error", Static)
        error.update(message)
        error.set_class(bool(message), "-visible")

    @on(Select.Changed, "#alert-rule")
    def _rule_changed(self, event: Select.Changed) -> None:
        self.query_one("#alert-value", Input).value = self._value_for(self.rule)
        self.query_one("#alert-hint", Static).update(_HINTS[self.rule])
        self.show_error("")

    def config(self) -> AlertConfig:
        """The alert as typed; raises ValueError with one sentence when it cannot be one."""
        fields = {
            "value": self.query_one("#alert-value", Input).value,
            "window": self.query_one("#alert-window", Input).value,
            "cooldown_s": self.query_one("#alert-cooldown", Input).value,
        }
        numbers: dict[str, float | int] = {}
        for name, text in fields.items():
            try:
                numbers[name] = int(text) if name == "window" else float(text)
            except ValueError:
                raise ValueError(f"{name.replace('_s', '')}: type a number") from None
        muted = self._editing.muted if self._editing is not None else False
        try:
            config = msgspec.convert(
                {"stream": str(self.key), "rule": self.rule, "muted": muted, **numbers},
                AlertConfig,
            )
        except msgspec.ValidationError as exc:
            raise ValueError(explain_alert_error(exc)) from None
        parse_alert(config)
        return config

    @on(Input.Submitted)
    @on(Button.Pressed, "#alert-ok")
    def _submit(self) -> None:
        try:
            config = self.config()
        except ValueError as exc:
            self.show_error(f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
            return
        self._store(config)

    @work(exclusive=True, group="alert-save", exit_on_error=False)
    async def _store(self, config: AlertConfig) -> None:
        button = self.query_one("#alert-ok", Button)
        button.disabled = True
        try:
            await self._save(config)
        except (ValueError, RemoteError) as exc:
            self.show_error(str(exc))
            return
        finally:
            button.disabled = False
        self.dismiss(config)

    @on(Button.Pressed, "#alert-cancel-button")
    def action_cancel(self) -> None:
        self.dismiss(None)
