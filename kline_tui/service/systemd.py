"""Telling systemd how the recorder is doing: the sd_notify protocol, for `Type=notify` units.

    notifier = Notifier()                      # reads NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID
    watchdog = asyncio.create_task(notifier.keep_watchdog(lambda: runtime.supervisor.fatal is None))
    await runtime.start()
    notifier.ready(runtime.status_line())      # config valid, folder locked, API listening
    notifier.status(runtime.status_line())     # now and then
    notifier.stopping()                        # the stop has begun
    await runtime.stop()

The protocol is one datagram per notification, `KEY=VALUE` lines, sent to the AF_UNIX socket
named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Outside systemd that
variable is unset and every call does nothing. A socket that is missing, refuses or is full never
raises and never blocks the event loop: the first failure is logged once (a warning), the
notification is dropped, and later calls try again.

Why our own ~40 lines rather than the `sdnotify` package: the protocol is tiny and has not changed
since 2010; `sdnotify` (last released 2017, untyped) swallows every error silently unless asked to
raise them all, sends on a blocking socket (a full receive queue would stall the event loop), and
does not read the watchdog's interval, which we need anyway. libsystemd's bindings
(`python3-systemd`) would add a C dependency for the same thing.

The watchdog (`WatchdogSec=` in the unit): systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`, the
process it is meant for); a service must send `WATCHDOG=1` more often than that or be killed.
`keep_watchdog` pings at half the interval, from the event loop (so a ping proves the loop runs),
and only while a callback says the runtime deserves it (a recorder whose supervisor has given up
stops pinging, and systemd restarts it if its own stop does not end it first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping

from kline_tui.safe_text import safe_text

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

# Missing only on platforms without systemd (Windows before AF_UNIX support in Python).
_AF_UNIX: int | None = getattr(socket, "AF_UNIX", None)

# A STATUS= line is shown by `systemctl status`; systemd reads a notification of at most 4 KiB.
STATUS_LIMIT = 1000
# WATCHDOG_USEC and WATCHDOG_PID are decimal numbers; anything longer than this is not one
# (a 64-bit count of microseconds has at most 20 digits).
_MAX_DIGITS = 20
# The ping period (half the interval) is kept within these bounds: at least once a minute (more
# often than asked is harmless) and at most 20 times a second (a tiny WatchdogSec, a
# misconfiguration, must not turn the ping loop into a busy loop).
MIN_PING_PERIOD_S = 0.05
MAX_PING_PERIOD_S = 60.0


class Notifier:
    """Sends sd_notify messages to the socket systemd named in the environment, if any.

    `environ` defaults to `os.environ`, `pid` to this process's (tests pass their own). Every
    sending method returns True when the datagram was sent, False when there is no socket or it
    failed; none raises.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._pid = os.getpid() if pid is None else pid
        self._address, problem = _socket_address(env.get("NOTIFY_SOCKET"))
        if self._address is not None and _AF_UNIX is None:
            self._address, problem = None, "NOTIFY_SOCKET is set, but this platform has no AF_UNIX"
        self._watchdog_s = _watchdog_interval(env, self._pid)
        self._socket: socket.socket | None = None
        self._warned = False
        if problem:
            self._warn_once(problem)

    @property
    def enabled(self) -> bool:
        """True when systemd asked for notifications (NOTIFY_SOCKET names a usable address)."""
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of `KEY=VALUE` fields (e.g. "READY=1", "STATUS=..."), one per line."""
        family = _AF_UNIX
        if self._address is None or family is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._socket is None:
                # Not inherited by child processes (Python's default for every socket).
                self._socket = socket.socket(family, socket.SOCK_DGRAM)
                # A full receive queue (systemd busy or gone) must drop the message, not block
                # the event loop that every stream and the API run on.
                self._socket.setblocking(False)
            self._socket.sendto(data, self._address)
        except OSError as exc:
            self._warn_once(f"cannot notify systemd at {self._shown_address()}: {exc}")
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete: systemd marks the unit active and starts its watchdog."""
        return self.notify("READY=1", *_status_field(status))

    def status(self, text: str) -> bool:
        """A one-line status, shown by `systemctl status` (control characters removed, cut)."""
        return self.notify(*_status_field(text))

    def stopping(self, status: str | None = None) -> bool:
        """The stop has begun: systemd shows the unit as deactivating, not failed."""
        return self.notify("STOPPING=1", *_status_field(status))

    def watchdog(self) -> bool:
        """One keep-alive ping for `WatchdogSec=`."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval_s(self) -> float | None:
        """The watchdog's interval in seconds when systemd asked for pings to this process
        (WATCHDOG_USEC set and valid, WATCHDOG_PID unset or ours), else None."""
        return self._watchdog_s if self._address is not None else None

    async def keep_watchdog(self, runtime_is_responsive: Callable[[], bool]) -> None:
        """Ping at half the watchdog interval while `runtime_is_responsive()` says so; returns at
        once when there is no watchdog. Run it as a task for the process's whole life, the stop
        included (a stop takes up to its deadline plus a grace), and cancel it at the end.

        The ping comes from the event loop, so a loop that hangs stops it; the callback is asked
        before each ping, so the runtime can stop it too (a callback that raises counts as No).
        """
        interval = self.watchdog_interval_s()
        if interval is None:
            return
        period = min(max(interval / 2, MIN_PING_PERIOD_S), MAX_PING_PERIOD_S)
        complained = False
        while True:
            try:
                healthy = bool(runtime_is_responsive())
            except Exception:  # a broken health check means: do not vouch for the runtime
                if not complained:
                    log.exception("the watchdog's health check failed; not pinging systemd")
                    complained = True
                healthy = False
            if healthy:
                self.watchdog()
            await asyncio.sleep(period)

    def close(self) -> None:
        """Close the socket (idempotent); a later notification opens it again."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    def _shown_address(self) -> str:
        address = self._address or ""
        return "@" + address[1:] if address.startswith("\0") else address

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s (further failures are not logged)", safe_text(message))


def _status_field(text: str | None) -> tuple[str, ...]:
    return () if text is None else (f"STATUS={safe_text(text, STATUS_LIMIT)}",)


def _socket_address(value: str | None) -> tuple[str | None, str | None]:
    """NOTIFY_SOCKET as an address for sendto, and a problem to log when it cannot be used."""
    if not value:
        return None, None
    if value.startswith("@"):
        if len(value) < 2:
            return None, "NOTIFY_SOCKET is '@' alone: not a socket name"
        return "\0" + value[1:], None  # the abstract namespace (Linux)
    if value.startswith("/"):
        return value, None
    # systemd also knows `vsock:` addresses (for virtual machines); a recorder never needs one.
    return None, f"NOTIFY_SOCKET={safe_text(value, 80)!r} is neither a path nor @name; ignored"


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """WATCHDOG_USEC in seconds, bounded; None when unset, malformed, zero, or meant for another
    process (WATCHDOG_PID set to a pid that is not ours, or malformed)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not (usec.isascii() and usec.isdigit() and len(usec) <= _MAX_DIGITS) or int(usec) <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner is not None and not (
        owner.isascii() and owner.isdigit() and len(owner) <= _MAX_DIGITS and int(owner) == pid
    ):
        return None
    return int(usec) / 1e6
