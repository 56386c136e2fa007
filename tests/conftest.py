"""Shared fixtures: an in-process simulator on loopback."""

from __future__ import annotations

import pytest

# What `sim` is unless a test or its module is marked `@pytest.mark.simulator(**options)`: a
# clock 60x fast and an hour ahead of the local clock.
FAST_AND_AHEAD = {"speed": 60.0, "offset_ms": 3_600_000}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The cache folder (the config's save lock lives there) is a temporary one: tests leave
    nothing in the home folder's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "simulator(**options): the options of the `sim` fixture's Simulator"
    )


@pytest.fixture
async def sim(request: pytest.FixtureRequest):
    """A simulator on loopback, `Simulator(**options)` as marked, else fast and an hour ahead."""
    from kline_tui.sim import Simulator

    marker = request.node.get_closest_marker("simulator")
    options = marker.kwargs if marker else FAST_AND_AHEAD
    async with Simulator(**options) as simulator:
        yield simulator
