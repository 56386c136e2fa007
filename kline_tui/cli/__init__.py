"""The command line: `kline-tui` opens the terminal UI, `kline-tui COMMAND` runs one command.

One module per command (`ui` for the UI, then `record`, `attach`, `web`, `compact`, `verify`,
`backfill` and `import_`), each with its parser and a `main(argv)` that returns the exit code.
They share `command`: the common options, the settings they build, the errors a user can cause,
and how those are reported (one line on stderr) and exit. A command's module is imported only
when that command runs, so only the faces (the UI, `attach`, `web`) load Textual.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

__all__ = ["COMMANDS", "main"]


class Command(NamedTuple):
    """Where a command lives, and the line `kline-tui --help` shows for it."""

    module: str
    summary: str


COMMANDS = {
    "record": Command(
        "record", "record closed candles headless, until SIGINT or SIGTERM (for servers)"
    ),
    "attach": Command(
        "attach", "open the UI on a running recorder (record --listen); it goes on when you quit"
    ),
    "web": Command("web", "serve the attach UI to a browser"),
    "compact": Command("compact", "merge closed buckets into one sorted file each"),
    "verify": Command(
        "verify", "check each stream: first and last candle, gaps, duplicates, unreadable files"
    ),
    "backfill": Command("backfill", "a stream's history from REST, resumable"),
    "import": Command("import_", "import data.binance.vision archives"),
}
"""Every command word after `kline-tui`; anything else opens the UI."""


def main(argv: list[str] | None = None) -> int:
    """Run `kline-tui ARGV...` (the process's arguments by default); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        command = importlib.import_module(f"{__name__}.{COMMANDS[argv[0]].module}")
        return command.main(argv[1:])
    from kline_tui.cli import ui

    return ui.main(argv)
