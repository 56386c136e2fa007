"""A painted line must be freed by reference counting, not left for the collector.

Textual's `Strip.divide` caches `[self]` for a line that needs no cut (every line nothing
overlaps): a strip referring to itself. `kline_tui.ui.strip_cycles` stops that one case; these
tests hold both facts, so a Textual that fixes it upstream is noticed (and the fix removed).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from kline_tui.ui import strip_cycles

TEXT = "BTCUSDT  91,234.50  +1.25%"


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _left_for_the_collector(divide: Callable[[Strip, list[int]], list[Strip]]) -> int:
    """Objects only the collector can free after a full-length divide of a fresh strip."""
    strip = Strip([Segment(TEXT, Style(bold=True))])
    divide(strip, [strip.cell_length])
    del strip
    return gc.collect()


def test_textual_still_leaves_a_cycle_without_the_fix(collector_off: None) -> None:
    strip_cycles.install()
    original = Strip.divide.__wrapped__  # type: ignore[attr-defined]
    assert _left_for_the_collector(original) > 0


def test_a_full_length_divide_is_freed_at_once(collector_off: None) -> None:
    strip_cycles.install()
    assert _left_for_the_collector(Strip.divide) == 0


def test_divide_still_cuts_and_caches_as_before() -> None:
    strip_cycles.install()
    strip = Strip([Segment(TEXT)])
    n = strip.cell_length
    assert strip.divide([n]) == [strip]
    assert strip.divide([n, n + 10]) == [strip]  # cuts past the end are ignored
    left, right = strip.divide([7, n])
    assert (left.text, right.text) == (TEXT[:7], TEXT[7:])
    assert strip.divide([7, n]) is strip.divide([7, n])  # other cuts are still cached
    assert strip.divide([7, n])[0] is left


def test_install_is_idempotent() -> None:
    strip_cycles.install()
    divide = Strip.divide
    strip_cycles.install()
    assert Strip.divide is divide
    assert not getattr(divide.__wrapped__, "_kline_tui_no_self_cycle", False)  # type: ignore[attr-defined]
