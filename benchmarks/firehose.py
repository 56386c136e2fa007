"""A Binance combined-stream WebSocket server that sends kline frames as fast as the socket takes
them.

    python -m benchmarks.firehose [--expect 500] [--closed-every 20] [--max-seconds 120]

Speaks enough of the protocol for kline-tui's `Connection`: `/stream?streams=a/b` (any path
ending in `/stream`, so `/market/stream` too), `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS`
answered `{"result":...,"id":N}`. Once `--expect` streams are subscribed (or 3 s after the last
control message), it pushes pre-encoded frames for the subscribed streams in a loop, interleaved
round robin, until the client goes away.

Frames are pre-built once into 20 "steps" of one frame per stream; each stream sees 19 forming
updates of its candle then the closed candle, then the next candle (open times advance by the
interval), with the streams' phases staggered so the closes are spread out: exactly
1/`closed-every` of the frames are closed candles and every stream's closes are consecutive, so a
recorder's ledger accepts every one (no duplicate, no gap). Candle times start at T0 and advance
one interval a round, so they stay in the past however fast the rounds go; event times are the
wall clock, as a recorder checks them against the exchange's clock (a simulator's at speed 1).
Times are patched per step with `bytes.replace` on fixed-width 13-digit tokens, so the WebSocket
framing never changes and the sender costs about a microsecond per frame: the socket, not this
process, is the limit.

Prints `ready ws://HOST:PORT` on stdout once listening; per connection, a summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import struct
import sys
import time
import zlib
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.protocol import State

_STREAM_RE = re.compile(r"([a-z0-9_]+)@kline_([0-9]+[smhdw])")
_IV_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC: the first candle every stream sends
# Fixed-width placeholders for (open, close, event) times of the two candles a step can carry.
_TOKENS_A = (b"1000000000011", b"1000000000022", b"1000000000033")
_TOKENS_B = (b"1000000000044", b"1000000000055", b"1000000000066")
_HIGH_WATER = 1 << 20  # bytes queued in the transport before the sender waits


def _interval_ms(name: str) -> int:
    m = _STREAM_RE.fullmatch(name)
    if not m:
        raise ValueError(name)
    iv = m.group(2)
    return int(iv[:-1]) * _IV_MS[iv[-1]]


def _frame(payload: bytes) -> bytes:
    """An unmasked server text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + struct.pack("!H", n) + payload
    return bytes((0x81, 127)) + struct.pack("!Q", n) + payload


def _event(name: str, phase: int, closed_phase: int, tokens: tuple[bytes, bytes, bytes]) -> bytes:
    match = _STREAM_RE.fullmatch(name)
    assert match is not None, f"{name}: only kline stream names get events"
    symbol = match.group(1).upper()
    interval = name.split("@kline_")[1]
    t, T, E = (tok.decode() for tok in tokens)
    base = 100 + zlib.crc32(symbol.encode()) % 900
    o, c = base * 1.0, base + 0.01 * phase
    h, lo = max(o, c) + 0.5, min(o, c) - 0.5
    closed = "true" if phase == closed_phase else "false"
    n = 100 + 7 * phase
    # Binance's field order and formatting: prices and volumes are strings, times integers.
    return (
        f'{{"stream":"{name}","data":{{"e":"kline","E":{E},"s":"{symbol}","k":{{'
        f'"t":{t},"T":{T},"s":"{symbol}","i":"{interval}","f":{1000 + phase},"L":{1000 + n},'
        f'"o":"{o:.8f}","c":"{c:.8f}","h":"{h:.8f}","l":"{lo:.8f}","v":"{12.5 * n:.8f}","n":{n},'
        f'"x":{closed},"q":"{12.5 * n * base:.8f}","V":"{6.25 * n:.8f}",'
        f'"Q":"{6.25 * n * base:.8f}","B":"0"}}}}}}'
    ).encode()


class Blast:
    """The pre-built steps for one connection's streams."""

    def __init__(self, names: list[str], closed_every: int) -> None:
        steps = [bytearray() for _ in range(closed_every)]
        last = closed_every - 1
        ivs = {_interval_ms(n) for n in names}
        if len(ivs) != 1:
            raise ValueError("the firehose sends one interval per connection")
        self.iv_ms = ivs.pop()
        for i, name in enumerate(names):
            start = i % closed_every  # staggered phases spread the closes over the steps
            for q in range(closed_every):
                phase = (start + q) % closed_every
                tokens = _TOKENS_A if start + q < closed_every else _TOKENS_B
                steps[q] += _frame(_event(name, phase, last, tokens))
        self.steps = [bytes(s) for s in steps]
        self.frames_per_step = len(names)

    def step(self, q: int, cycle: int) -> bytes:
        data = self.steps[q]
        now_ms = time.time_ns() // 1_000_000
        for tokens, c in ((_TOKENS_A, cycle), (_TOKENS_B, cycle + 1)):
            t = T0 + c * self.iv_ms
            for tok, value in zip(tokens, (t, t + self.iv_ms - 1, now_ms), strict=True):
                data = data.replace(tok, str(value).encode())
        return data


async def _serve_one(ws: ServerConnection, args: argparse.Namespace) -> None:
    url = urlsplit(ws.request.path)
    if not url.path.endswith("/stream"):
        await ws.close(1008, "only combined streams")
        return
    subscribed: dict[str, None] = {}
    for name in parse_qs(url.query).get("streams", [""])[0].split("/"):
        if name:
            subscribed[name] = None
    last_control = time.monotonic()
    ready = asyncio.Event()
    if len(subscribed) >= args.expect:
        ready.set()

    async def control() -> None:
        nonlocal last_control
        async for text in ws:
            last_control = time.monotonic()
            try:
                req = msgspec.json.decode(text)
                method, params, req_id = req.get("method"), req.get("params") or [], req.get("id")
            except (msgspec.DecodeError, AttributeError):
                await ws.send('{"code":3,"msg":"Invalid JSON","id":null}')
                continue
            result = None
            if method == "SUBSCRIBE":
                subscribed.update(dict.fromkeys(params))
            elif method == "UNSUBSCRIBE":
                for name in params:
                    subscribed.pop(name, None)
            elif method == "LIST_SUBSCRIPTIONS":
                result = list(subscribed)
            await ws.send(msgspec.json.encode({"result": result, "id": req_id}).decode())
            if len(subscribed) >= args.expect:
                ready.set()

    reader = asyncio.create_task(control())
    sent = 0
    started = None
    try:
        deadline = time.monotonic() + 30.0
        while not ready.is_set():
            settled = subscribed and time.monotonic() - last_control > 3.0
            if settled or time.monotonic() > deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 0.2)
        names = [n for n in subscribed if _STREAM_RE.fullmatch(n)]
        if not names:
            return
        blast = Blast(names, args.closed_every)
        transport = ws.transport
        started = time.monotonic()
        cycle = 0

        def open_() -> bool:
            return ws.state is State.OPEN and not transport.is_closing()

        while open_() and time.monotonic() - started < args.max_seconds:
            for q in range(args.closed_every):
                transport.write(blast.step(q, cycle))
                sent += blast.frames_per_step
                while transport.get_write_buffer_size() > _HIGH_WATER and open_():
                    await asyncio.sleep(0.0005)
                if not open_():
                    break
                await asyncio.sleep(0)  # let the control reader and pings through
            cycle += 1
        if open_():
            await ws.close(1000, "firehose done")
    except (ConnectionError, OSError, RuntimeError):  # RuntimeError: write after the peer's EOF
        pass
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        if started is not None:
            elapsed = time.monotonic() - started
            print(
                f"firehose: {len(subscribed)} streams, {sent} frames queued in {elapsed:.1f} s "
                f"({sent / max(elapsed, 1e-9):,.0f}/s)",
                file=sys.stderr,
                flush=True,
            )


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def handler(ws: ServerConnection) -> None:
        await _serve_one(ws, args)

    async with serve(
        handler,
        args.host,
        args.port,
        ping_interval=None,
        compression=None,
        max_size=1 << 20,
        write_limit=1 << 20,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"ready ws://{args.host}:{port}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.firehose", description=__doc__.splitlines()[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--expect", type=int, default=500, help="streams to wait for before pushing")
    p.add_argument("--closed-every", type=int, default=20, help="one frame in N is a closed candle")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest push per connection")
    asyncio.run(_main(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
