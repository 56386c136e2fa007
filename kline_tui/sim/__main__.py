"""`python -m kline_tui.sim`: run the simulator until SIGINT/SIGTERM, printing its endpoints."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from kline_tui.model import Market
from kline_tui.sim.server import Simulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kline_tui.sim",
        description="Run the built-in Binance simulator (spot, USD-M, COIN-M) on loopback.",
    )
    p.add_argument("--speed", type=float, default=1.0, help="exchange clock speed (default 1.0)")
    p.add_argument("--offset-s", type=float, default=0.0, help="exchange clock offset in seconds")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    for m in Market:
        p.add_argument(
            f"--{m.value}-port", type=int, default=0, help=f"{m.value} port (default: any free)"
        )
    p.add_argument(
        "--ping-interval-s",
        type=float,
        default=None,
        help="server ping period (default: the market's)",
    )
    p.add_argument(
        "--extra-symbols",
        type=int,
        default=2000,
        help="synthetic symbols per market (default 2000)",
    )
    return p


def endpoints_toml(sim: Simulator) -> str:
    """The simulator's endpoints as a TOML block for the kline-tui config."""
    blocks = []
    for market, ep in sim.endpoints.items():
        blocks.append(f'[endpoints.{market.value}]\nws = "{ep.ws}"\nrest = "{ep.rest}"')
    return "\n\n".join(blocks)


async def _serve(args: argparse.Namespace) -> None:
    sim = Simulator(
        speed=args.speed,
        offset_ms=int(args.offset_s * 1000),
        host=args.host,
        ports={m: getattr(args, f"{m.value}_port") for m in Market},
        extra_symbols=args.extra_symbols,
        ping_interval_s=args.ping_interval_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    try:
        print(endpoints_toml(sim))
        print("ready", flush=True)
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.speed <= 0:
        print("error: --speed must be positive", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args))
    except OSError as exc:  # e.g. a port already in use
        print(f"error: cannot start the simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
