"""The recording panel: where candles go, how many wait in memory, how many are on disk."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from kline_tui.recorder.sink import SinkStats
from kline_tui.ui import format as fmt

__all__ = ["RecordingPanel"]


class RecordingPanel(Static):
    """Data directory, rows buffered, rows and files written, time since the last flush, errors."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple | None = None

    def show(
        self,
        stats: SinkStats | None,
        *,
        recording: bool,
        data_dir: Path,
        flush_rows: int,
        flush_age_s: float,
        now: float,
    ) -> None:
        """Redraw from the sink's stats; `now` is wall time (the sink stamps flushes with it)."""
        if stats is None:
            stats = SinkStats()
        since = None if stats.last_flush_at is None else now - stats.last_flush_at
        key = (
            recording,
            str(data_dir),
            stats.rows_buffered,
            stats.rows_written,
            stats.files_written,
            fmt.duration(since) if since is not None else None,
            stats.last_flush_ms,
            stats.errors,
            stats.last_error,
        )
        if key == self._shown:
            return
        self._shown = key
        text = Text(no_wrap=True, overflow="ellipsis")
        if recording:
            text.append("● recording", style="bold green")
            text.append(" closed candles to Parquet", style="dim")
        else:
            text.append("⏸ paused", style="bold yellow")
            text.append(": the live view goes on, nothing is recorded (p resumes)")
        text.append("\ndata ")
        text.append(fmt.short_path(data_dir), style="bold")
        text.append("\nbuffered ")
        text.append(f"{stats.rows_buffered:,}", style="bold")
        text.append(" rows · written ")
        text.append(f"{stats.rows_written:,}", style="bold")
        text.append(" rows in ")
        text.append(f"{stats.files_written:,}", style="bold")
        text.append(" files\nlast flush ")
        if since is None:
            text.append("never", style="dim")
        else:
            took = f" (took {stats.last_flush_ms:.0f} ms)" if stats.last_flush_ms is not None else ""
            text.append(f"{fmt.duration(since)} ago{took}")
        text.append(f" (every {fmt.duration(flush_age_s)} or {flush_rows:,} rows)", style="dim")
        text.append(" · errors ")
        if stats.errors:
            text.append(f"{stats.errors}", style="bold red")
            if stats.last_error:
                text.append(f": {stats.last_error}", style="red")
        else:
            text.append("0", style="dim")
        self.update(text)
