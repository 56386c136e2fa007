"""`python -m kline_tui.cli`, the same as `kline-tui`."""

import sys

from kline_tui.cli import main

sys.exit(main())
