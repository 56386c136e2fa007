"""6. Attached UIs: what 5 clients of the events socket cost the recorder.

A recorder with 1,000 streams at the simulator's real pace (500 spot pushed every 2 s, 450 USD-M
and 50 COIN-M every 250 ms: about 2,250 messages a second) runs as `kline-tui record --listen`
(keeping 120 closed candles per stream for the clients' sparklines, as a service does), against
the simulator in its own process. Its CPU (% of one core, all threads, psutil) is sampled once a
second in three windows: no client, 5 clients, no client again. The clients are 5 `RemoteRecorder`
mirrors in one other process (`python -m benchmarks.attach clients URL 5`), each with its own
socket, as 5 attached UIs would be (without their screens: what they draw is their own process's
cost, not the recorder's).

The figure is the 5-client window's mean minus the mean of the two empty windows (bracketing
cancels the drift of a shared machine); the issue's goal is at most +5 % of a core.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

from benchmarks.common import (
    PY,
    Children,
    Row,
    Sampler,
    child_env,
    kline_tui_cmd,
    read_until,
    temp_dir,
    verdict,
)

COUNTS = {"spot": 500, "usdm": 450, "coinm": 50}
CLIENTS = 5
TOKEN = "benchmark-token-0123456789"
WARMUP_S = 30.0  # subscribing 1,000 streams and fetching their 120 recent candles
SETTLE_S = 5.0  # after the clients connect (their snapshots) or leave
BUDGET = 5.0  # percentage points of one core


def _watch() -> list[str]:
    from kline_tui.model import Market
    from kline_tui.sim.universe import universe

    streams = []
    for market, count in COUNTS.items():
        symbols = [s for s, info in universe(Market(market), 2000).items() if info.trading][:count]
        assert len(symbols) == count, (market, len(symbols))
        streams += [f"{market}:{s}:1m" for s in symbols]
    return streams


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _window(sampler: Sampler, start: float, end: float) -> float:
    """Mean CPU of the samples taken within [start, end] (sampler-relative seconds)."""
    cpu = [c for t, c, _ in sampler.samples if start <= t <= end]
    if not cpu:
        raise RuntimeError("no CPU samples in a window")
    return sum(cpu) / len(cpu)


def run(quick: bool) -> list[Row]:
    seconds = 20.0 if quick else 60.0
    watch = _watch()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with temp_dir("attach") as root, Children() as children:
        sim = children.start([PY, "-m", "kline_tui.sim", "--speed", "1", "--extra-symbols", "2000"])
        endpoints = "\n".join(line for line in read_until(sim, "ready", 60) if line != "ready")
        config = root / "record.toml"
        config.write_text(
            f"data_dir = {json.dumps(str(root / 'data'))}\nwatch = {json.dumps(watch)}\n\n"
            f"{endpoints}\n\n[recorder]\nhistory = 0\n"
        )
        log = root / "record.log"
        with open(log, "w") as err:
            recorder = children.start(
                [*kline_tui_cmd(), "record", "--config", str(config), "--listen", str(port)],
                env=child_env(KLINE_TUI_TOKEN=TOKEN),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        sampler = Sampler(recorder.pid).start()
        t0 = time.monotonic()

        def now() -> float:
            if recorder.poll() is not None:
                raise RuntimeError(f"the recorder exited: {log.read_text()[-2000:]}")
            return time.monotonic() - t0

        def wait(until: float) -> None:
            while now() < until:
                time.sleep(0.5)

        try:
            wait(WARMUP_S)
            empty_1 = (now(), now() + seconds)
            wait(empty_1[1])
            clients = children.start(
                [PY, "-m", "benchmarks.attach", "clients", url, str(CLIENTS)],
                env=child_env(KLINE_TUI_TOKEN=TOKEN),
            )
            read_until(clients, "ready", 120)
            client_cpu = Sampler(clients.pid).start()
            busy_start = now() + SETTLE_S
            busy = (busy_start, busy_start + seconds)
            wait(busy[1])
            client_cpu.stop()
            children.stop(clients, signal.SIGTERM, timeout=10)
            out = clients.stdout.read() if clients.stdout else ""
            report = next(
                (json.loads(line[7:]) for line in out.splitlines() if line.startswith("result ")),
                {},
            )
            empty_2 = (now() + SETTLE_S, now() + SETTLE_S + seconds)
            wait(empty_2[1])
        finally:
            sampler.stop()
            children.stop(recorder, signal.SIGTERM, timeout=60)
            children.stop(sim)
    alone = (_window(sampler, *empty_1) + _window(sampler, *empty_2)) / 2
    attached = _window(sampler, *busy)
    extra = attached - alone
    clients_cpu = [c for t, c, _ in client_cpu.samples]
    return [
        Row(
            f"6 attach: recorder CPU, 0 vs {CLIENTS} clients",
            f"{alone:.1f}% vs {attached:.1f}% of a core ({extra:+.1f} points, "
            f"x{attached / alone:.2f})",
            f"<= +{BUDGET:g}% of a core",
            verdict(extra <= BUDGET, f"{extra / BUDGET:.2f}x of budget"),
            [
                f"attach: {len(watch)} streams ({', '.join(f'{n} {m}' for m, n in COUNTS.items())}"
                f", 1m) at the simulator's real pace; windows of {seconds:.0f} s: no client "
                f"{_window(sampler, *empty_1):.1f}%, {CLIENTS} clients {attached:.1f}%, no "
                f"client {_window(sampler, *empty_2):.1f}%",
                f"attach: the {CLIENTS} clients' process used "
                f"{sum(clients_cpu) / max(len(clients_cpu), 1):.0f}% of a core; per client "
                f"{report.get('messages_per_s', 0):.1f} messages/s, "
                f"{report.get('kbytes_per_s', 0):.0f} kB/s, snapshot "
                f"{report.get('snapshot_kb', 0):.0f} kB",
            ],
        )
    ]


# -- the clients' process -------------------------------------------------------------------


async def _clients(url: str, count: int) -> None:
    """`count` RemoteRecorders following `url` until SIGTERM; prints `ready` once all have their
    snapshot, and at the end `result {json}` with what one client received a second."""
    import os

    import aiohttp

    from kline_tui.service.client import RemoteRecorder

    received = [0]
    snapshot = [0]
    original = aiohttp.ClientWebSocketResponse.receive

    async def counting(self, timeout=None):  # every message's size, for the figures
        message = await original(self, timeout)
        if isinstance(message.data, (bytes, str)):
            size = len(message.data)
            received[0] += size
            snapshot[0] = snapshot[0] or size
        return message

    aiohttp.ClientWebSocketResponse.receive = counting  # type: ignore[method-assign]
    token = os.environ.get("KLINE_TUI_TOKEN")
    clients = [RemoteRecorder(url, token) for _ in range(count)]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.wait_connected() for c in clients)), 120)
    print("ready", flush=True)
    started, messages, got = time.monotonic(), sum(c.messages for c in clients), received[0]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    took = time.monotonic() - started
    per_client = {
        "messages_per_s": (sum(c.messages for c in clients) - messages) / took / count,
        "kbytes_per_s": (received[0] - got) / took / count / 1000,
        "snapshot_kb": snapshot[0] / 1000,
        "connected": sum(c.connected for c in clients),
    }
    for client in clients:
        await client.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    print("result " + json.dumps(per_client), flush=True)


def main(argv: list[str]) -> int:
    """`python -m benchmarks.attach clients URL N`: the clients' process; with no arguments the
    scenario alone (`python -m benchmarks --only attach` runs it in the table)."""
    if argv[:1] == ["clients"]:
        asyncio.run(_clients(argv[1], int(argv[2])))
        return 0
    for row in run(quick="--quick" in argv):
        print(f"{row.scenario}: {row.figure}  [{row.verdict}]")
        for note in row.notes:
            print("  - " + note)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
