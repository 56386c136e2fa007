"""GET /api/v1/candles: a stream's recorded candles, a page at a time, for an attached UI's
details view and any other client.

    GET /api/v1/candles?stream=usdm:BTCUSDT:1m[&start=T][&end=T][&limit=N][&order=asc|desc]

At most `limit` (1 to MAX_CANDLES_PAGE, 500 by default) candles of the stream that the dataset
holds opening in [start, end) (epoch ms, or an ISO date or time in UTC, from 2017 to 2100),
oldest first; with `order=desc` the newest of them, still listed oldest first. The reply's
`next` is the cursor of the following page: pass it as `start` (asc) or `end` (desc), the other
parameters unchanged; null when the dataset holds no more. Candles still in the recorder's
buffer are not in the dataset yet: the events socket brings them. A bad parameter answers 400
with one sentence; the dataset is read in a thread (at most CANDLE_READS at once), never in the
recorder's loop.

The server side (`parse_query`, `read_reply`) and the client's check of a reply (`accepted`)
both live here, beside the reply's shape.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

import msgspec
import polars as pl
from msgspec import Meta

from kline_tui.model import EARLIEST_OPEN_MS, LATEST_MS, Kind, SpecError, StreamKey
from kline_tui.safe_text import safe_text
from kline_tui.service.protocol import MAX_SPEC
from kline_tui.store.candle_pages import read_page
from kline_tui.store.dataset import Dataset
from kline_tui.store.read import parse_time

__all__ = [
    "CANDLE_READS",
    "MAX_CANDLES_PAGE",
    "CandlesQuery",
    "CandlesReply",
    "HistoryRow",
    "QueryError",
    "accepted",
    "parse_query",
    "read_reply",
]

log = logging.getLogger(__name__)

MAX_CANDLES_PAGE = 1_500  # candles one reply holds at most
CANDLE_READS = 2  # dataset reads at once, so the sink's writes keep their threads
_PARAMS = frozenset({"stream", "start", "end", "limit", "order"})
_MAX_TIME_TEXT = 40  # characters of an ISO date or time parameter
_MAX_TRADES = 2**53  # more trades than any candle has, and exact as a float

# A recorded candle as the dataset holds it (the dataset's columns after `symbol`): the volume
# fields and trades are null for the kinds that have none (mark, index and premium klines).
HistoryRow = tuple[
    int, int, float, float, float, float, float | None, float | None, float | None, float | None,
    int | None,
]  # fmt: skip


class CandlesReply(msgspec.Struct):
    """A page of recorded candles of `stream`, oldest first, and the next page's cursor."""

    stream: Annotated[str, Meta(max_length=MAX_SPEC)]
    candles: Annotated[list[HistoryRow], Meta(max_length=MAX_CANDLES_PAGE)]
    next: int | None


class QueryError(ValueError):
    """A parameter that cannot be taken; the message is one sentence for a 400."""


@dataclass(frozen=True, slots=True)
class CandlesQuery:
    """GET /api/v1/candles's parameters, each checked and bounded."""

    key: StreamKey
    start_ms: int | None
    end_ms: int | None
    limit: int
    newest_first: bool


def parse_query(query: Mapping[str, str]) -> CandlesQuery:
    """The request's parameters; QueryError saying which one is wrong and how."""
    unknown = sorted(set(query) - _PARAMS)
    if unknown:
        raise QueryError(
            f"unknown parameter {safe_text(unknown[0], 40)!r}: use stream, start, end, limit, order"
        )
    spec = query.get("stream")
    if not spec:
        raise QueryError("stream is required, e.g. stream=usdm:BTCUSDT:1m")
    if len(spec) > MAX_SPEC:
        raise QueryError("that is not a stream spec (too long)")
    try:
        key = StreamKey.parse(spec)
    except SpecError as exc:
        raise QueryError(str(exc)) from None
    start_ms, end_ms = _time(query, "start"), _time(query, "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise QueryError("end must be after start")
    text = query.get("limit", "500")
    # At most four digits before `int` (1500 has four): no leading-zero padding, no huge number.
    if not (
        0 < len(text) <= len(str(MAX_CANDLES_PAGE))
        and text.isascii()
        and text.isdigit()
        and 1 <= int(text) <= MAX_CANDLES_PAGE
    ):
        raise QueryError(f"limit must be a whole number from 1 to {MAX_CANDLES_PAGE}")
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise QueryError("order must be asc or desc")
    return CandlesQuery(key, start_ms, end_ms, int(text), order == "desc")


def _time(query: Mapping[str, str], name: str) -> int | None:
    """A time parameter: epoch ms, or an ISO date or time (UTC), from 2017 to 2100."""
    text = query.get(name)
    if text is None:
        return None
    text = text.strip()
    ms: int | None = None
    # Bounded before parsing: epoch ms up to 2100 has 13 digits, an ISO time fewer than 40
    # characters; anything longer is refused whole, never cut to something that parses.
    if text.isascii() and text.isdigit():
        ms = int(text) if len(text) <= len(str(LATEST_MS)) else None
    elif len(text) <= _MAX_TIME_TEXT:
        try:
            ms = parse_time(text)
        except (ValueError, OverflowError):
            ms = None
    if ms is None or not EARLIEST_OPEN_MS <= ms <= LATEST_MS:
        raise QueryError(
            f"{name} must be epoch milliseconds or a UTC date/time such as 2026-11-25T16:30, "
            "from 2017 to 2100"
        )
    return ms


async def read_reply(
    dataset: Dataset, query: CandlesQuery, reads: asyncio.Semaphore
) -> CandlesReply:
    """The page `query` asks for, read in a thread once one of `reads` is free. Raises OSError
    when the dataset cannot be read now (a store's refusal, a Polars error)."""
    async with reads:
        try:
            page = await asyncio.to_thread(
                read_page,
                dataset,
                query.key,
                start_ms=query.start_ms,
                end_ms=query.end_ms,
                limit=query.limit,
                newest_first=query.newest_first,
            )
        except pl.exceptions.PolarsError as exc:
            raise OSError(str(exc)) from None
    return CandlesReply(str(query.key), list(page.frame.iter_rows()), page.next_ms)


def accepted(
    reply: CandlesReply, kind: Kind, start_ms: int | None, end_ms: int | None
) -> tuple[list[HistoryRow], int | None]:
    """What a client keeps of a reply to its query [start_ms, end_ms): the rows that can be real
    and open in that range, each open time once, oldest first; and the cursor. The others are
    counted in a warning and dropped, the rest of the page kept. Raises
    ValueError for a cursor outside the range (a server that would keep the client paging)."""
    lo = start_ms if start_ms is not None else EARLIEST_OPEN_MS
    hi = end_ms if end_ms is not None else LATEST_MS
    if reply.next is not None and not lo <= reply.next <= hi:
        raise ValueError("its cursor is out of the range asked for")
    kept: dict[int, HistoryRow] = {}
    dropped = 0
    for row in reply.candles:
        if lo <= row[0] < hi and _is_sane(row, kind):
            kept.setdefault(row[0], row)
        else:
            dropped += 1
    if dropped:
        log.warning(
            "dropped %d candle(s) of %s in the recorder's reply that cannot be real",
            dropped,
            safe_text(reply.stream, 60),
        )
    return [kept[t] for t in sorted(kept)], reply.next


def _is_sane(row: HistoryRow, kind: Kind) -> bool:
    """Finite, low <= open/close <= high, no negative volume, a close after the open and both
    from 2017 to 2100, trades from 0 to 2**53; prices below zero only for the premium index.
    Every int is bounded here, so the rows kept fit the Int64 columns of a frame."""
    open_time, close_time, o, h, lo, c = row[:6]
    trades = row[10]
    volumes = [v for v in row[6:10] if v is not None]
    return (
        EARLIEST_OPEN_MS <= open_time < close_time <= LATEST_MS
        and (trades is None or 0 <= trades <= _MAX_TRADES)
        and lo <= o <= h
        and lo <= c <= h
        and (lo >= 0.0 or kind is Kind.PREMIUM)
        and math.isfinite(lo + h)
        and all(v >= 0 for v in volumes)
        and math.isfinite(sum(volumes))
    )
