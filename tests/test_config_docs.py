"""The config schema is the one source: the README's table of keys is rendered from it, and it
declares, for every key, what a reader and a message need."""

import subprocess
import sys
from pathlib import Path

import msgspec
import msgspec.inspect as mi

from kline_tui.config import _KEYS, ConfigFile, Settings, config_table

README = Path(__file__).resolve().parents[1] / "README.md"


def _configuration_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Configuration\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_readme_table_is_the_one_the_schema_renders():
    lines = _configuration_section().splitlines(keepends=True)
    table = "".join(line for line in lines if line.startswith("|"))
    assert table == config_table(), (
        "README's Configuration table is stale: paste the output of "
        "`python -c 'from kline_tui.config import config_table; print(config_table(), end=\"\")'`"
    )


def _documented_keys() -> list:
    """Every key a file may set: tables and values, not the file itself or a list's items."""
    return [k for k in _KEYS.values() if k.path and not k.path.endswith("[]")]


def test_every_key_says_what_it_does():
    assert [k.path for k in _documented_keys() if not k.description] == []


def test_every_number_is_bounded_on_both_sides_so_nan_and_infinities_fail():
    numbers = [k for k in _documented_keys() if isinstance(k.type, (mi.IntType, mi.FloatType))]
    # recorder: 8, storage: vacuum_retention_h, alerts[]: 3, notify: 2
    assert len(numbers) == 14
    for key in numbers:
        assert key.extra.get("unit"), key.path
        assert key.type.ge is not None or key.type.gt is not None, key.path
        assert key.type.le is not None or key.type.lt is not None, key.path


def test_the_declared_defaults_pass_the_declared_checks():
    defaults = msgspec.to_builtins(ConfigFile())
    assert msgspec.convert(defaults, ConfigFile) == ConfigFile()


def test_settings_take_their_defaults_from_the_schema():
    recorder = ConfigFile().recorder
    settings = Settings(config_path=Path("x.toml"), config_exists=False)
    for name in msgspec.structs.asdict(recorder):
        assert getattr(settings, name) == getattr(recorder, name), name


def test_config_does_not_reach_into_the_recorder():
    code = "import sys, kline_tui.config; print(sorted(m for m in sys.modules if 'recorder' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
