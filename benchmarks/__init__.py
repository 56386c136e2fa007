"""kline-tui's performance benchmark: `python -m benchmarks [--quick] [--only NAME ...]`.

Each scenario lives in its own module and returns `Row`s (see `common`); `__main__` runs them and
prints one table of figures, targets and verdicts. Load generators (the firehose, the simulator)
always run in a process of their own, apart from the system under test.
"""
