"""Changes proposed for kline_tui/, measured before anyone edits the package.

`benchmarks/proposed.diff` is the change, as a patch against kline_tui/ (`git apply
benchmarks/proposed.diff`):

- connection.py: the socket is aiohttp's WebSocket client (compiled frame reader) instead of
  websockets; `_read` loops on `ws.receive()`, reads the clock once a frame and hands it to the
  hub, compares the interval without the Enum's `.value` property;
- wire.py: a cheaper `is_sane` (same verdicts) and type test;
- hub.py: `on_kline(..., now=None)`; `Hub(keep_closed=...)`, how many closed candles each stream
  keeps for sparklines (`kline-tui record` keeps none: cli.py, pipeline.py);
- ledger.py: `observe` returns at once for an update of the candle after the last one held;
- sink.py: the date bucket memoised per (interval, day).

Two ways to measure it:

    patched_tree(dest)   # kline_tui/ copied into dest with the diff applied: put dest first on
                         # PYTHONPATH and the child runs exactly the proposed code ("diff")
    apply("hotpath")     # in-process patches of the hot-path edits alone, websockets kept
                         # (an approximation of the diff minus the transport, for attribution)
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path

from websockets.exceptions import ConnectionClosedOK

from benchmarks.common import REPO

DIFF = Path(__file__).with_name("proposed.diff")
VARIANTS = ("current", "hotpath", "diff")


class DiffUnavailable(RuntimeError):
    """The diff cannot be measured apart: already in kline_tui/, or no longer applies."""


def diff_state() -> str:
    """"applicable", "applied" (kline_tui/ already holds it: the package's own figures are the
    diff's) or "conflict" (kline_tui/ moved on since the diff was made)."""
    def check(*extra: str) -> bool:
        return subprocess.run(["git", "apply", "--check", *extra, str(DIFF)], cwd=REPO, capture_output=True,
                              timeout=60).returncode == 0

    if check():
        return "applicable"
    return "applied" if check("--reverse") else "conflict"


def patched_tree(dest: Path) -> Path:
    """Copy kline_tui/ into `dest` (a folder outside any git repository) and apply proposed.diff
    there; returns `dest`. Raises DiffUnavailable when that cannot be done."""
    state = diff_state()
    if state == "applied":
        raise DiffUnavailable("benchmarks/proposed.diff is already applied to kline_tui/: the kline-tui "
                              "figures are the diff's")
    if state == "conflict":
        raise DiffUnavailable("benchmarks/proposed.diff no longer applies to kline_tui/ (it moved on)")
    shutil.copytree(REPO / "kline_tui", dest / "kline_tui", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(["git", "apply", "--whitespace=nowarn", str(DIFF)], cwd=dest, capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise DiffUnavailable(f"benchmarks/proposed.diff does not apply to the copy: {out.stderr.strip()}")
    if "aiohttp" not in (dest / "kline_tui" / "binance" / "connection.py").read_text():
        raise DiffUnavailable(f"the diff did not land in {dest}")
    return dest


# -- the hot-path edits alone, as runtime patches -------------------------------------------------

def is_sane(self) -> bool:
    lo, hi = self.low, self.high
    v, q, tv, tq = self.volume, self.quote_volume, self.taker_buy_volume, self.taker_buy_quote_volume
    return (
        0.0 <= lo <= self.open <= hi
        and lo <= self.close <= hi
        and v >= 0.0 and q >= 0.0 and tv >= 0.0 and tq >= 0.0
        and hi + v + q + tv + tq < math.inf
        and self.trades >= 0
        and self.close_time > self.open_time
    )


def apply_hotpath() -> None:
    from kline_tui.binance import wire
    from kline_tui.binance.connection import Connection
    from kline_tui.model import _FIXED_MS
    from kline_tui.recorder import ledger as ledger_mod
    from kline_tui.store import layout

    def decode(frame):
        if type(frame) is not str and not isinstance(frame, str):
            return wire.Malformed("binary frame")
        if len(frame) > wire.MAX_FRAME_BYTES:
            return wire.Malformed(f"oversized frame ({len(frame)} bytes)")
        try:
            envelope = wire._envelope.decode(frame)
        except (wire.msgspec.ValidationError, wire.msgspec.DecodeError):
            return wire._decode_other(frame)
        data = envelope.data
        if type(data) is wire.KlineEvent and not data.k.is_sane():
            return wire.Malformed(f"impossible kline values on {envelope.stream}")
        return envelope

    observe_orig = ledger_mod.Ledger.observe

    def observe(self, key, open_time):
        st = self.streams.get(key)
        if st is not None and st.last is not None:
            step = _FIXED_MS.get(key.interval)
            if step is not None and open_time <= st.last + step:
                return
        observe_orig(self, key, open_time)

    bucket_of_orig, buckets = layout.bucket_of, {}

    def bucket_of(interval, open_time_ms):
        day = open_time_ms // 86_400_000
        hit = buckets.get((interval, day))
        if hit is None:
            hit = buckets[(interval, day)] = bucket_of_orig(interval, open_time_ms)
        return hit

    async def read(self, ws, control):
        """Connection._read on websockets: `await ws.recv()` rather than `async for` (one
        async-generator hop less a frame), one clock read a frame, no Enum `.value`."""
        listener, status = self.listener, self.status
        decode_, envelope_t, kline_t = wire.decode, wire.Envelope, wire.KlineEvent
        desired = self._desired
        recent = status.recent_frames
        recv, monotonic = ws.recv, time.monotonic
        last_mark = 0.0
        while True:
            try:
                frame = await recv()
            except ConnectionClosedOK:
                return "closed by server"
            now = monotonic()
            status.frames += 1
            status.last_frame_at = now
            msg = decode_(frame)
            if type(msg) is envelope_t:
                data = msg.data
                if type(data) is kline_t:
                    key = desired.get(msg.stream)
                    k = data.k
                    if key is None:
                        continue
                    if k.interval != key.interval or k.symbol != key.symbol:
                        status.malformed += 1
                        listener.on_malformed(self, f"event on {msg.stream} names {k.symbol} {k.interval}")
                        continue
                    listener.on_kline(key, data.E, k)
                    if now - last_mark >= 0.5:
                        last_mark = now
                        recent.append((now, status.frames))
                        status.lag_ms = time.time() * 1000 - data.E
                else:
                    listener.on_shutdown_notice(self)
            elif type(msg) is wire.ControlReply:
                self._on_reply(msg)
            else:
                status.malformed += 1
                listener.on_malformed(self, msg.reason)
            if control.done() and not control.cancelled() and control.exception() is not None:
                raise control.exception()

    wire.WireKline.is_sane = is_sane
    wire.decode = decode
    ledger_mod.Ledger.observe = observe
    layout.bucket_of = bucket_of  # the sink calls layout.bucket_of(...)
    from kline_tui.binance import connection

    if hasattr(connection, "connect"):  # still on websockets (the diff moves it to aiohttp)
        Connection._read = read


def apply(variant: str) -> None:
    if variant == "hotpath":
        apply_hotpath()
    elif variant not in ("current", "diff"):  # "diff" is a PYTHONPATH, not a patch: see patched_tree
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
