"""Closed candle -> on screen, measured inside the app (run as its own process by `fullmarket`).

    python -m benchmarks.ui_latency --config C --seconds 60

Runs the real `KlineApp` under Textual's Pilot (`run_test(headless=True)`, 200x60) against the
simulator named in the config (another process). Three hooks, all instance attributes, nothing
in kline_tui/ changed:

- `hub.on_kline`: when a closed candle is *accepted* (the row's "Rec" count and sparkline change)
  for a stream whose row is on screen, its arrival time is noted (the oldest unpainted one per row);
- `table.render_line`: when the compositor renders that row afterwards, the row is marked painted
  (it reads the state then, so it shows the candle);
- `app._display`: the compositor's update for the frame; the latency is taken here, when the
  frame is handed to the terminal driver (headless: the driver writes nothing, so the terminal's
  own write, a few ms for a 200x60 frame, is not counted).

Prints `result {json}` with the latency percentiles and the message rate the hub saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path


async def _measure(config: Path, seconds: float, warmup: float) -> dict:
    from kline_tui.config import load_settings
    from kline_tui.recorder.hub import StreamStatus
    from kline_tui.ui.app import KlineApp

    settings = load_settings(config)
    app = KlineApp(settings, save_watch_list=False)
    latencies: list[float] = []
    async with app.run_test(headless=True, size=(200, 60)):
        await app.wait_started()
        hub, table = app.pipeline.hub, app.table
        deadline = time.monotonic() + 60
        while sum(s.status is StreamStatus.LIVE for s in hub.streams.values()) < 0.98 * len(
            hub.streams
        ):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(warmup)
        # key -> arrival (perf_counter) of the oldest closed candle not yet painted
        pending: dict = {}
        painted: set = set()
        on_kline, render_line, display = hub.on_kline, table.render_line, app._display
        clock = time.perf_counter

        def visible() -> set:
            top = int(table.scroll_offset.y)
            return set(table.order[top : top + table._rows_visible()])

        shown = visible()
        shown_at = time.monotonic()

        def hooked_on_kline(key, event_time, kline, *rest):
            nonlocal shown, shown_at
            state = hub.streams.get(key)
            before = state.recorded if state is not None else None
            on_kline(key, event_time, kline, *rest)
            if (
                kline.closed
                and state is not None
                and state.recorded != before
                and key not in pending
            ):
                if time.monotonic() - shown_at > 1.0:
                    shown, shown_at = visible(), time.monotonic()
                if key in shown:
                    pending[key] = clock()

        def hooked_render_line(y):
            strip = render_line(y)
            if y > 0 and pending:
                row = int(table.scroll_offset.y) + y - 1
                if row < len(table.order) and table.order[row] in pending:
                    painted.add(table.order[row])
            return strip

        def hooked_display(screen, renderable):
            display(screen, renderable)
            if painted:
                now = clock()
                for key in painted:
                    arrived = pending.pop(key, None)
                    if arrived is not None:
                        latencies.append(now - arrived)
                painted.clear()

        hub.on_kline, table.render_line, app._display = (
            hooked_on_kline,
            hooked_render_line,
            hooked_display,
        )
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        rate = sum(c.frames_per_s() for c in hub.connection_status())
        live = sum(s.status is StreamStatus.LIVE for s in hub.streams.values())
        hub.on_kline, app._display = on_kline, display
        del table.render_line
        elapsed = time.monotonic() - t0
        await app.shutdown_pipeline()
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float | None:
        return ms[min(len(ms) - 1, int(p * len(ms)))] if ms else None

    return {
        "samples": len(ms),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "max_ms": ms[-1] if ms else None,
        "mean_ms": statistics.fmean(ms) if ms else None,
        "msgs_per_s": rate,
        "streams": len(hub.streams),
        "live": live,
        "seconds": elapsed,
        "unpainted": len(pending),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ui_latency")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=10.0)
    args = p.parse_args(argv)
    result = asyncio.run(_measure(args.config, args.seconds, args.warmup))
    print("result " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
