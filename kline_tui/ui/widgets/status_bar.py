"""The status bar: the whole desk in one line."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

__all__ = ["StatusBar"]


class StatusBar(Static):
    """Streams and how many are live, connections, messages per second, recording, view."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple | None = None

    def show(
        self,
        *,
        streams: int,
        live: int,
        connections: int,
        rate: float,
        recording: bool,
        shown: int,
        sort: str,
        filter_text: str,
        mode: str,
    ) -> None:
        key = (streams, live, connections, round(rate), recording, shown, sort, filter_text, mode)
        if key == self._shown:
            return
        self._shown = key
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" kline-tui ", style="bold reverse")
        if mode:
            text.append(f" {mode} ", style="bold")
        text.append(f"  {streams:,} streams", style="bold")
        text.append(f" ({live:,} live)")
        text.append(f" · {connections} connections · {rate:,.0f} msg/s · ")
        if recording:
            text.append("● recording", style="green")
        else:
            text.append("⏸ paused", style="bold yellow")
        text.append(f" · sorted by {sort}", style="dim")
        if filter_text:
            text.append(" · filter ")
            text.append(f"“{filter_text}”", style="bold")
            text.append(f" ({shown:,} of {streams:,})")
        self.update(text)
