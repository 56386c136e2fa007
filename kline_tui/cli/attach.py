"""`kline-tui attach [URL]`: the terminal UI on a recorder that runs elsewhere (`record --listen`).

The table, the chart, the connections, the recording panel and the event log come from the
recorder's API; `a`, `d`, `p` and `f` act on it; `q` closes the UI and the recorder goes on. While
the recorder cannot be reached the UI says so and reconnects by itself.

Without URL it attaches to the recorder of the config's data folder (the runtime file beside its
lock names its address), else to 127.0.0.1:8765. The token is `--token-file`'s, else
`KLINE_TUI_TOKEN`, else the file the recorder names in its runtime file, else the config's
`token_file`, else the one a recorder generates beside the config.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from kline_tui.cli.command import UsageError, command_parser, dataset_settings, run
from kline_tui.config import DEFAULT_LISTEN_HOST, Settings

__all__ = ["AttachTarget", "attach_target", "main", "parser"]

DEFAULT_PORT = 8765
_URL = re.compile(r"\Ahttps?://[^\s/?#]+/?\Z")


@dataclass(frozen=True)
class AttachTarget:
    """Which recorder to attach to, and the token it takes (None: none found)."""

    url: str
    token: str | None


def parser() -> argparse.ArgumentParser:
    """The parser of `kline-tui attach`."""
    command = command_parser(
        "attach",
        "Open the UI on a running recorder (`kline-tui record --listen ...`). Quitting closes "
        "the UI only: the recorder goes on recording.",
    )
    command.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help="the recorder's address, e.g. http://127.0.0.1:8765 (default: the recorder of the "
        f"config's data folder, else http://{DEFAULT_LISTEN_HOST}:{DEFAULT_PORT})",
    )
    command.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="a file holding the API token (default: $KLINE_TUI_TOKEN, else the recorder's own)",
    )
    return command


def main(argv: list[str]) -> int:
    """`kline-tui attach [URL] [options]`; returns the UI's exit code."""

    def body(args: argparse.Namespace, err: Console) -> int:
        settings, data_dir = dataset_settings(args)
        target = attach_target(settings, data_dir, args.url, args.token_file)
        from kline_tui.ui.app import run_attached  # Textual is loaded only for the UI

        return run_attached(settings, target.url, target.token)

    from kline_tui.service.auth import ServiceError

    return run(parser(), argv, body, errors=(ServiceError,))


def attach_target(
    settings: Settings, data_dir: Path, url: str | None, token_file: Path | None = None
) -> AttachTarget:
    """The recorder to attach to: `url`, else the one recording into `data_dir`, else the
    default address; with the first token found (see the module's docstring). Raises
    UsageError for a bad URL and TokenError for a `token_file` without a token."""
    from kline_tui.service.api import find_running
    from kline_tui.service.auth import TOKEN_ENV, TokenError, generated_token_path, read_token

    running = find_running(data_dir)
    if url is None:
        url = running.url if running is not None else f"http://{DEFAULT_LISTEN_HOST}:{DEFAULT_PORT}"
    url = url.strip()
    if not _URL.match(url):
        raise UsageError(f"{url!r} is not a recorder's address (e.g. http://127.0.0.1:8765)")
    url = url.rstrip("/")
    if token_file is not None:
        return AttachTarget(url, read_token(token_file))
    if os.environ.get(TOKEN_ENV, "").strip():
        return AttachTarget(url, os.environ[TOKEN_ENV].strip())
    candidates = [Path(running.token_file)] if running is not None and running.token_file else []
    candidates += [p for p in (settings.token_file, generated_token_path(settings)) if p]
    for path in candidates:
        with contextlib.suppress(TokenError):
            return AttachTarget(url, read_token(path))
    return AttachTarget(url, None)  # the recorder answers 401, and the UI says so
