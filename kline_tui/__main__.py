"""`python -m kline_tui`, the same as `kline-tui` (what `kline-tui web` runs in each tab)."""

import sys

from kline_tui.cli import main

sys.exit(main())
