"""Shared fixtures: an in-process simulator on loopback."""

from __future__ import annotations

import pytest


@pytest.fixture
async def sim():
    """A simulator whose clock runs 60x fast and an hour ahead of the local clock."""
    from kline_tui.sim import Simulator

    simulator = Simulator(speed=60.0, offset_ms=3_600_000)
    await simulator.start()
    yield simulator
    await simulator.stop()


