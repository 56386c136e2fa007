"""How a firing reaches the person at the screen: the bell, a toast, a desktop notification.

The desktop notification is the terminal's own when it has one (OSC 777 in VTE terminals,
foot, WezTerm, urxvt; OSC 9 in iTerm2, Windows Terminal, ConEmu, kitty; inside tmux wrapped in
its passthrough), else `notify-send` when there is a graphical session and the command exists,
else none. Under systemd (`INVOCATION_ID` or `JOURNAL_STREAM`) or without a terminal there is
none: nobody is there to see it, and the event log has it anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

from textual.app import App

from kline_tui.alerts.rules import Firing
from kline_tui.safe_text import safe_text

__all__ = [
    "MAX_NOTIFY_SEND",
    "NOTIFY_SEND_TIMEOUT_S",
    "Notifier",
    "desktop_channel",
    "osc_notification",
]

NOTIFY_SEND_TIMEOUT_S = 5.0
MAX_NOTIFY_SEND = 3  # notify-send processes at once; a firing beyond them has its toast only
_OSC9_TERMINALS = ("iTerm.app", "WarpTerminal")
_OSC777_TERMINALS = ("WezTerm", "ghostty")


def desktop_channel(
    environ: Mapping[str, str],
    *,
    is_terminal: bool,
    which: Callable[[str], str | None] = shutil.which,
) -> str | None:
    """Where desktop notifications go: "osc777", "osc9", "notify-send", or None (none)."""
    if "INVOCATION_ID" in environ or "JOURNAL_STREAM" in environ or not is_terminal:
        return None
    program = environ.get("TERM_PROGRAM", "")
    term = environ.get("TERM", "")
    if program in _OSC9_TERMINALS or "WT_SESSION" in environ or "ConEmuPID" in environ:
        return "osc9"
    if "KITTY_WINDOW_ID" in environ or term == "xterm-kitty":
        return "osc9"
    if (
        program in _OSC777_TERMINALS
        or "VTE_VERSION" in environ
        or term.startswith(("foot", "rxvt"))
    ):
        return "osc777"
    graphical = "DISPLAY" in environ or "WAYLAND_DISPLAY" in environ
    if graphical and which("notify-send") is not None:
        return "notify-send"
    return None


def osc_notification(channel: str, title: str, body: str, *, tmux: bool) -> str:
    """The escape sequence of a terminal notification; its text stripped of control characters
    and of the separator the sequence uses."""
    title = safe_text(title, 100).replace(";", ",")
    body = safe_text(body, 300)
    if channel == "osc777":
        sequence = f"\x1b]777;notify;{title};{body}\x1b\\"
    else:
        sequence = f"\x1b]9;{title}: {body}\x1b\\"
    if tmux:  # tmux passes it on only inside its DCS passthrough, ESCs doubled
        sequence = "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return sequence


class Notifier:
    """Tells the person at the screen of each firing: bell, toast, desktop notification."""

    def __init__(
        self,
        app: App[Any],
        *,
        environ: Mapping[str, str] | None = None,
        is_terminal: bool | None = None,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.app = app
        self.environ = os.environ if environ is None else environ
        if is_terminal is None:
            stream = sys.__stderr__  # where Textual draws
            is_terminal = stream is not None and stream.isatty()
        self.channel = desktop_channel(self.environ, is_terminal=is_terminal, which=which)
        self.sent = 0  # desktop notifications sent
        self.skipped = 0  # desktop notifications not sent: MAX_NOTIFY_SEND were under way
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[Firing] = []  # the firings of this turn of the loop

    def alert(self, firing: Firing) -> None:
        """Ring, show a toast and send the desktop notification (never waits for it). The
        firings of one turn of the event loop (one poll of the recorder, one message of an
        attached one) are told once together: "N alerts fired"."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._tell)
        self._pending.append(firing)

    def _tell(self) -> None:
        firings, self._pending = self._pending, []
        if not firings:
            return
        if len(firings) == 1:
            title, body = "Alert", firings[0].message
        else:
            title = f"{len(firings)} alerts fired"
            body = f"{firings[-1].message} (and {len(firings) - 1} more: see the event log)"
        self.app.bell()
        # markup=False: the message holds what a recorder (perhaps a remote one) sent.
        self.app.notify(body, title=title, severity="warning", timeout=15, markup=False)
        self.desktop(f"kline-tui: {title.lower()}", body)

    def desktop(self, title: str, body: str) -> None:
        channel = self.channel
        if channel is None:
            return
        if channel == "notify-send":
            if len(self._tasks) >= MAX_NOTIFY_SEND:
                self.skipped += 1
                return
            task = asyncio.ensure_future(self._notify_send(title, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        driver = self.app._driver  # the terminal itself: Textual has no public way to write to it
        if driver is not None and not self.app.is_headless:
            tmux = "TMUX" in self.environ
            driver.write(osc_notification(channel, title, body, tmux=tmux))
            self.sent += 1

    async def _notify_send(self, title: str, body: str) -> None:
        """`notify-send`, bounded by NOTIFY_SEND_TIMEOUT_S; a failure is only counted out."""
        try:
            process = await asyncio.create_subprocess_exec(
                "notify-send",
                "--app-name=kline-tui",
                safe_text(title, 100),
                safe_text(body, 300),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            self.channel = None  # gone since: stop trying
            return
        try:
            async with asyncio.timeout(NOTIFY_SEND_TIMEOUT_S):
                await process.wait()
            self.sent += 1
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
