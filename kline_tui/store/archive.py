"""`kline-tui import`: data.binance.vision kline archives into the dataset.

An archive is a zip holding one CSV (or the CSV itself) with the columns open_time, open, high,
low, close, volume, close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume,
ignore. Spot files have no header row, futures files have one; spot timestamps are in
microseconds from 2025-01-01 on, so each timestamp above 10^14 (year 5138 in ms, 1973 in us) is
read as microseconds. Market, kind, symbol and interval come from the archive's path,

    data/spot|futures/um|futures/cm/daily|monthly/<folder>/<KEY>/<interval>/<KEY>-<interval>-<date>.zip

where the folder names the kind (docs/binance-kline-kinds.md, section 3): `klines` (trade),
`markPriceKlines` (mark), `indexPriceKlines` (index, keyed by pair) and `premiumIndexKlines`
(premium), the last three on futures only; or from its file name (`BTCUSDT-1m-2025-01-01.zip`,
the month as `1mo`), or from flags for what the path does not say (`--kind`; trade when nothing
says); a flag that contradicts the path is an error. Binance publishes no continuous contract
archives, so those kinds are refused. Mark, index and premium files have the same 12 columns,
with or without a header row; their volume, taker and count columns ("ignore", or the index's
"number of basic data", which is not a trade count) are stored as NULL. A `<archive>.CHECKSUM` file
beside it (sha256, as published) is verified first. Every archive's name and checksum are checked
before anything is written, so a damaged download stops the import with the dataset untouched.
Candles the dataset already holds are skipped, so importing again (or a daily file after the
monthly one of its month) adds nothing twice; imported rows carry source "archive".
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kline_tui.model import WEEK_ORIGIN_MS, Interval, Kind, Market, SpecError, StreamKey
from kline_tui.store.dataset import Dataset, as_dataset
from kline_tui.store.parts import NO_VOLUME_COLUMNS
from kline_tui.store.schema import PARQUET_SCHEMA

__all__ = [
    "Archive",
    "ArchiveError",
    "ImportResult",
    "find_archives",
    "identify",
    "import_archive",
    "import_archives",
    "read_archive",
    "verify_checksum",
]

ARCHIVE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
_MICROS_ABOVE = 10**14

_MARKET_DIRS = {
    ("spot",): Market.SPOT,
    ("futures", "um"): Market.USDM,
    ("futures", "cm"): Market.COINM,
}
# data.binance.vision's folder of each kind's archives (continuous contract klines have none).
ARCHIVE_FOLDERS: dict[str, Kind] = {
    "klines": Kind.TRADE,
    "markPriceKlines": Kind.MARK,
    "indexPriceKlines": Kind.INDEX,
    "premiumIndexKlines": Kind.PREMIUM,
}
_NAME_RE = re.compile(
    r"^(?P<symbol>[A-Z0-9_]+)-(?P<interval>1mo|\d+[smhdwM])-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?:zip|csv)$"
)


class ArchiveError(Exception):
    """An archive that cannot be imported; the message names the file and says why."""


@dataclass(frozen=True, slots=True)
class Archive:
    """One archive file and the stream its rows belong to."""

    path: Path
    key: StreamKey


@dataclass(slots=True)
class ImportResult:
    """What importing one archive did."""

    archive: Archive
    rows: int  # rows in the archive
    written: int  # rows new to the dataset


def find_archives(paths: Iterable[Path]) -> list[Path]:
    """The .zip and .csv files named, or found inside the folders named, in a stable order."""
    found: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            inside = sorted(
                p for p in path.rglob("*") if p.suffix in (".zip", ".csv") and p.is_file()
            )
            if not inside:
                raise ArchiveError(f"{path}: no .zip or .csv archive inside")
            found.extend(inside)
        elif path.is_file():
            if path.suffix not in (".zip", ".csv"):
                raise ArchiveError(f"{path}: not a .zip or .csv archive")
            found.append(path)
        else:
            raise ArchiveError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


def identify(
    path: Path,
    market: Market | None = None,
    symbol: str | None = None,
    interval: Interval | None = None,
    kind: Kind | str | None = None,
) -> Archive:
    """The stream of an archive, from its path and name, completed by the flags given (the
    kind is trade when neither the path nor `kind` says)."""
    try:
        from_path = _path_says(path)
        given = {
            "market": None if market is None else Market.parse(str(market)),
            "symbol": None if symbol is None else symbol.strip().upper(),
            "interval": None if interval is None else Interval.parse(str(interval)),
            "kind": None if kind is None else Kind.parse(str(kind)),
        }
        values = _reconciled(path, from_path, given)
        key = StreamKey.of(
            str(values["market"]),
            str(values["symbol"]),
            str(values["interval"]),
            str(values["kind"]),
        )
        _check_key(path, key)
    except SpecError as exc:
        raise ArchiveError(f"{path}: {exc}") from None
    return Archive(path, key)


def _check_key(path: Path, key: StreamKey) -> None:
    """Raise ArchiveError for a stream no archive of Binance's holds."""
    if key.kind.is_continuous:
        raise ArchiveError(
            f"{path}: Binance publishes no {key.kind.value} (continuous contract) kline "
            "archives; fetch them with 'kline-tui backfill'"
        )
    if key.market is Market.USDM:
        return
    if key.kind.keyed_by_pair:  # COIN-M index archives: the pair (BTCUSD), never a contract
        if "_" in key.symbol:
            raise ArchiveError(
                f"{path}: {key.kind.value} archives are keyed by pair (BTCUSD), not "
                f"{key.symbol}; check --symbol or --kind"
            )
        return
    # COIN-M contracts are always PAIR_SUFFIX (BTCUSD_PERP) and spot symbols never hold `_`:
    # a mismatch means the wrong --market.
    if (key.market is Market.COINM) != ("_" in key.symbol):
        hint = " (COIN-M symbols look like BTCUSD_PERP)" if key.market is Market.COINM else ""
        raise ArchiveError(
            f"{path}: {key.symbol} is not a {key.market.value} symbol{hint}; check --market"
        )


def _path_says(path: Path) -> dict[str, object]:
    """The market, kind, symbol and interval an archive's name and folders tell, as far as they
    do. Raises SpecError for an interval spelled wrong."""
    parts = path.parts
    from_path: dict[str, object] = {}
    m = _NAME_RE.match(path.name)
    if m:
        from_path["symbol"] = m["symbol"]
        from_path["interval"] = m["interval"]
    # The last folder naming a kind's archives (a user's own folders above it may hold any name).
    found = [j for j, part in enumerate(parts[:-1]) if part in ARCHIVE_FOLDERS]
    if found:
        i = found[-1]
        before = parts[max(0, i - 3) : i - 1]  # ("spot",) or ("futures", "um") before daily|monthly
        for dirs, mk in _MARKET_DIRS.items():
            if tuple(before[-len(dirs) :]) == dirs:
                from_path["market"] = mk
        # A user's own `klines` folder says nothing of the kind; Binance's layout, or a kind's
        # own folder name, does.
        if "market" in from_path or parts[i] != "klines":
            from_path["kind"] = ARCHIVE_FOLDERS[parts[i]]
        if len(parts) > i + 2 and "symbol" not in from_path:
            from_path["symbol"], from_path["interval"] = parts[i + 1], parts[i + 2]
    if "interval" in from_path:
        from_path["interval"] = Interval.parse(str(from_path["interval"]))
    if "symbol" in from_path:
        from_path["symbol"] = str(from_path["symbol"]).upper()
    return from_path


def _reconciled(
    path: Path, from_path: Mapping[str, object], given: Mapping[str, object]
) -> dict[str, object]:
    """Each of market, kind, symbol and interval from the flag or the path (the kind trade when
    neither tells); raises ArchiveError when they disagree or neither tells."""
    values = {}
    for name, flag in given.items():
        known = from_path.get(name)
        if flag is not None and known is not None and flag != known:
            raise ArchiveError(
                f"{path}: its path says {name} {known}, but --{name} {flag} was given"
            )
        values[name] = flag if flag is not None else known
        if values[name] is None and name == "kind":
            values[name] = Kind.TRADE
        if values[name] is None:
            raise ArchiveError(f"{path}: cannot tell the {name} from the path; pass --{name}")
    return values


def verify_checksum(path: Path) -> bool | None:
    """True when `<path>.CHECKSUM` matches, None when there is none; raises ArchiveError when
    it does not."""
    checksum = path.with_name(path.name + ".CHECKSUM")
    if not checksum.is_file():
        return None
    try:
        text = checksum.read_text(encoding="ascii", errors="replace").split()
    except OSError as exc:
        raise ArchiveError(f"{checksum}: cannot read it: {exc.strerror or exc}") from None
    if not text or not re.fullmatch(r"[0-9a-fA-F]{64}", text[0]):
        raise ArchiveError(f"{checksum}: not a sha256 checksum file")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != text[0].lower():
        raise ArchiveError(
            f"{path}: checksum mismatch (the file is damaged or incomplete); download it again"
        )
    return True


def _csv_bytes(path: Path) -> bytes:
    if path.suffix == ".csv":
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            if len(members) != 1:
                raise ArchiveError(f"{path}: expected one CSV inside, found {len(members)}")
            return zf.read(members[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ArchiveError(f"{path}: not a readable zip: {exc}") from None


def read_archive(archive: Archive) -> pl.DataFrame:
    """The archive's rows in the dataset's schema (source "archive"), sorted, each candle once."""
    frame = _parsed(archive, _csv_bytes(archive.path))
    if frame.is_empty():
        return frame
    _check_aligned(archive, frame)
    return frame.unique(["open_time"], keep="first").sort("open_time")


def _parsed(archive: Archive, data: bytes) -> pl.DataFrame:
    """The CSV `data` as rows of the dataset's schema; raises ArchiveError naming the file."""
    first_field = data.split(b",", 1)[0].strip().lstrip(b"\xef\xbb\xbf")
    has_header = bool(first_field) and not first_field.isdigit()
    try:
        raw = pl.read_csv(
            io.BytesIO(data),
            has_header=has_header,
            new_columns=list(ARCHIVE_COLUMNS),
            infer_schema=False,
            truncate_ragged_lines=False,
        )
        if raw.width != len(ARCHIVE_COLUMNS):
            raise ArchiveError(f"{archive.path}: {raw.width} columns, a kline archive has 12")
        columns = _dataset_columns(archive.key.symbol, archive.key.kind)
        return raw.select(**columns).select(list(PARQUET_SCHEMA))
    except ArchiveError:
        raise
    except (pl.exceptions.PolarsError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArchiveError(f"{archive.path}: not a kline archive CSV ({reason})") from None


def _dataset_columns(symbol: str, kind: Kind = Kind.TRADE) -> dict[str, pl.Expr]:
    """The dataset's columns from an archive's (all read as text); a kind without volume gets
    NULL volume fields, whatever its file holds there (never parsed: "ignore" columns)."""
    times = {c: pl.col(c).cast(pl.Int64()) for c in ("open_time", "close_time")}
    floats = (
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "taker_buy_volume",
        "taker_buy_quote_volume",
    )
    nulls = {} if kind.has_volume else {c: pl.lit(None) for c in NO_VOLUME_COLUMNS}
    return {
        "symbol": pl.lit(symbol),
        # Spot archives count microseconds from 2025 on: a value this large is one.
        **{
            c: pl.when(t >= _MICROS_ABOVE).then(t // 1000).otherwise(t).cast(PARQUET_SCHEMA[c])
            for c, t in times.items()
        },
        **{c: pl.col(c).cast(pl.Float64()) for c in floats},
        "trades": pl.col("count").cast(pl.Int64()),
        "source": pl.lit("archive"),
        **{c: e.cast(PARQUET_SCHEMA[c]) for c, e in nulls.items()},
    }


def _check_aligned(archive: Archive, frame: pl.DataFrame) -> None:
    """Raise ArchiveError when rows do not open on the interval's boundaries (a wrong interval)."""
    step = archive.key.interval.ms
    if step is None:
        return
    epoch = pl.col("open_time").dt.epoch("ms")
    origin = WEEK_ORIGIN_MS if archive.key.interval is Interval.W1 else 0
    misaligned = frame.filter((epoch - origin) % step != 0).height
    if misaligned:
        raise ArchiveError(
            f"{archive.path}: {misaligned} rows do not open on a {archive.key.interval.value} "
            "boundary; is the interval right?"
        )


def import_archive(
    data_dir: Dataset | Path, archive: Archive, frame: pl.DataFrame | None = None
) -> ImportResult:
    """Write the archive's candles that the dataset lacks."""
    dataset = as_dataset(data_dir)
    frame = read_archive(archive) if frame is None else frame
    if frame.is_empty():
        return ImportResult(archive, 0, 0)
    key = archive.key
    ms = pl.col("open_time").dt.epoch("ms")
    first, last = frame.select(first=ms.min(), last=ms.max()).row(0)
    held = dataset.open_times(key.market, key.symbol, key.interval, first, last, key.kind)
    new = frame.filter(~ms.is_in(held)) if held else frame
    dataset.write_frame(key.market, key.interval, new, key.kind)
    return ImportResult(archive, frame.height, new.height)


def import_archives(
    data_dir: Dataset | Path,
    paths: Iterable[Path],
    market: Market | None = None,
    symbol: str | None = None,
    interval: Interval | None = None,
    on_done: Callable[[ImportResult], None] | None = None,
    kind: Kind | None = None,
) -> list[ImportResult]:
    """Check every archive's name and checksum, then import them one by one.

    A name or checksum problem stops the import before anything is written; a file whose
    contents turn out malformed stops it there (the archives before it are imported: running
    the import again skips them).
    """
    dataset = as_dataset(data_dir)
    archives = [identify(p, market, symbol, interval, kind) for p in find_archives(paths)]
    for archive in archives:
        verify_checksum(archive.path)
    results = []
    for archive in archives:
        result = import_archive(dataset, archive)
        results.append(result)
        if on_done:
            on_done(result)
    return results
