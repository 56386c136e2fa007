"""Config files: what is read, and one clear line for what is wrong."""

import contextlib
import datetime as dt
import math
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kline_tui.config import ConfigError, load_settings
from kline_tui.model import Market, StreamKey


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_full_config(tmp_path):
    path = write(
        tmp_path,
        """
# my desk
data_dir = "/srv/klines"
watch = ["spot:BTCUSDT:1m", "usdt_futures:ETHUSDT:5m"]
[endpoints.usdm]
ws = "ws://127.0.0.1:9001/market/"
rest = "http://127.0.0.1:9001"
[recorder]
flush_rows = 1000
flush_age_s = 2.5
""",
    )
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
        ("[endpoints.spot]\nrest = 5", "endpoints.spot.rest: expected an http"),
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


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            "[recorder]\nflush_age_s = 0",
            "recorder.flush_age_s: expected a number of seconds above 0 and at most 3600",
        ),
        (
            "[recorder]\nflush_rows = 1000\nmax_buffer_rows = 999",
            "recorder.max_buffer_rows: expected a whole number of rows from 1 to 50,000,000,"
            " at least flush_rows (which is 1000)",
        ),
        (
            "[recorder]\nflush_row = 1",
            "recorder.flush_row: unknown key (known: flush_rows, flush_age_s, history,"
            " rotate_after_h, reconnect_max_s, max_buffer_rows, stop_timeout_s, premium_bound)",
        ),
        ('watch = ["spot:BTCUSDT:1m", 5]', 'watch[1]: expected a string like "usdm:BTCUSDT:1m"'),
        (
            "recorder = 5",
            "recorder: expected a table of flush_rows, flush_age_s, history, rotate_after_h,"
            " reconnect_max_s, max_buffer_rows, stop_timeout_s, premium_bound",
        ),
        ("[endpoints.usdm]\nwss = 'ws://x'", "endpoints.usdm.wss: unknown key (known: ws, rest)"),
        ("[endpoints]\nusdm = 'ws://x'", "endpoints.usdm: expected a table of ws, rest"),
        ("[endpoints.spot]\nws = 'wss://'", "endpoints.spot.ws: expected a ws:// or wss:// URL"),
        (
            "[endpoints.usdm]\nws = 'ws://a'\n[endpoints.usdt_futures]\nws = 'ws://b'",
            "endpoints.usdt_futures: usdm is set twice (once under an older name)",
        ),
    ],
)
def test_the_problem_is_worded_from_the_schema(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: {problem}"


def test_a_key_that_would_break_the_line_is_shown_escaped(tmp_path):
    path = write(tmp_path, '[recorder]\n"a\\nb`c" = 1\n')
    with pytest.raises(ConfigError, match=r"recorder\.a\\nb`c: unknown key") as info:
        load_settings(path)
    assert "\n" not in str(info.value)


def test_an_endpoint_table_may_set_one_url_and_keep_the_markets_other(tmp_path):
    s = load_settings(write(tmp_path, '[endpoints.usdt_futures]\nrest = "http://127.0.0.1:9/"\n'))
    assert s.endpoints[Market.USDM].rest == "http://127.0.0.1:9"
    assert s.endpoints[Market.USDM].ws == "wss://fstream.binance.com/market"
    assert s.endpoints[Market.COINM].rest == "https://dapi.binance.com"


def test_an_empty_file_gives_the_same_settings_as_no_file(tmp_path):
    from kline_tui.config import Settings

    loaded = load_settings(write(tmp_path, ""))
    built = Settings(config_path=loaded.config_path, config_exists=True)
    assert loaded == built
    assert (built.flush_rows, built.flush_age_s, built.max_buffer_rows) == (50_000, 60.0, 500_000)
    assert (built.history, built.rotate_after_h, built.reconnect_max_s) == (1000, 23.0, 60.0)


def test_a_config_path_under_an_unknown_user_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot expand"):
        load_settings(Path("~no-such-user-kline-tui/config.toml"))


def test_the_default_watch_list_is_the_majors_of_every_market():
    from kline_tui.config import DEFAULT_WATCH

    keys = [StreamKey.parse(spec) for spec in DEFAULT_WATCH]
    assert len(set(keys)) == len(keys)
    assert {k.market for k in keys} == set(Market)
    assert {k.symbol for k in keys} >= {"BTCUSDT", "ETHUSDT", "BTCUSD_PERP"}


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml")


def test_save_watch_keeps_comments_and_other_keys(tmp_path):
    from kline_tui.config import save_watch

    path = write(
        tmp_path,
        '# my desk\ndata_dir = "/srv/k"  # fast disk\nwatch = ["spot:BTCUSDT:1m"]\n'
        '[endpoints.usdm]\nws = "ws://127.0.0.1:1/market"\n',
    )
    save_watch(path, [StreamKey.parse("spot:BTCUSDT:1m"), StreamKey.parse("coinm:BTCUSD_PERP:5m")])
    text = path.read_text()
    assert "# my desk" in text and "# fast disk" in text
    s = load_settings(path)
    assert [str(k) for k in s.watch] == ["spot:BTCUSDT:1m", "coinm:BTCUSD_PERP:5m"]
    assert s.endpoints[Market.USDM].ws == "ws://127.0.0.1:1/market"
    new = tmp_path / "sub" / "fresh.toml"
    save_watch(new, [StreamKey.parse("usdm:ETHUSDT:1m")])
    assert [str(k) for k in load_settings(new).watch] == ["usdm:ETHUSDT:1m"]


# -- numbers: finite, bounded -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
@pytest.mark.parametrize(
    "key", ["flush_age_s", "rotate_after_h", "reconnect_max_s", "stop_timeout_s"]
)
def test_non_finite_seconds_and_hours_are_refused(tmp_path, key, value):
    path = write(tmp_path, f"[recorder]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=f"recorder.{key}: expected"):
        load_settings(path)


@pytest.mark.parametrize(
    "line",
    [
        "flush_age_s = 3601",
        "flush_age_s = 1e308",
        "history = 100001",
        "flush_rows = 50000001",
        "max_buffer_rows = 50000001",
        "reconnect_max_s = 3601",
        "stop_timeout_s = 0.5",
        "stop_timeout_s = 301",
        "stop_timeout_s = true",
    ],
)
def test_every_number_has_an_upper_and_lower_bound(tmp_path, line):
    key = line.split(" = ")[0]
    with pytest.raises(ConfigError, match=f"recorder.{key}: expected"):
        load_settings(write(tmp_path, f"[recorder]\n{line}\n"))


def test_the_largest_accepted_values_load(tmp_path):
    s = load_settings(
        write(
            tmp_path,
            """[recorder]
flush_rows = 50000000
max_buffer_rows = 50000000
flush_age_s = 3600
history = 100000
rotate_after_h = 23.99
reconnect_max_s = 3600
stop_timeout_s = 300
""",
        )
    )
    assert (s.flush_rows, s.max_buffer_rows, s.history) == (50_000_000, 50_000_000, 100_000)
    assert (s.flush_age_s, s.reconnect_max_s, s.stop_timeout_s) == (3600.0, 3600.0, 300.0)
    assert isinstance(s.stop_timeout_s, float) and isinstance(s.history, int)


def test_stop_timeout_setting(tmp_path):
    assert load_settings(write(tmp_path, "")).stop_timeout_s == 15.0
    assert (
        load_settings(write(tmp_path, "[recorder]\nstop_timeout_s = 40\n")).stop_timeout_s == 40.0
    )


@pytest.mark.parametrize(
    "text, words",
    [
        ('data_dir = ""', "data_dir: expected a folder path"),
        ('data_dir = "  "', "data_dir: expected a folder path"),
        ('data_dir = "a\\u0000b"', "data_dir: expected a folder path"),
        ('data_dir = "~no-such-user-kline-tui/data"', "data_dir: cannot expand"),
    ],
)
def test_unusable_data_dir_is_refused(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(write(tmp_path, text))


# -- any TOML value in any key: a ConfigError or settings, nothing else ------------------------

_TIMES = st.one_of(st.datetimes(), st.datetimes(timezones=st.just(dt.UTC)), st.dates(), st.times())
_NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "~no-such-user-kline-tui/x",
        "a\x00b",
        "\x1b[2J",
        "spot:BTCUSDT:1m",
        "usdm:BTCUSDT:1s",
        "coinm:BTCUSD_PERP:1M",
        "spot:BTCUSDT:1m:mark",
        "ws://127.0.0.1:1/market",
        "https://x",
        "nan",
        "inf",
    ]
)
_SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 1000, 100_000, 100_001, 50_000_000, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    _NASTY_TEXT,
    _TIMES,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _table(keys: list[str]) -> st.SearchStrategy[dict]:
    """Tables whose keys are mostly the known ones, with any value."""
    return st.dictionaries(
        st.sampled_from(keys) | st.text(max_size=6), _VALUES, max_size=len(keys) + 1
    )


_RECORDER = _table(
    [
        "flush_rows",
        "flush_age_s",
        "history",
        "rotate_after_h",
        "reconnect_max_s",
        "max_buffer_rows",
        "stop_timeout_s",
    ]
)
_ENDPOINTS = st.dictionaries(
    st.sampled_from(["spot", "usdm", "coinm", "usdt_futures", "SPOT", "binance"])
    | st.text(max_size=6),
    _table(["ws", "rest"]) | _VALUES,
    max_size=3,
)
_DOCS = st.fixed_dictionaries(
    {},
    optional={
        "data_dir": _VALUES,
        "watch": st.lists(_NASTY_TEXT | _VALUES, max_size=4) | _VALUES,
        "endpoints": _ENDPOINTS | _VALUES,
        "recorder": _RECORDER | _VALUES,
    },
) | st.dictionaries(st.text(max_size=6), _VALUES, max_size=2)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCS)
def test_any_toml_values_give_settings_or_a_config_error(doc):
    from kline_tui.config import Settings, _settings_from

    path = Path("/nonexistent/config.toml")
    try:
        s = _settings_from(doc, path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return
    assert isinstance(s, Settings)
    for number in (s.flush_age_s, s.rotate_after_h, s.reconnect_max_s):
        assert math.isfinite(number) and number > 0
    assert 1 <= s.flush_rows <= s.max_buffer_rows <= 50_000_000 and 0 <= s.history <= 100_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCS)
def test_any_toml_file_loads_or_gives_a_config_error(tmp_path_factory, doc):
    import tomlkit

    try:
        text = tomlkit.dumps(doc)
    except (TypeError, ValueError, tomlkit.exceptions.TOMLKitError):
        return  # not every value tree has a TOML spelling (null bytes in keys...)
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(ConfigError):
        load_settings(path)


# -- saving the watch list -------------------------------------------------------------------


def test_save_watch_writes_through_a_symlink_and_keeps_the_mode(tmp_path):
    from kline_tui.config import save_watch

    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "kline.toml"
    target.write_text('# mine\nwatch = ["spot:BTCUSDT:1m"]\n')
    target.chmod(0o640)
    link = tmp_path / "config" / "config.toml"
    link.parent.mkdir()
    link.symlink_to(target)

    save_watch(link, [StreamKey.parse("usdm:ETHUSDT:5m")])

    assert link.is_symlink() and link.resolve() == target
    assert [str(k) for k in load_settings(target).watch] == ["usdm:ETHUSDT:5m"]
    assert "# mine" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in dotfiles.iterdir()) == ["kline.toml"]  # no temporary file left
    assert sorted(p.name for p in link.parent.iterdir()) == ["config.toml"]


def test_save_watch_keeps_a_readable_mode_and_makes_new_files_like_any_other(tmp_path):
    from kline_tui.config import save_watch

    path = write(tmp_path, "watch = []\n")
    path.chmod(0o644)
    save_watch(path, [StreamKey.parse("spot:ETHUSDT:1m")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    old = os.umask(0o022)
    try:
        fresh = tmp_path / "new" / "config.toml"
        save_watch(fresh, [StreamKey.parse("spot:ETHUSDT:1m")])
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


_SLOW_SAVER = """
import sys, time
from pathlib import Path
import tomlkit
from kline_tui.config import _edit_config

path, ready = Path(sys.argv[1]), Path(sys.argv[2])

def change(doc):
    ready.touch()  # the file is read: the other process's save begins now
    time.sleep(0.5)
    doc["watch"] = tomlkit.array('["usdm:ETHUSDT:1m"]')

_edit_config(path, change)
"""


def test_a_save_from_another_process_is_never_lost(tmp_path):
    """A UI attached to the recorder of its own folder saves [ui] into the file the recorder
    saves its watch list to: the save that begins while the other is between its read and its
    write waits for it, and keeps its change."""
    import subprocess
    import sys
    import time

    from kline_tui.config import UiConfig, save_ui

    path, ready = tmp_path / "config.toml", tmp_path / "ready"
    path.write_text('# mine\nwatch = ["spot:BTCUSDT:1m"]\n')
    other = subprocess.Popen([sys.executable, "-c", _SLOW_SAVER, str(path), str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert other.poll() is None and time.monotonic() < deadline, "the saver never read"
            time.sleep(0.01)
        save_ui(path, UiConfig(theme="nord"))
        assert other.wait(30) == 0
    finally:
        other.kill()
    settings = load_settings(path)
    assert [str(k) for k in settings.watch] == ["usdm:ETHUSDT:1m"]
    assert settings.ui.theme == "nord"
    assert path.read_text().startswith("# mine\n")


def test_a_config_save_without_a_lock_folder_still_saves_and_a_failed_one_leaves_no_file(
    tmp_path, monkeypatch, caplog
):
    """The cross-process lock lives in the cache folder: a read-only one (a hardened service)
    costs the lock, with one warning, not the save. And a save that fails leaves no config
    behind where there was none (a first launch must still look like one)."""
    from kline_tui.config import UiConfig, _edit_config, save_ui

    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    path = tmp_path / "cfg" / "config.toml"
    try:
        save_ui(path, UiConfig(theme="nord"))
    finally:
        cache.chmod(0o700)
    if os.geteuid() != 0:  # root writes anywhere: no warning to see
        assert "without a lock" in caplog.text
    assert load_settings(path).ui.theme == "nord"

    fresh = tmp_path / "fresh" / "config.toml"

    def broken(doc):
        raise ValueError("a change that fails")

    with pytest.raises(ValueError):
        _edit_config(fresh, broken)
    assert not fresh.exists()
