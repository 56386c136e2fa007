"""`kline-tui web [URL]`: the attach UI in a browser, one `kline-tui attach` process per tab.

Loopback (127.0.0.1:8766) by default. On any other address the token must have been set
explicitly (`--token-file`, `KLINE_TUI_TOKEN` or the config's `token_file`): a browser then shows
it once (`?token=...`, or basic auth with the token as password), and each tab's process gets it
through its environment, never on its command line. `--max-tabs` caps the processes at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from kline_tui.cli.attach import attach_target
from kline_tui.cli.command import UsageError, command_parser, dataset_settings, run
from kline_tui.config import Settings, parse_listen
from kline_tui.runtime import EXIT_OK
from kline_tui.service.auth import (
    TOKEN_ENV,
    ServiceError,
    is_loopback,
    read_token,
    resolve_token,
)

if TYPE_CHECKING:
    from kline_tui.ui.web import WebServer

__all__ = ["DEFAULT_MAX_TABS", "DEFAULT_PORT", "MAX_TABS", "main", "parser"]

DEFAULT_PORT = 8766  # beside the recorder's API (8765)
DEFAULT_MAX_TABS = 4
MAX_TABS = 64  # each tab is a process of ~100 MB: more on one machine is a mistake, not a need

_LOGGERS = ("kline_tui.ui.web", "textual-serve")


def parser() -> argparse.ArgumentParser:
    """The parser of `kline-tui web`."""
    command = command_parser(
        "web",
        "Serve the attach UI (kline-tui attach) to a browser: each tab runs its own attached "
        "UI, until SIGINT or SIGTERM. Off loopback, a browser must show the token once.",
    )
    command.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help="the recorder's address, e.g. http://127.0.0.1:8765 (default: the recorder of the "
        "config's data folder, found by each tab)",
    )
    command.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"where the page is served (default 127.0.0.1:{DEFAULT_PORT}; port 0 picks one); "
        "any address other than loopback needs the token",
    )
    command.add_argument(
        "--max-tabs",
        type=int,
        default=DEFAULT_MAX_TABS,
        metavar="N",
        help=f"browser tabs (processes) at once, 1 to {MAX_TABS} (default {DEFAULT_MAX_TABS})",
    )
    command.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"a file holding the recorder's token (default: ${TOKEN_ENV}, else the config's "
        "token_file); off loopback the browser must show it too",
    )
    return command


def main(argv: list[str]) -> int:
    """`kline-tui web [URL] [options]`; `argv` is what follows the command word."""

    def body(args: argparse.Namespace, err: Console) -> int:
        from kline_tui.ui.web import WebServer  # Textual loads only now

        try:
            host, port = parse_listen(args.listen)
        except ValueError as exc:
            raise UsageError(f"--listen: {exc}") from None
        if not 1 <= args.max_tabs <= MAX_TABS:
            raise UsageError(f"--max-tabs must be from 1 to {MAX_TABS}")
        settings, data_dir = dataset_settings(args)
        target = attach_target(settings, data_dir, args.url)  # checks URL, finds the recorder
        token = _explicit_token(args, settings)
        if not is_loopback(host) and token is None:
            raise UsageError(
                f"serving on {host}, not loopback, needs a token: set {TOKEN_ENV} or pass "
                "--token-file (or set token_file under [service] in the config)"
            )
        if token is not None:
            # Each tab's process inherits this environment: the token never shows in `ps`.
            os.environ[TOKEN_ENV] = token
        server = WebServer(
            _attach_command(args, target.url if args.url else None),
            host=host,
            port=port,
            token=token if not is_loopback(host) else None,
            max_tabs=args.max_tabs,
            title=f"kline-tui · {target.url}",
        )
        _log_to(err)
        return asyncio.run(_serve(server, err, target.url, guarded=server.token is not None))

    return run(parser(), argv, body, errors=(ServiceError,))


def _explicit_token(args: argparse.Namespace, settings: Settings) -> str | None:
    """The token someone set: `--token-file`'s, else `KLINE_TUI_TOKEN`, else the config's
    `token_file`; None when none is set (a tab's attach then finds the recorder's own)."""
    if args.token_file is not None:
        return read_token(args.token_file)
    if TOKEN_ENV in os.environ or settings.token_file is not None:
        return resolve_token(settings).value  # either of those two: never a generated one
    return None


def _attach_command(args: argparse.Namespace, url: str | None) -> list[str]:
    """What each tab runs: `kline-tui attach` with this command's config and data folder."""
    command = [sys.executable, "-m", "kline_tui", "attach"]
    if args.config is not None:
        command += ["--config", str(args.config)]
    if args.data_dir is not None:
        command += ["--data-dir", str(args.data_dir)]
    return command + ([url] if url else [])


def _log_to(err: Console) -> None:
    """Tabs opened and closed, refusals and the tabs' failures, as time-stamped lines."""
    handler = logging.StreamHandler(err.file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


async def _serve(server: WebServer, err: Console, recorder: str, *, guarded: bool) -> int:
    try:
        page = await server.start()
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    err.print(
        f"serving {escape(page)} (the UI of {escape(recorder)}, at most {server.max_tabs} tabs)"
    )
    if guarded:
        err.print(f"a browser shows the token once: {escape(page)}?token=... (or basic auth)")
    try:
        await stop.wait()
    finally:
        err.print("stopping: closing the tabs")
        await server.stop()
    return EXIT_OK
