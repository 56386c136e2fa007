"""A launcher for the UI alone, until the `kline-tui` command opens it:

    python -m kline_tui.ui --demo [--demo-speed X] [--config FILE] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from kline_tui.config import ConfigError, Settings, load_settings
from kline_tui.ui.app import run_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kline_tui.ui")
    parser.add_argument("--demo", action="store_true", help="run against the built-in simulator")
    parser.add_argument("--demo-speed", type=float, default=1.0)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.config is not None and not args.config.exists():
            settings = Settings(config_path=args.config, config_exists=False)  # a first launch
        else:
            settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"kline-tui: {exc}", file=sys.stderr)
        return 2
    if args.data_dir is not None:
        settings = replace(settings, data_dir=args.data_dir)
    return run_app(settings, demo_speed=args.demo_speed if args.demo else None)


if __name__ == "__main__":
    sys.exit(main())
