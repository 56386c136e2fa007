"""The status bar: the whole desk in one line."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

__all__ = ["Overview", "StatusBar"]


@dataclass(frozen=True, slots=True)
class Overview:
    """What the status bar says, in the units it prints (so an unchanged line compares equal)."""

    streams: int = 0
    live: int = 0  # streams whose live events arrive
    connections: int = 0
    connected: int = 0  # connections that are open and live
    unreachable: bool = False  # an attached UI's recorder cannot be reached
    rate: int = 0  # messages per second, rounded as shown
    recording: bool = True
    shown: int = 0  # rows the filter lets through
    sort: str = "watch list"
    filter_text: str = ""
    mode: str = ""  # "demo 60x", "starting…"


class StatusBar(Static):
    """Streams and how many are live, connections, messages per second, recording, view.

    The app sets `overview` at every repaint; the line is drawn again only when it changed.
    """

    overview: reactive[Overview] = reactive(Overview)

    def watch_overview(self, overview: Overview) -> None:
        self.update(_line(overview))


def _line(o: Overview) -> Text:
    # What is recorded comes first, so a narrow terminal cuts the details, never that.
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(" kline-tui ", style="bold reverse")
    text.append(" ")
    # Recording only while something is connected: a recorder that waits for the exchange, or
    # whose every connection is down, records nothing, whatever it means to do.
    if o.unreachable:
        text.append("○ recorder unreachable", style="bold yellow")
    elif not o.recording:
        # "live" only while something is connected: paused and offline, nothing arrives.
        if o.connected:
            text.append("⏸ paused: live, not recording", style="bold yellow")
        else:
            text.append("⏸ paused: nothing connected", style="bold yellow")
    elif o.connected:
        text.append("● recording", style="green")
    else:
        text.append("○ not recording: nothing connected", style="bold red")
    if o.mode:
        text.append(f" · {o.mode}", style="bold")
    text.append(f" · {o.streams:,} streams", style="bold")
    text.append(f" ({o.live:,} live)")
    text.append(f" · {o.connections} connections · {o.rate:,} msg/s")
    text.append(f" · sorted by {o.sort}", style="dim")
    if o.filter_text:
        text.append(" · filter ")
        text.append(f"“{o.filter_text}”", style="bold")
        text.append(f" ({o.shown:,} of {o.streams:,})")
    return text
