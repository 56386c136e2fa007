"""`kline-tui record --shard I/N`: the streams of shard I of N, as DESIGN.md defines it."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from kline_tui.cli.command import UsageError, shard_settings
from kline_tui.config import Settings
from kline_tui.model import StreamKey

SPECS = [
    f"{m}:{s}:{i}" for m in ("spot", "usdm") for s in ("BTCUSDT", "ETHUSDT") for i in ("1m", "1h")
]
SPECS += ["coinm:BTCUSD_PERP:1m", "spot:SOLUSDT:1M", "usdm:XRPUSDT:5m"]


def settings() -> Settings:
    return Settings(Path("x.toml"), False, watch=tuple(StreamKey.parse(s) for s in SPECS))


def test_shards_split_the_watch_list_by_the_crc32_of_the_canonical_spec():
    keys = settings().watch
    for count in (1, 2, 3, 7):
        shards = {}
        for index in range(1, count + 1):
            try:
                shards[index] = shard_settings(settings(), f"{index}/{count}").watch
            except UsageError:
                shards[index] = ()
        # every stream in exactly one shard, the one the contract names
        assert sorted(k for part in shards.values() for k in part) == sorted(keys)
        for index, part in shards.items():
            for key in part:
                spec = f"{key.market.value}:{key.symbol}:{key.interval.value}"
                assert zlib.crc32(spec.encode()) % count == index - 1
    # a known value, so the hash can never change under the users' feet
    assert StreamKey.parse("usdm:BTCUSDT:1m").shard(3) == zlib.crc32(b"usdm:BTCUSDT:1m") % 3 + 1


@pytest.mark.parametrize(
    "text, words",
    [
        ("0/3", "I must be from 1 to N"),
        ("4/3", "I must be from 1 to N"),
        ("2", "write I/N"),
        ("a/b", "write I/N"),
        ("1/0", "I must be from 1 to N"),
    ],
)
def test_a_bad_shard_is_refused_with_one_line(text, words):
    with pytest.raises(UsageError, match=words):
        shard_settings(settings(), text)


def test_a_shard_with_none_of_the_streams_is_refused():
    one = Settings(Path("x.toml"), False, watch=(StreamKey.parse("usdm:BTCUSDT:1m"),))
    empty = next(i for i in (1, 2) if StreamKey.parse("usdm:BTCUSDT:1m").shard(2) != i)
    with pytest.raises(UsageError, match="holds none of the 1 streams"):
        shard_settings(one, f"{empty}/2")
