"""Part files: rows of the dataset published as one Parquet file, the one way every writer does it.

The sink (each flush), `backfill`, `import` and `verify --repair` all write through `write_part`:
the rows sorted by (symbol, open_time) and encoded with the dataset's schema in memory, then
written in the staging folder, fsynced and renamed into their bucket under `publishing()` (so a
compaction never carries a new part away with the old ones). Encoding before any file is opened
keeps the two kinds of failure apart: an exception while encoding is the rows' fault (a value no
column holds), an OSError afterwards is the disk's. Compaction encodes its merged file with the
same settings (`encode`) but swaps whole folders in rather than publishing one file.

Rows no bucket can hold (an open time before 1970 or after 9999) never reach a path: `set_aside`
appends them to the dead-letter file.

Every function takes the stream's kind (default trade): its rows go to the kind's partition
(`market=usdm-mark`), and the rows of a kind without volume (mark, index, premium) are written
with NULL in the volume, taker and trades columns, whatever the writer handed in (DESIGN.md,
"Contracts": those fields do not exist for the kind; zero would be a lie).
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import polars as pl

from kline_tui.model import Interval, Kind, Market, partition_label
from kline_tui.store import layout
from kline_tui.store.schema import PARQUET_SCHEMA

__all__ = [
    "NO_BUCKET",
    "NO_VOLUME_COLUMNS",
    "Row",
    "Rows",
    "as_frame",
    "encode",
    "set_aside",
    "write_part",
    "write_parts",
]

log = logging.getLogger(__name__)

# One row: the values of PARQUET_SCHEMA's columns, in its order.
Row = tuple[Any, ...]
# Rows as tuples (the sink's buffer), or a frame holding the dataset's columns.
Rows = pl.DataFrame | Sequence[Row]

NO_BUCKET = "its open time has no date bucket (1970 to 9999)"

# The labels of layout.bucket_of, as Polars formats for labelling a whole column at once.
_BUCKET_FORMAT = {"day": "%Y-%m-%d", "month": "%Y-%m-01", "year": "%Y-01-01"}

# Part numbers, shared by every writer of the process: next() on a count is atomic under the GIL,
# so the sink's writer thread and a backfill's threads can take them side by side.
_seq = itertools.count()


# The columns a kind without volume (`Kind.has_volume` False: mark, index, premium) leaves NULL.
NO_VOLUME_COLUMNS: tuple[str, ...] = (
    "volume",
    "quote_volume",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "trades",
)


def as_frame(rows: Rows, kind: Kind = Kind.TRADE) -> pl.DataFrame:
    """`rows` as a frame of exactly the dataset's columns and types, with the volume columns
    NULL for a kind that has none. Raises (not OSError) when a value fits no column."""
    if isinstance(rows, pl.DataFrame):
        frame = rows.select(list(PARQUET_SCHEMA)).cast(PARQUET_SCHEMA)
    else:
        frame = pl.DataFrame(rows, schema=PARQUET_SCHEMA, orient="row")
    if kind.has_volume:
        return frame
    return frame.with_columns(pl.lit(None, PARQUET_SCHEMA[c]).alias(c) for c in NO_VOLUME_COLUMNS)


def encode(
    frame: pl.DataFrame, target: Path | IO[bytes], *, row_group_size: int | None = None
) -> None:
    """Write `frame` as Parquet the way every file of the dataset is written: zstd, and with
    statistics, by which readers skip the row groups a filter excludes."""
    frame.write_parquet(target, compression="zstd", statistics=True, row_group_size=row_group_size)


def write_part(
    data_dir: Path,
    market: Market,
    interval: Interval,
    bucket: str,
    rows: Rows,
    kind: Kind = Kind.TRADE,
) -> Path:
    """Publish `rows` (all in the bucket labelled `bucket`) of the kind `kind` as one part file;
    returns its path.

    Raises OSError when the disk refuses (the staged file is removed, nothing is published) and
    any other exception when the rows cannot be encoded (no file was opened).
    """
    payload = io.BytesIO()  # in memory: a failure here is the rows', never the disk's
    encode(as_frame(rows, kind).sort("symbol", "open_time"), payload)
    name = layout.part_name(next(_seq))
    final = layout.partition_dir(Path(data_dir), market, interval, bucket, kind) / name
    with layout.staged(data_dir, name) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload.getbuffer())
        with layout.publishing(data_dir):
            layout.publish(tmp, final)
    return final


def write_parts(
    data_dir: Path,
    market: Market,
    interval: Interval,
    frame: pl.DataFrame,
    kind: Kind = Kind.TRADE,
) -> list[Path]:
    """Publish `frame` (the dataset's columns, any buckets) as one part per bucket, oldest first;
    returns the files written.

    Rows whose open time no bucket can hold go to the dead-letter file instead: they never reach
    a path, nor Polars' date formatting (which panics on them).
    """
    if frame.is_empty():
        return []
    frame = as_frame(frame, kind)
    epoch = pl.col("open_time").dt.epoch("ms")
    placeable = epoch.is_between(0, layout.END_MS - 1)
    homeless = frame.filter(~placeable.fill_null(False))
    if not homeless.is_empty():
        # As the sink keeps them: times as epoch ms, which JSON holds whatever their value.
        as_ms = homeless.with_columns(
            open_time=epoch, close_time=pl.col("close_time").dt.epoch("ms")
        )
        path = set_aside(data_dir, market, interval, None, as_ms.iter_rows(), NO_BUCKET, kind)
        log.warning(
            "%d rows of %s %s have no date bucket; kept in %s",
            homeless.height,
            partition_label(market, kind),
            interval,
            path,
        )
    fmt = _BUCKET_FORMAT[layout.BUCKET_OF_INTERVAL[interval]]
    labelled = frame.filter(placeable).with_columns(_bucket=pl.col("open_time").dt.strftime(fmt))
    return [
        write_part(data_dir, market, interval, str(bucket), part.drop("_bucket"), kind)
        for (bucket,), part in sorted(labelled.partition_by("_bucket", as_dict=True).items())
    ]


def set_aside(
    data_dir: Path,
    market: Market,
    interval: Interval,
    bucket: str | None,
    rows: Iterable[Row],
    reason: str,
    kind: Kind = Kind.TRADE,
) -> Path:
    """Append rows that cannot be stored (tuples in the order of PARQUET_SCHEMA) to the
    dead-letter file, with their partition (`date=?` when they have no bucket) and `reason`;
    returns the file. Raises OSError when the disk refuses."""
    label = partition_label(market, kind)
    where = f"market={label}/interval={interval.path_label}/date={bucket or '?'}"
    return layout.write_dead_letters(Path(data_dir), where, rows, reason)
