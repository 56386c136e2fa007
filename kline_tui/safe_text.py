"""Text from outside (servers, files) made safe to show on a terminal or write to a log.

A server's close reason, error message or symbol is only data, yet printed raw an escape sequence
in it is obeyed by the terminal: it can clear the screen, retitle the window, hide the lines
before it or, with bidirectional overrides, show text other than what is there. Everything such
text passes through here first.
"""

from __future__ import annotations

import re

__all__ = ["safe_text"]

# Escape sequences, removed whole so that no half (like "[2J") is left to confuse a reader:
# string controls (OSC, DCS, SOS, PM, APC) up to their terminator, BEL or ST, or to the end when
# unterminated; CSI with its parameters; then any other ESC and the bytes it introduces.
_ESCAPES = re.compile(
    r"\x1b[\]PX^_].*?(?:\x07|\x1b\\|$)"
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -/]*[0-~]?",
    re.DOTALL,
)

_SPACE = " "
# Line and tab breaks become spaces (a message stays one line); every other C0 and C1 control,
# DEL, and the bidirectional marks and overrides are dropped.
_TABLE: dict[int, str | None] = {c: None for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))}
_TABLE.update({c: _SPACE for c in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029)})
_TABLE.update(
    {c: None for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
)

_ELLIPSIS = "…"


def safe_text(value: object, limit: int = 300) -> str:
    """`str(value)` without control characters, escape sequences or bidi overrides, cut to at
    most `limit` characters (ending in an ellipsis when cut). Never raises."""
    try:
        text = value if type(value) is str else str(value)
    except Exception:  # noqa: BLE001 - a hostile __str__ must not stop a log line
        text = f"<unprintable {type(value).__name__}>"
    if not (text.isascii() and text.isprintable()):  # printable ASCII, the common case, is safe
        if "\x1b" in text:
            text = _ESCAPES.sub("", text)
        text = text.translate(_TABLE)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + _ELLIPSIS if limit > 0 else ""
    return text
