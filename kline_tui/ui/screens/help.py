"""Help: the keys, what each column means, where things live."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from kline_tui.ui.commands import key_names
from kline_tui.ui.widgets.watch_table import SPARK_CANDLES

__all__ = ["HelpScreen"]

_COLUMNS = (
    ("Mkt", "market: spot, usdm (USDS-M futures) or coinm (COIN-M futures)"),
    (
        "Symbol",
        "the symbol, or the pair of index and continuous klines; a kind other than trade "
        "klines follows as a tag: ·mark, ·idx (index), ·prem (premium), ·perp, ·cq, ·nq "
        "(current and next quarter)",
    ),
    ("Int", "kline interval (1m is a minute, 1M a month)"),
    ("Last", "price of the latest update; green when it last moved up, red when down"),
    ("vs open", "change of the last price from the open of the current (forming) candle"),
    ("High/Low", "of the current candle"),
    (
        "Volume",
        "of the current candle, in the base asset (contracts on coinm); blank for mark, index "
        "and premium klines, which have none",
    ),
    ("Trades", "in the current candle"),
    (f"Last {SPARK_CANDLES} closes", "closes of the recent closed candles, newest right"),
    ("Rec", "closed candles of this stream recorded this session"),
    (
        "State",
        "checking or offline (the exchange has not answered yet), subscribing, waiting (no data "
        "yet), live (also while paused: not recording), stale (silent), reconnecting, backfill N "
        "(candles still to fetch), error",
    ),
)


class HelpScreen(ModalScreen[None]):
    """Keys and columns, over the main screen.

    The keys are the app's own BINDINGS, each with its tooltip, so help says what the footer and
    the command palette say; a key bound to two actions (p: pause, resume) is listed once, with
    the words of the first.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape,question_mark,q",
            "close",
            "Close",
            id="help-close",
            tooltip="Back to the streams",
        ),
    ]

    def __init__(self, config_path: str, data_dir: str) -> None:
        super().__init__()
        self._config_path = config_path
        self._data_dir = data_dir

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog") as dialog:
            dialog.border_title = "Help"
            dialog.border_subtitle = "esc closes"
            yield Static(self._keys_and_columns())
            yield Static(Text("\nFiles", style="bold underline"))
            yield Static(self._files())

    def action_close(self) -> None:
        self.dismiss(None)

    def key_rows(self) -> list[tuple[str, str]]:
        """(keys, what they do) for each of the app's bindings, in the order declared."""
        rows: dict[str, str] = {}
        for binding in self.app.BINDINGS:
            if isinstance(binding, Binding) and binding.tooltip:
                rows.setdefault(binding.key, binding.tooltip)
        return [(key_names(self.app, key), what) for key, what in rows.items()]

    def _keys_and_columns(self) -> Table:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(ratio=1)
        table.add_row(Text("Keys", style="bold underline"), "")
        for keys, what in self.key_rows():
            table.add_row(keys, what)
        table.add_row(
            "↑ ↓ PgUp PgDn", "move the cursor; mouse: click a row, double-click for details"
        )
        table.add_row(
            key_names(self.app, self.app.COMMAND_PALETTE_BINDING),
            "command palette: every action by name",
        )
        table.add_row("", "")
        table.add_row(
            Text("Columns", style="bold underline"),
            "click a header to sort by it; c chooses them, g groups the rows, z is compact",
        )
        for name, what in _COLUMNS:
            table.add_row(name, what)
        return table

    def _files(self) -> Text:
        where = Text()
        where.append("Config ", style="bold")
        where.append(f"{self._config_path}\n")
        where.append("Data   ", style="bold")
        where.append(f"{self._data_dir}  (Parquet, hive-partitioned by market, interval and date)")
        return where
