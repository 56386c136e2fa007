"""`kline-tui` without a command: the terminal UI, on the config's watch list and the streams named.

When a recorder (`record --listen`) already records into the data folder, the UI attaches to it
instead (as `kline-tui attach` does), adding the streams named.

Textual is imported here only once the arguments and the settings are good, so no other command
(and no mistake on the command line) ever loads it.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from kline_tui.cli import COMMANDS
from kline_tui.cli.command import (
    command_parser,
    recorder_options,
    recorder_settings,
    run,
    stream_keys,
)

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The parser of `kline-tui`, whose help lists every command."""
    width = max(map(len, COMMANDS))
    commands = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items())
    return command_parser(
        None,
        "Watch and record Binance candlesticks (spot, usdm, coinm) to Parquet.",
        parents=[recorder_options()],
        epilog=f"commands (kline-tui COMMAND --help for each):\n{commands}",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the commands' lines
    )


def main(argv: list[str]) -> int:
    """`kline-tui [STREAM ...] [options]`: run the UI until the user quits."""

    def body(args: argparse.Namespace, err: Console) -> int:
        settings = recorder_settings(args, headless=False)
        from kline_tui.service.api import find_running

        if find_running(settings.data_dir) is not None:
            # A recorder already records into this folder: show it rather than refuse.
            from kline_tui.cli.attach import attach_target
            from kline_tui.ui.app import run_attached

            target = attach_target(settings, settings.data_dir, None)
            return run_attached(settings, target.url, target.token, add=stream_keys(args.streams))
        from kline_tui.ui.app import run_app  # Textual is loaded only for the UI

        return run_app(settings, demo_speed=args.demo_speed if args.demo else None)

    return run(parser(), argv, body)
