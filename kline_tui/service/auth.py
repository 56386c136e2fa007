"""Who may use the service API: the token, where it comes from, how a request presents it.

The token comes from, in this order: the environment (`KLINE_TUI_TOKEN`), the config's
`[service] token_file` (read, stripped), or a file generated at the first start into the config
folder (`<config folder>/token`, mode 0600, created with O_EXCL so two recorders starting at once
agree on one token, and reused by every start after). The first two are *explicit*: only those
allow an address other than loopback, where the token guards every endpoint (DESIGN.md,
"Contracts"). The token is never logged nor shown; its file's path is.

A request presents it as `Authorization: Bearer <token>`; it is compared in constant time. Wrong
tokens are counted per client address: past `limit` failures within `window_s`, that address gets
429 (with Retry-After) for every guarded request, right token or not, until its oldest failure is
out of the window, so a guessed token is not confirmed by the lockout itself.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import ipaddress
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kline_tui.config import Settings
from kline_tui.safe_text import safe_text

__all__ = [
    "MAX_TOKEN",
    "TOKEN_ENV",
    "FailureLimiter",
    "ServiceError",
    "Token",
    "TokenError",
    "bearer",
    "check_listen",
    "generated_token_path",
    "is_loopback",
    "read_token",
    "resolve_token",
]

TOKEN_ENV = "KLINE_TUI_TOKEN"
MAX_TOKEN = 512  # characters; a generated token has 43
# What a token may hold: printable ASCII without blanks, as it travels in an HTTP header.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_READ_RETRIES = 20  # another process has created the generated file and is writing it


class ServiceError(ValueError):
    """The service cannot run as configured; the message is one line saying why and what to do."""


class TokenError(ServiceError):
    """No usable token: an empty or unreadable token file, a token that cannot be a header."""


@dataclass(frozen=True)
class Token:
    """The API token and where it came from (`env`, `file` or `generated`); `path` is its file.

    Its repr never shows the value: a token must not end up in a log by accident.
    """

    value: str = field(repr=False)
    source: str
    path: Path | None = None

    @property
    def explicit(self) -> bool:
        """Set by the person running the recorder (environment or token_file), not generated."""
        return self.source != "generated"

    def matches(self, presented: str) -> bool:
        """Whether `presented` is the token, in time independent of where they differ."""
        return hmac.compare_digest(presented.encode(), self.value.encode())

    def describe(self) -> str:
        """Where the token is, for the log: a path or the variable, never the value."""
        if self.source == "env":
            return f"the API token is taken from {TOKEN_ENV}"
        if self.source == "generated":
            return f"the API token is in {self.path} (generated; pass it to attach)"
        return f"the API token is read from {self.path}"


def _checked(text: str, where: str) -> str:
    token = text.strip()
    if not token:
        raise TokenError(f"{where} is empty: put a token in it")
    if len(token) > MAX_TOKEN:
        raise TokenError(f"{where} holds more than {MAX_TOKEN} characters: use a shorter token")
    if not _TOKEN.fullmatch(token):
        raise TokenError(
            f"{where} holds characters a token cannot have: use printable ASCII without blanks"
        )
    return token


def read_token(path: Path) -> str:
    """The token in the file `path`, stripped; raises TokenError saying what is wrong.

    Only a regular file is read (a FIFO would block the start), and no more than a token's size.
    """
    shown = safe_text(path, 300)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise TokenError(f"cannot read the token file {shown}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TokenError(f"the token file {shown} is not a regular file")
        data = os.read(fd, 4 * MAX_TOKEN + 16)
    except OSError as exc:
        raise TokenError(f"cannot read the token file {shown}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError(f"the token file {shown} is not UTF-8 text") from None
    return _checked(text, f"the token file {shown}")


def generated_token_path(settings: Settings) -> Path:
    """Where a token is generated when none is set: `token` beside the config file."""
    return settings.config_path.parent / "token"


def _generate(path: Path) -> tuple[str, bool]:
    """The token in `path`, creating the file (mode 0600) with a new one if there is none;
    returns (token, created)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise TokenError(
            f"cannot create {safe_text(path.parent, 300)} for the API token: {exc.strerror or exc}"
        ) from None
    token = secrets.token_urlsafe(32)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return _read_when_written(path), False
    except OSError as exc:
        raise TokenError(
            f"cannot create the token file {safe_text(path, 300)}: {exc.strerror or exc}"
        ) from None
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise TokenError(
            f"cannot write the token file {safe_text(path, 300)}: {exc.strerror or exc}"
        ) from None
    os.close(fd)
    return token, True


def _read_when_written(path: Path) -> str:
    """Read a generated token file that may still be being written by another process."""
    for _ in range(_READ_RETRIES):
        try:
            return read_token(path)
        except TokenError:
            time.sleep(0.05)  # created an instant ago and not yet written: wait for it
    return read_token(path)


def resolve_token(settings: Settings, environ: Mapping[str, str] | None = None) -> Token:
    """The token the service uses: `KLINE_TUI_TOKEN`, else the config's `token_file`, else the
    generated file (created at the first start). Raises TokenError, one line."""
    env = os.environ if environ is None else environ
    if TOKEN_ENV in env:
        return Token(_checked(env[TOKEN_ENV], TOKEN_ENV), "env")
    if settings.token_file is not None:
        return Token(read_token(settings.token_file), "file", settings.token_file)
    path = generated_token_path(settings)
    value, _ = _generate(path)
    return Token(value, "generated", path)


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine: a loopback address, or `localhost`.

    Any other name, and the wildcard addresses (`0.0.0.0`, `::`, ""), may be reached from
    elsewhere.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_listen(host: str, token: Token) -> None:
    """Refuse (ServiceError) to listen beyond loopback with a token nobody chose."""
    if not is_loopback(host) and not token.explicit:
        raise ServiceError(
            f"listening on {safe_text(host, 100)} (not loopback) needs a token you set: "
            f"export {TOKEN_ENV}=... or set [service] token_file in the config"
        )


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_TOKEN else None


class FailureLimiter:
    """Counts wrong tokens per client address within a sliding window, and says how long an
    address that failed too often must wait. Bounded: at most `max_addresses` are remembered
    (the ones seen longest ago are forgotten first)."""

    def __init__(
        self,
        limit: int = 10,
        window_s: float = 60.0,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self.refused = 0  # requests answered 429

    def _recent(self, address: str, now: float) -> collections.deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str) -> float | None:
        """Seconds `address` must wait before it may try again, or None when it may now."""
        now = self.clock()
        times = self._recent(address, now)
        if times is None or len(times) < self.limit:
            return None
        self.refused += 1
        return max(0.0, times[0] + self.window_s - now)

    def failed(self, address: str) -> None:
        """Count one wrong or missing token from `address`."""
        now = self.clock()
        times = self._recent(address, now)
        if times is None:
            times = self._failures[address] = collections.deque(maxlen=self.limit)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        times.append(now)
