"""The recording panel: where candles go, how many wait in memory, how many are on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from kline_tui.recorder.sink import SinkStats
from kline_tui.ui import format as fmt

__all__ = ["RecordingPanel", "RecordingView"]


@dataclass(frozen=True, slots=True)
class RecordingView:
    """What the panel says, in the units it prints: ages as the words shown, so the panel is
    redrawn when "3 s ago" becomes "4 s ago", not at every repaint."""

    recording: bool = True
    data_dir: str = ""
    rows_buffered: int = 0
    rows_written: int = 0
    files_written: int = 0
    flushed_ago: str | None = None  # None: never flushed
    last_flush_ms: float | None = None
    flush_every: str = ""
    errors: int = 0
    last_error: str | None = None
    unreachable: str | None = None  # an attached UI's recorder cannot be reached: why, and when
    into: str = "Parquet"  # what the rows are written into, in words
    connected: bool = True  # some connection is live: without one nothing arrives to record

    @classmethod
    def of(
        cls,
        stats: SinkStats | None,
        *,
        recording: bool,
        data_dir: Path | str,
        flush_rows: int,
        flush_age_s: float,
        now: float,
        unreachable: str | None = None,
        into: str = "Parquet",
        connected: bool = True,
    ) -> RecordingView:
        """From the sink's stats; `now` is wall time (the sink stamps flushes with it)."""
        stats = stats or SinkStats()
        since = None if stats.last_flush_at is None else now - stats.last_flush_at
        return cls(
            recording=recording,
            data_dir=fmt.short_path(data_dir),
            rows_buffered=stats.rows_buffered,
            rows_written=stats.rows_written,
            files_written=stats.files_written,
            flushed_ago=None if since is None else fmt.duration(since),
            last_flush_ms=stats.last_flush_ms,
            flush_every=f"every {fmt.duration(flush_age_s)} or {flush_rows:,} rows",
            errors=stats.errors,
            last_error=stats.last_error,
            unreachable=unreachable,
            into=into,
            connected=connected,
        )


class RecordingPanel(Static):
    """Data directory, rows buffered, rows and files written, time since the last flush, errors.

    The app sets `view` at every repaint; the panel is drawn again only when it changed.
    """

    view: reactive[RecordingView] = reactive(RecordingView)

    def watch_view(self, view: RecordingView) -> None:
        self.update(_describe(view, narrow=self._narrow()))

    def on_resize(self) -> None:
        self.update(_describe(self.view, narrow=self._narrow()))

    def _narrow(self) -> bool:
        """Whether the panel is too narrow for the long lines (a half of an 80-column screen):
        then they say the same in fewer words instead of being cut."""
        width = self.content_region.width
        return 0 < width < NARROW_WIDTH


NARROW_WIDTH = 60  # columns of content below which the panel uses its short lines


def _describe(v: RecordingView, *, narrow: bool = False) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if narrow:
        return _describe_narrow(v, text)
    if v.unreachable is not None:
        text.append("○ recorder unreachable", style="bold yellow")
        text.append(f": {v.unreachable}")
        text.append("\nthe figures below are the last it sent", style="dim")
    elif v.recording and not v.connected:
        text.append("○ not recording", style="bold red")
        text.append(": nothing is connected, nothing arrives", style="dim")
    elif v.recording:
        text.append("● recording", style="bold green")
        text.append(f" closed candles to {v.into}", style="dim")
    elif v.connected:
        text.append("⏸ paused", style="bold yellow")
        text.append(": the live view goes on, nothing is recorded (p resumes)")
    else:
        text.append("⏸ paused", style="bold yellow")
        text.append(": nothing is connected, nothing arrives (p resumes)")
    text.append("\ndata ")
    text.append(v.data_dir, style="bold")
    text.append("\nbuffered ")
    text.append(f"{v.rows_buffered:,}", style="bold")
    text.append(" rows · written ")
    text.append(f"{v.rows_written:,}", style="bold")
    text.append(" rows in ")
    text.append(f"{v.files_written:,}", style="bold")
    text.append(" files\nlast flush ")
    if v.flushed_ago is None:
        text.append("never", style="dim")
    else:
        took = f" (took {v.last_flush_ms:.0f} ms)" if v.last_flush_ms is not None else ""
        text.append(f"{v.flushed_ago} ago{took}")
    text.append(f" ({v.flush_every})", style="dim")
    text.append(" · errors ")
    if v.errors:
        text.append(f"{v.errors}", style="bold red")
        if v.last_error:
            text.append(f": {v.last_error}", style="red")
    else:
        text.append("0", style="dim")
    return text


def _describe_narrow(v: RecordingView, text: Text) -> Text:
    """The same facts as `_describe` in lines that fit about 36 columns."""
    if v.unreachable is not None:
        text.append("○ recorder unreachable", style="bold yellow")
        text.append("\nfigures: the last it sent", style="dim")
    elif v.recording and not v.connected:
        text.append("○ not recording", style="bold red")
        text.append(": nothing arrives", style="dim")
    elif v.recording:
        text.append("● recording", style="bold green")
        text.append(f" to {v.into}", style="dim")
    else:
        text.append("⏸ paused", style="bold yellow")
        text.append(": not recording (p resumes)" if v.connected else ": nothing arrives")
    text.append("\ndata ")
    text.append(v.data_dir, style="bold")
    text.append("\n")
    text.append(fmt.compact(v.rows_buffered, 1), style="bold")
    text.append(" buffered · ")
    text.append(fmt.compact(v.rows_written, 1), style="bold")
    text.append(" in ")
    text.append(fmt.compact(v.files_written, 1), style="bold")
    text.append(" files\nflushed ")
    text.append("never" if v.flushed_ago is None else f"{v.flushed_ago} ago", style="dim")
    text.append(" · errors ")
    text.append(f"{v.errors}", style="bold red" if v.errors else "dim")
    return text
