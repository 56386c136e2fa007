"""The add dialog: a market, an interval, a kind of kline and symbols (or pairs), checked before
anything subscribes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label, Select, Static

from kline_tui.model import Interval, Kind, Market, SpecError, StreamKey
from kline_tui.recorder.pipeline import StreamRefused

__all__ = ["AddStreamsScreen", "SymbolSuggester", "kinds_of", "pairs_of", "parse_symbols"]

_SEPARATORS = re.compile(r"[\s,;]+")


def parse_symbols(text: str) -> list[str]:
    """The symbols typed, in order, without repeats: `btcusdt, ethusdt` -> [BTCUSDT, ETHUSDT]."""
    return list(dict.fromkeys(s.upper() for s in _SEPARATORS.split(text.strip()) if s))


def kinds_of(market: Market) -> list[Kind]:
    """The kinds of kline `market` offers: spot only trade klines, futures every kind."""
    return [kind for kind in Kind if market in kind.markets()]


def pairs_of(symbols: list[str]) -> list[str]:
    """The pairs of a futures market's symbols, which index and continuous klines are keyed by:
    Binance names a contract after its pair (`BTCUSDT`, `BTCUSDT_250328`, `BTCUSD_PERP`)."""
    return sorted({symbol.split("_")[0] for symbol in symbols})


_KIND_WORDS = {
    Kind.TRADE: "trade",
    Kind.MARK: "mark price",
    Kind.INDEX: "index price (pair)",
    Kind.PREMIUM: "premium index",
    Kind.PERPETUAL: "perpetual (pair)",
    Kind.CURRENT_QUARTER: "current quarter (pair)",
    Kind.NEXT_QUARTER: "next quarter (pair)",
}


class SymbolSuggester(Suggester):
    """Completes the symbol being typed (the last one in the field) from the market's symbols."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        # Shortest first, so BTC suggests BTCUSDT before BTCUSDT_PERP...
        self.symbols: list[str] = []

    async def get_suggestion(self, value: str) -> str | None:
        match = re.search(r"[^\s,;]+$", value)
        if match is None:
            return None
        typed = match.group().upper()
        for symbol in self.symbols:
            if symbol.startswith(typed) and symbol != typed:
                return value + symbol[len(typed) :]
        return None


AddCallback = Callable[[list[StreamKey]], Awaitable[list[StreamKey]]]
SymbolsLoader = Callable[[Market], Awaitable[list[str]]]


class AddStreamsScreen(ModalScreen[list[StreamKey] | None]):
    """Asks for streams to add; dismisses with the streams added, or None when cancelled.

    `add` subscribes the streams or raises StreamRefused; the refusal is shown here and the
    dialog stays open, so a typo costs one edit, not a new dialog.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape", "cancel", "Cancel", id="add-cancel", tooltip="Close without adding anything"
        ),
    ]

    def __init__(
        self,
        add: AddCallback,
        load_symbols: SymbolsLoader,
        *,
        market: Market = Market.USDM,
        interval: Interval = Interval.M1,
        kind: Kind = Kind.TRADE,
    ) -> None:
        super().__init__()
        self._add = add
        self._load_symbols = load_symbols
        self._market = market
        self._interval = interval if interval in market.intervals else Interval.M1
        self._kind = kind if market in kind.markets() else Kind.TRADE
        self._symbols: list[str] = []  # the market's symbols, once loaded
        self.suggester = SymbolSuggester()

    def compose(self) -> ComposeResult:
        with Vertical(id="add-dialog") as dialog:
            dialog.border_title = "Add streams"
            with Horizontal(classes="add-row"):
                yield Label("Market", classes="add-label")
                yield Select(
                    [(m.value, m) for m in Market],
                    value=self._market,
                    allow_blank=False,
                    id="add-market",
                )
                yield Label("Interval", classes="add-label")
                yield Select(
                    [(i.value, i) for i in self._market.intervals],
                    value=self._interval,
                    allow_blank=False,
                    id="add-interval",
                )
            with Horizontal(classes="add-row"):
                yield Label("Kind", classes="add-label")
                yield Select(
                    [(_KIND_WORDS[k], k) for k in kinds_of(self._market)],
                    value=self._kind,
                    allow_blank=False,
                    disabled=len(kinds_of(self._market)) == 1,
                    id="add-kind",
                )
            with Horizontal(classes="add-row"):
                yield Label("Symbols", classes="add-label")
                yield Input(
                    placeholder="e.g. BTCUSDT ETHUSDT",
                    suggester=self.suggester,
                    restrict=r"[A-Za-z0-9_ ,;]*",
                    id="add-symbols",
                )
            yield Static("", id="add-hint")
            yield Static("", id="add-error")
            with Horizontal(id="add-buttons"):
                yield Button("Cancel", id="add-cancel-button")
                yield Button("Add", variant="primary", id="add-ok")

    def on_mount(self) -> None:
        self.query_one("#add-symbols", Input).focus()
        self._reload_symbols(self._market)

    # Neither Select allows a blank, so each always holds a choice.
    @property
    def market(self) -> Market:
        market = self.query_one("#add-market", Select).value
        assert isinstance(market, Market)
        return market

    @property
    def interval(self) -> Interval:
        interval = self.query_one("#add-interval", Select).value
        assert isinstance(interval, Interval)
        return interval

    @property
    def kind(self) -> Kind:
        kind = self.query_one("#add-kind", Select).value
        assert isinstance(kind, Kind)
        return kind

    def show_error(self, message: str) -> None:
        error = self.query_one("#add-error", Static)
        error.update(message)
        error.set_class(bool(message), "-visible")

    @on(Select.Changed, "#add-market")
    def _market_changed(self, event: Select.Changed) -> None:
        market = event.value
        assert isinstance(market, Market)
        intervals = self.query_one("#add-interval", Select)
        current = intervals.value
        intervals.set_options([(i.value, i) for i in market.intervals])
        intervals.value = current if current in market.intervals else Interval.M1
        kinds = self.query_one("#add-kind", Select)
        kind = kinds.value
        offered = kinds_of(market)
        kinds.set_options([(_KIND_WORDS[k], k) for k in offered])
        kinds.value = kind if kind in offered else Kind.TRADE
        kinds.disabled = len(offered) == 1
        self.show_error("")
        self._reload_symbols(market)

    @on(Select.Changed, "#add-kind")
    def _kind_changed(self) -> None:
        self._suggest()

    @work(exclusive=True, group="symbols", exit_on_error=False)
    async def _reload_symbols(self, market: Market) -> None:
        hint = self.query_one("#add-hint", Static)
        self.suggester.symbols = []
        hint.update(f"loading {market.value} symbols…")
        try:
            symbols = await self._load_symbols(market)
        except Exception as exc:  # noqa: BLE001 - shown in the dialog; the check on add still runs
            hint.update(f"cannot load {market.value} symbols for completion: {exc}")
            return
        self._symbols = list(symbols)
        self._suggest()

    def _suggest(self) -> None:
        """Suggestions and the hint for the market's symbols, or its pairs for a kind keyed by
        pair (index and continuous klines)."""
        if not self._symbols:
            return
        by_pair = self.kind.keyed_by_pair
        names = pairs_of(self._symbols) if by_pair else self._symbols
        self.suggester.symbols = sorted(names, key=lambda s: (len(s), s))
        what = "pairs" if by_pair else "symbols"
        coinm = self.market is Market.COINM
        example = ("BTCUSD ETHUSD" if by_pair else "BTCUSD_PERP") if coinm else "BTCUSDT ETHUSDT"
        self.query_one("#add-symbols", Input).placeholder = f"e.g. {example}"
        self.query_one("#add-hint", Static).update(
            f"{len(names):,} {what} trade on {self.market.value}. Several at once: separate "
            "them with spaces or commas; → accepts a suggestion; enter adds."
        )

    @on(Input.Submitted, "#add-symbols")
    @on(Button.Pressed, "#add-ok")
    def _submit(self) -> None:
        symbols = parse_symbols(self.query_one("#add-symbols", Input).value)
        if not symbols:
            self.show_error("Type at least one symbol, e.g. BTCUSDT.")
            return
        try:
            keys = [StreamKey.of(self.market, s, self.interval, self.kind) for s in symbols]
        except SpecError as exc:
            self.show_error(f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
            return
        self._subscribe(keys)

    @work(exclusive=True, group="add", exit_on_error=False)
    async def _subscribe(self, keys: list[StreamKey]) -> None:
        button = self.query_one("#add-ok", Button)
        button.disabled = True
        self.show_error("")
        try:
            added = await self._add(keys)
        except StreamRefused as exc:
            problems = [p[:1].upper() + p[1:] for p in exc.problems]
            self.show_error(
                "\n".join(problems) + "\nNothing was added: fix the symbols and press enter."
            )
            return
        finally:
            button.disabled = False
        if not added:
            self.show_error("Already watching " + ", ".join(str(k) for k in keys) + ".")
            return
        self.dismiss(added)

    @on(Button.Pressed, "#add-cancel-button")
    def action_cancel(self) -> None:
        self.dismiss(None)
