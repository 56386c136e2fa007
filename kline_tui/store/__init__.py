"""The dataset on disk: layout, reading (`scan`), compaction, verification, imports.

```python
from kline_tui.store import scan
lf = scan("~/klines", market="usdm", symbol="BTCUSDT", interval="1m", start="2026-11-01")
```
"""

from kline_tui.store.read import scan

__all__ = ["scan"]
