"""The terminal UI: a Textual app hosting the recording pipeline (see app.py)."""

from kline_tui.ui.app import KlineApp, run_app

__all__ = ["KlineApp", "run_app"]
