"""The article frame: schema, stable ids, symbol tagging and de-duplication.

Every news source (RSS, CryptoPanic, NewsAPI, the offline simulator) returns this one frame, which
is stored as the market store's ``articles`` table.

Time convention
---------------
``published_at`` is what the feed *claims* (it may be missing, late, or even in the future);
``first_seen_at`` is when *our* harvester first saw the article. Only ``first_seen_at`` may be used
for as-of joins with market data: an article is knowable at ``first_seen_at`` and not before.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

ARTICLE_COLUMNS = [
    "article_id",
    "url",
    "title",
    "summary",
    "source",
    "published_at",
    "first_seen_at",
    "symbols",
    "simulated",
    "sentiment",
    "scorer",
]
TEXT_COLUMNS = ["article_id", "url", "title", "summary", "source", "symbols", "scorer"]
TIME_COLUMNS = ["published_at", "first_seen_at"]
TIME_DTYPE = "datetime64[ns, UTC]"

DEFAULT_SYMBOLS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")

# Aliases per trading symbol. ALL-CAPS aliases are tickers and match case-sensitively (so "sol",
# "link" or "dot" in running text do not match); other aliases are names and match case-insensitively.
# Matching is on whole words, so "Ether" never matches inside "whether" or "Ethereum".
DEFAULT_SYMBOL_ALIASES: dict[str, tuple[str, ...]] = {
    "BTCUSDT": ("BTC", "XBT", "Bitcoin"),
    "ETHUSDT": ("ETH", "Ether", "Ethereum"),
    "SOLUSDT": ("SOL", "Solana"),
    "BNBUSDT": ("BNB", "Binance Coin"),
    "XRPUSDT": ("XRP",),
    "ADAUSDT": ("ADA", "Cardano"),
    "DOGEUSDT": ("DOGE", "Dogecoin"),
    "AVAXUSDT": ("AVAX",),
    "LINKUSDT": ("LINK", "Chainlink"),
    "DOTUSDT": ("DOT", "Polkadot"),
    "LTCUSDT": ("LTC", "Litecoin"),
}
_QUOTE_SUFFIXES = ("USDT", "USDC", "BUSD", "FDUSD", "USD")


def empty_articles() -> pd.DataFrame:
    """A zero-row article frame with the canonical dtypes."""
    return articles_frame([])


def articles_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a canonical article frame from dict records (missing optional fields get defaults).

    ``article_id`` is derived when absent; ``sentiment`` defaults to NaN, ``scorer`` to missing and
    ``simulated`` to False. Raises ``ValueError`` naming the record if ``first_seen_at`` is missing.
    """
    rows = []
    for i, record in enumerate(records):
        if record.get("first_seen_at") is None:
            raise ValueError(
                f"article record {i} ({record.get('title')!r}): field 'first_seen_at' is required"
            )
        row = {column: record.get(column) for column in ARTICLE_COLUMNS}
        if not row["article_id"]:
            row["article_id"] = article_id(row["url"], row["source"], row["title"])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=ARTICLE_COLUMNS)
    return coerce_articles(frame)


def coerce_articles(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the article columns in canonical dtypes (UTC ns times)."""
    missing = [c for c in ARTICLE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"article frame is missing column(s) {missing}")
    out = frame[ARTICLE_COLUMNS].copy()
    for column in TIME_COLUMNS:
        naive = pd.api.types.is_datetime64_dtype(out[column]) and not isinstance(
            out[column].dtype, pd.DatetimeTZDtype
        )
        if naive and out[column].notna().any():
            raise ValueError(
                f"article frame: field {column!r} must be timezone-aware UTC, got {out[column].dtype}"
            )
        out[column] = pd.to_datetime(out[column], utc=True, errors="coerce").astype(TIME_DTYPE)
    for column in TEXT_COLUMNS:
        out[column] = out[column].astype("str")
    for column in ("title", "summary", "source", "symbols"):
        out[column] = out[column].fillna("")
    out["simulated"] = out["simulated"].fillna(False).astype(bool)
    out["sentiment"] = pd.to_numeric(out["sentiment"], errors="coerce").astype("float64")
    if out["first_seen_at"].isna().any():
        row = int(np.flatnonzero(out["first_seen_at"].isna().to_numpy())[0])
        raise ValueError(f"article row {row}: field 'first_seen_at' is missing or not a timestamp")
    return out.reset_index(drop=True)


def utc_timestamp(value: Any, field: str = "now") -> pd.Timestamp:
    """``value`` as a UTC ``pd.Timestamp``; naive or unparseable values raise ``ValueError``."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: not a timestamp: {value!r}") from exc
    if stamp is pd.NaT or stamp.tzinfo is None:
        raise ValueError(f"{field}: must be a timezone-aware timestamp, got {value!r}")
    return stamp.tz_convert("UTC")


def normalize_url(url: str) -> str:
    """Canonical form of an article URL: lowercase scheme and host, no ``utm_*`` parameters, no fragment."""
    parts = urlsplit(url.strip())
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not k.lower().startswith("utm_")
    ]
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, urlencode(query), ""))


def article_id(url: str | None, source: str | None, title: str | None) -> str:
    """sha256 hex of the normalized URL, or of ``source`` + ``title`` when there is no URL."""
    has_url = isinstance(url, str) and bool(url.strip())
    key = normalize_url(url) if has_url else f"{source or ''}\n{title or ''}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def title_hash(title: str | None) -> str:
    """Content hash of a title after case folding and collapsing punctuation/whitespace ("" if empty)."""
    words = re.findall(r"[0-9a-z]+", (title or "").casefold())
    return hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest() if words else ""


def base_asset(symbol: str) -> str:
    """The base asset of a trading symbol, e.g. ``"BTCUSDT" -> "BTC"`` (the symbol itself if no quote suffix)."""
    for suffix in _QUOTE_SUFFIXES:
        if symbol.endswith(suffix) and len(symbol) > len(suffix):
            return symbol[: -len(suffix)]
    return symbol


def _alias_pattern(aliases: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any alias as a whole word; tickers (ALL CAPS) case-sensitive, names not."""
    parts = []
    for alias in sorted(set(aliases), key=len, reverse=True):
        escaped = r"\s+".join(re.escape(word) for word in alias.split())
        parts.append(escaped if alias.isupper() else f"(?i:{escaped})")
    return re.compile(r"(?<![0-9A-Za-z])(?:" + "|".join(parts) + r")(?![0-9A-Za-z])")


class SymbolTagger:
    """Finds which trading symbols a text mentions, via whole-word alias matching."""

    def __init__(self, symbols: Sequence[str], aliases: Mapping[str, Sequence[str]] | None = None):
        alias_map = DEFAULT_SYMBOL_ALIASES if aliases is None else aliases
        self.symbols = tuple(symbols)
        self._patterns = {}
        self._tickers: dict[str, str] = {}
        for symbol in self.symbols:
            names = {symbol, base_asset(symbol), *alias_map.get(symbol, ())}
            self._patterns[symbol] = _alias_pattern(names)
            self._tickers[base_asset(symbol).upper()] = symbol
        self._tickers.update({s.upper(): s for s in self.symbols})

    def tag(self, text: str | None) -> list[str]:
        """Sorted symbols mentioned in ``text``."""
        if not text:
            return []
        return sorted(symbol for symbol, pattern in self._patterns.items() if pattern.search(text))

    def from_codes(self, codes: Iterable[str]) -> list[str]:
        """Sorted symbols for currency codes such as ``["BTC", "eth"]`` (unknown codes are ignored)."""
        return sorted(
            {self._tickers[c.upper()] for c in codes if isinstance(c, str) and c.upper() in self._tickers}
        )


def tag_symbols(
    text: str | None, symbols: Sequence[str], aliases: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """Sorted trading symbols (among ``symbols``) that ``text`` mentions, e.g. ``["BTCUSDT", "ETHUSDT"]``.

    Aliases come from ``aliases`` (default ``DEFAULT_SYMBOL_ALIASES``) plus the symbol and its base
    asset; ALL-CAPS aliases match case-sensitively, names case-insensitively, both as whole words.
    """
    return SymbolTagger(symbols, aliases).tag(text)


def join_symbols(symbols: Iterable[str]) -> str:
    """The stored form of a symbol set: comma-separated and sorted."""
    return ",".join(sorted({s for s in symbols if s}))


def split_symbols(value: str | None) -> list[str]:
    """Inverse of ``join_symbols``."""
    return [s for s in (value or "").split(",") if s] if isinstance(value, str) else []


def dedupe_articles(frame: pd.DataFrame) -> pd.DataFrame:
    """Collapse duplicates, first by ``article_id`` and then by normalized-title content hash.

    Of each duplicate group the row with the earliest ``first_seen_at`` is kept, with the union of the
    group's symbols. Concatenating already-stored articles with a new harvest and de-duplicating keeps
    the original ``first_seen_at`` (a re-seen article is not "new" again).
    """
    out = coerce_articles(frame)
    out = out.sort_values(["first_seen_at", "article_id"], kind="stable").reset_index(drop=True)
    out = _collapse(out, out["article_id"])
    hashes = out["title"].map(title_hash)
    # Empty titles carry no content: give each its own key so they never collapse together.
    keys = hashes.where(hashes != "", "row:" + pd.Series(range(len(out)), index=out.index).astype(str))
    return _collapse(out, keys)


def _collapse(frame: pd.DataFrame, keys: pd.Series) -> pd.DataFrame:
    """Keep the first row per key (frame is sorted by first_seen_at), merging the group's symbols."""
    if frame.empty:
        return frame
    merged = (
        frame["symbols"]
        .groupby(keys.to_numpy(), sort=False)
        .agg(lambda s: join_symbols(",".join(s).split(",")))
    )
    first = ~keys.duplicated().to_numpy()
    out = frame.loc[first].copy()
    out["symbols"] = merged.loc[keys.to_numpy()[first]].to_numpy()
    return out.reset_index(drop=True)
