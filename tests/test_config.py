"""Config files: what is read, and one clear line for what is wrong."""

from pathlib import Path

import pytest

from kline_tui.config import ConfigError, load_settings
from kline_tui.model import Market, StreamKey


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_full_config(tmp_path):
    path = write(tmp_path, '''
# my desk
data_dir = "/srv/klines"
watch = ["spot:BTCUSDT:1m", "usdt_futures:ETHUSDT:5m"]
[endpoints.usdm]
ws = "ws://127.0.0.1:9001/market/"
rest = "http://127.0.0.1:9001"
[recorder]
flush_rows = 1000
flush_age_s = 2.5
''')
    s = load_settings(path)
    assert s.data_dir == Path("/srv/klines")
    assert s.watch == (StreamKey.parse("spot:BTCUSDT:1m"), StreamKey.parse("usdm:ETHUSDT:5m"))
    assert s.endpoints[Market.USDM].ws == "ws://127.0.0.1:9001/market"
    assert s.endpoints[Market.SPOT].ws == "wss://stream.binance.com:9443"
    assert (s.flush_rows, s.flush_age_s) == (1000, 2.5)


@pytest.mark.parametrize(
    "text, words",
    [
        ("watch = [", "not valid TOML"),
        ('wacth = ["spot:BTCUSDT:1m"]', "wacth: unknown key"),
        ('watch = "spot:BTCUSDT:1m"', "watch: expected a list"),
        ('watch = ["usdm:BTCUSDT:1s"]', r"watch\[0\]: usdm has no 1s"),
        ('watch = ["spot:../x:1m"]', r"watch\[0\]: invalid symbol"),
        ('[endpoints.binance]\nws = "wss://x"', "endpoints.binance: unknown market"),
        ('[endpoints.spot]\nws = "https://x"', "endpoints.spot.ws: expected a ws"),
        ('[endpoints.spot]\nrest = 5', "endpoints.spot.rest: expected an http"),
        ("[recorder]\nflush_rows = 0", "recorder.flush_rows"),
        ("[recorder]\nflush_age_s = -1", "recorder.flush_age_s"),
        ("data_dir = 3", "data_dir: expected"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=words) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml")


def test_save_watch_keeps_comments_and_other_keys(tmp_path):
    from kline_tui.config import save_watch

    path = write(tmp_path, '# my desk\ndata_dir = "/srv/k"  # fast disk\nwatch = ["spot:BTCUSDT:1m"]\n[endpoints.usdm]\nws = "ws://127.0.0.1:1/market"\n')
    save_watch(path, [StreamKey.parse("spot:BTCUSDT:1m"), StreamKey.parse("coinm:BTCUSD_PERP:5m")])
    text = path.read_text()
    assert "# my desk" in text and "# fast disk" in text
    s = load_settings(path)
    assert [str(k) for k in s.watch] == ["spot:BTCUSDT:1m", "coinm:BTCUSD_PERP:5m"]
    assert s.endpoints[Market.USDM].ws == "ws://127.0.0.1:1/market"
    new = tmp_path / "sub" / "fresh.toml"
    save_watch(new, [StreamKey.parse("usdm:ETHUSDT:1m")])
    assert [str(k) for k in load_settings(new).watch] == ["usdm:ETHUSDT:1m"]
