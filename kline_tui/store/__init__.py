"""The dataset: the storage interface (`dataset`), the Parquet folder and the Delta table behind
it, reading (`scan`), compaction, verification, imports.

```python
from kline_tui.store import scan
lf = scan("~/klines", market="usdm", symbol="BTCUSDT", interval="1m", start="2026-11-01")
lf = scan("s3://bucket/klines", symbol="BTCUSDT", storage_options={"aws_region": "eu-west-1"})
lf = scan("~/klines", market="usdm", symbol="BTCUSDT", kind="mark")  # trade unless asked; None: all
```
"""

from kline_tui.store.dataset import scan

__all__ = ["scan"]
