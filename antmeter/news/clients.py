"""News harvesters: RSS/Atom feeds, CryptoPanic and NewsAPI, each returning the article frame.

Tokens are read only from environment variables (``CRYPTOPANIC_TOKEN``, ``NEWSAPI_KEY``) by
``clients_from_env``; a missing token disables that source with one log line. Error messages never
contain tokens. ``first_seen_at`` of every harvested article is the injected ``now``.
"""

from __future__ import annotations

import calendar
import html
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import feedparser
import httpx
import pandas as pd

from antmeter.market.redaction import get_logger, redact, register_secret
from antmeter.news.articles import (
    DEFAULT_SYMBOL_ALIASES,
    DEFAULT_SYMBOLS,
    SymbolTagger,
    articles_frame,
    base_asset,
    dedupe_articles,
    empty_articles,
    join_symbols,
    tag_symbols,
    utc_timestamp,
)

__all__ = [
    "DEFAULT_RSS_FEEDS",
    "CryptoPanicClient",
    "HarvestResult",
    "NewsApiClient",
    "NewsConfig",
    "NewsSource",
    "NewsSourceError",
    "RssClient",
    "clients_from_env",
    "dedupe_articles",
    "harvest_news",
    "tag_symbols",
]

log = get_logger(__name__)

DEFAULT_RSS_FEEDS: tuple[str, ...] = (
    "https://www.coindesk.com/arc/outboundfeeds/rss/",
    "https://cointelegraph.com/rss",
    "https://decrypt.co/feed",
    "https://www.theblock.co/rss.xml",
    "https://bitcoinmagazine.com/.rss/full/",
)
USER_AGENT = "antmeter-news/0.1 (+https://github.com/antmeter)"
_BENIGN_BOZO = (feedparser.CharacterEncodingOverride,)
_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")


class NewsSourceError(RuntimeError):
    """A news source that could not be harvested (HTTP error, refused token, malformed payload)."""


class NewsSource(Protocol):
    """Anything that harvests articles: ``name`` for logs, ``fetch(now)`` returning the article frame."""

    name: str

    def fetch(self, now: pd.Timestamp) -> pd.DataFrame: ...


@dataclass(frozen=True)
class NewsConfig:
    """Settings for the harvesters (no secrets here: tokens come only from the environment)."""

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    aliases: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_SYMBOL_ALIASES))
    rss_feeds: tuple[str, ...] = DEFAULT_RSS_FEEDS
    timeout_s: float = 10.0
    cryptopanic_base_url: str = "https://cryptopanic.com/api/developer/v2"
    cryptopanic_max_pages: int = 3
    newsapi_base_url: str = "https://newsapi.org/v2"
    newsapi_query: str = "bitcoin OR ethereum OR solana OR crypto"


def clean_text(value: Any) -> str:
    """Plain text from a feed field: HTML tags removed, entities unescaped, whitespace collapsed."""
    if not isinstance(value, str):
        return ""
    return _SPACE_RE.sub(" ", html.unescape(_TAG_RE.sub(" ", value))).strip()


def _parse_time(value: Any) -> pd.Timestamp:
    """A UTC timestamp from an ISO string or ``time.struct_time`` (UTC); NaT when unparseable."""
    if isinstance(value, time.struct_time):
        return pd.Timestamp(calendar.timegm(value), unit="s", tz="UTC")
    if not isinstance(value, str) or not value.strip():
        return pd.NaT
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return pd.NaT
    if stamp is pd.NaT:
        return pd.NaT
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _redact(text: str, secret: str | None) -> str:
    register_secret(secret)
    return redact(text)


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class _HttpSource:
    """Shared plumbing: an owned or injected ``httpx.Client`` and the symbol tagger."""

    name = "news"

    def __init__(
        self,
        http: httpx.Client | None,
        timeout_s: float,
        symbols: Sequence[str],
        aliases: Mapping[str, Sequence[str]] | None,
    ):
        self.timeout_s = timeout_s
        self._owns_http = http is None
        self._http = http or httpx.Client(
            timeout=timeout_s, headers={"User-Agent": USER_AGENT}, follow_redirects=True
        )
        self._tagger = SymbolTagger(symbols, aliases)

    def close(self) -> None:
        """Close the HTTP client if this source created it (an injected client is left to its owner)."""
        if self._owns_http:
            self._http.close()

    def _symbols_for(self, *texts: str, codes: Sequence[str] = ()) -> str:
        found = set(self._tagger.from_codes(codes))
        for text in texts:
            found.update(self._tagger.tag(text))
        return join_symbols(found)


class RssClient(_HttpSource):
    """Harvests RSS 2.0 / Atom feeds; a feed that fails is logged, recorded in ``errors`` and skipped."""

    name = "rss"

    def __init__(
        self,
        feeds: Sequence[str] = DEFAULT_RSS_FEEDS,
        http: httpx.Client | None = None,
        timeout_s: float = 10.0,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ):
        super().__init__(http, timeout_s, symbols, aliases)
        self.feeds = tuple(feeds)
        self.errors: dict[str, str] = {}

    def fetch(self, now: pd.Timestamp) -> pd.DataFrame:
        """Articles from every feed that could be fetched and parsed, first seen at ``now``."""
        now = utc_timestamp(now)
        self.errors = {}
        records: list[dict[str, Any]] = []
        for feed_url in self.feeds:
            try:
                records.extend(self._fetch_feed(feed_url, now))
            except NewsSourceError as exc:
                self.errors[feed_url] = str(exc)
                log.warning("RSS feed skipped: %s", exc)
        return dedupe_articles(articles_frame(records)) if records else empty_articles()

    def _fetch_feed(self, feed_url: str, now: pd.Timestamp) -> list[dict[str, Any]]:
        try:
            response = self._http.get(feed_url, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise NewsSourceError(f"{feed_url}: request failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise NewsSourceError(f"{feed_url}: HTTP {response.status_code}")
        parsed = feedparser.parse(response.content)
        version = parsed.get("version", "")
        bozo = parsed.get("bozo_exception")
        if bozo is not None and not isinstance(bozo, _BENIGN_BOZO):
            raise NewsSourceError(f"{feed_url}: unparseable feed ({type(bozo).__name__}: {bozo})")
        if not version:
            raise NewsSourceError(f"{feed_url}: payload is not an RSS or Atom feed")
        source = clean_text(parsed.feed.get("title")) or urlsplit(feed_url).netloc
        records = []
        for entry in parsed.entries:
            title = clean_text(entry.get("title"))
            summary = clean_text(entry.get("summary"))
            url = entry.get("link") or None
            if not title and not url:
                continue
            published = entry.get("published_parsed") or entry.get("updated_parsed")
            records.append(
                {
                    "url": url,
                    "title": title,
                    "summary": summary,
                    "source": source,
                    "published_at": _parse_time(published),
                    "first_seen_at": now,
                    "symbols": self._symbols_for(title, summary),
                }
            )
        log.info("RSS feed %s: %d entries (%s)", feed_url, len(records), version)
        return records


class CryptoPanicClient(_HttpSource):
    """CryptoPanic developer API v2 ``/posts/``, following ``next`` links for at most ``max_pages``.

    401/403 raise ``NewsSourceError`` with the API's ``info`` text; 429 is retried after
    ``Retry-After`` (or exponential back-off) at most ``max_retries`` times.
    """

    name = "cryptopanic"

    def __init__(
        self,
        token: str,
        base_url: str = "https://cryptopanic.com/api/developer/v2",
        http: httpx.Client | None = None,
        timeout_s: float = 10.0,
        currencies: Sequence[str] | None = None,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        aliases: Mapping[str, Sequence[str]] | None = None,
        max_pages: int = 3,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not token:
            raise ValueError("CryptoPanicClient: token is empty (set CRYPTOPANIC_TOKEN)")
        if max_pages < 1:
            raise ValueError(f"CryptoPanicClient: max_pages must be >= 1, got {max_pages}")
        super().__init__(http, timeout_s, symbols, aliases)
        register_secret(token)  # CryptoPanic takes it only as the auth_token query parameter: mask it in logs
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.currencies = tuple(currencies) if currencies else tuple(base_asset(s) for s in symbols)
        self.max_pages, self.max_retries = max_pages, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._sleep = sleep

    def fetch(self, now: pd.Timestamp) -> pd.DataFrame:
        """All posts on the first ``max_pages`` pages, first seen at ``now``."""
        now = utc_timestamp(now)
        params: dict[str, str] | None = {
            "auth_token": self._token,
            "currencies": ",".join(self.currencies),
            "public": "true",
        }
        url: str | None = f"{self.base_url}/posts/"
        records: list[dict[str, Any]] = []
        for page in range(1, self.max_pages + 1):
            payload = self._get_page(url, params, page)
            results = payload.get("results")
            if not isinstance(results, list):
                raise NewsSourceError(f"CryptoPanic page {page}: response has no 'results' list")
            records.extend(self._record(post, now) for post in results if isinstance(post, dict))
            url, params = payload.get("next"), None
            if not url:
                break
            if not self._same_origin(url):
                raise NewsSourceError(
                    f"CryptoPanic page {page}: 'next' link leaves {self.base_url}; not followed"
                )
        log.info("CryptoPanic: %d posts", len(records))
        return dedupe_articles(articles_frame(records)) if records else empty_articles()

    def _same_origin(self, url: str) -> bool:
        mine, theirs = urlsplit(self.base_url), urlsplit(url)
        return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)

    def _get_page(self, url: str, params: dict[str, str] | None, page: int) -> dict[str, Any]:
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.get(url, params=params, timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                message = _redact(f"{type(exc).__name__}: {exc}", self._token)
                raise NewsSourceError(f"CryptoPanic page {page}: request failed: {message}") from exc
            if response.status_code == 429 and attempt < self.max_retries:
                delay = self._retry_delay(response, attempt)
                log.warning("CryptoPanic rate limited (HTTP 429); retrying in %.1f s", delay)
                self._sleep(delay)
                continue
            return self._check(response, page)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        try:
            delay = float(response.headers.get("Retry-After", ""))
        except ValueError:
            delay = self.backoff_s * 2**attempt
        return min(max(delay, 0.0), self.max_backoff_s)

    def _check(self, response: httpx.Response, page: int) -> dict[str, Any]:
        body = _json_body(response)
        info = (body.get("info") or body.get("detail")) if isinstance(body, dict) else None
        if response.status_code in (401, 403):
            raise NewsSourceError(
                f"CryptoPanic refused the request (HTTP {response.status_code}): {info or 'no detail'}; "
                "check CRYPTOPANIC_TOKEN and the plan's API access"
            )
        if response.status_code != 200:
            raise NewsSourceError(
                f"CryptoPanic page {page}: HTTP {response.status_code}: {info or 'no detail'}"
            )
        if not isinstance(body, dict):
            raise NewsSourceError(
                f"CryptoPanic page {page}: malformed JSON response ({response.text[:80]!r})"
            )
        return body

    def _record(self, post: dict[str, Any], now: pd.Timestamp) -> dict[str, Any]:
        source = post.get("source") if isinstance(post.get("source"), dict) else {}
        instruments = post.get("currencies") or post.get("instruments") or []
        codes = [item.get("code") for item in instruments if isinstance(item, dict)]
        title = clean_text(post.get("title"))
        summary = clean_text(post.get("description"))
        return {
            "url": post.get("original_url") or post.get("url") or None,
            "title": title,
            "summary": summary,
            "source": clean_text(source.get("title"))
            or source.get("domain")
            or post.get("domain")
            or "cryptopanic",
            "published_at": _parse_time(post.get("published_at")),
            "first_seen_at": now,
            "symbols": self._symbols_for(title, summary, codes=codes),
        }


class NewsApiClient(_HttpSource):
    """NewsAPI ``/everything`` (one page of up to ``page_size`` newest English articles)."""

    name = "newsapi"

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://newsapi.org/v2",
        http: httpx.Client | None = None,
        timeout_s: float = 10.0,
        query: str = "bitcoin OR ethereum OR solana OR crypto",
        page_size: int = 100,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ):
        if not api_key:
            raise ValueError("NewsApiClient: api_key is empty (set NEWSAPI_KEY)")
        super().__init__(http, timeout_s, symbols, aliases)
        register_secret(api_key)
        self._api_key = api_key  # sent in the X-Api-Key header, never in the URL
        self.base_url = base_url.rstrip("/")
        self.query, self.page_size = query, page_size

    def fetch(self, now: pd.Timestamp) -> pd.DataFrame:
        """The newest articles matching ``query``, first seen at ``now``."""
        now = utc_timestamp(now)
        params = {"q": self.query, "language": "en", "sortBy": "publishedAt", "pageSize": str(self.page_size)}
        try:
            response = self._http.get(
                f"{self.base_url}/everything",
                params=params,
                headers={"X-Api-Key": self._api_key},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            message = _redact(f"{type(exc).__name__}: {exc}", self._api_key)
            raise NewsSourceError(f"NewsAPI request failed: {message}") from exc
        body = _json_body(response)
        if not isinstance(body, dict):
            raise NewsSourceError(f"NewsAPI: malformed JSON response (HTTP {response.status_code})")
        if response.status_code != 200 or body.get("status") != "ok":
            raise NewsSourceError(
                f"NewsAPI error {body.get('code', 'unknown')} (HTTP {response.status_code}): "
                f"{_redact(str(body.get('message', 'no message')), self._api_key)}"
            )
        articles = body.get("articles")
        if not isinstance(articles, list):
            raise NewsSourceError("NewsAPI: response has no 'articles' list")
        records = [self._record(a, now) for a in articles if isinstance(a, dict) and _is_live(a)]
        log.info("NewsAPI: %d articles (totalResults=%s)", len(records), body.get("totalResults"))
        return dedupe_articles(articles_frame(records)) if records else empty_articles()

    def _record(self, article: dict[str, Any], now: pd.Timestamp) -> dict[str, Any]:
        source = article.get("source") if isinstance(article.get("source"), dict) else {}
        title = clean_text(article.get("title"))
        summary = clean_text(article.get("description"))
        return {
            "url": article.get("url") or None,
            "title": title,
            "summary": summary,
            "source": clean_text(source.get("name")) or "newsapi",
            "published_at": _parse_time(article.get("publishedAt")),
            "first_seen_at": now,
            "symbols": self._symbols_for(title, summary),
        }


def _is_live(article: dict[str, Any]) -> bool:
    """NewsAPI keeps taken-down articles as placeholders titled ``[Removed]``; drop them."""
    return clean_text(article.get("title")) not in ("", "[Removed]")


def clients_from_env(
    config: NewsConfig | None = None, env: Mapping[str, str] | None = None, http: httpx.Client | None = None
) -> list[NewsSource]:
    """The enabled sources: RSS always (if feeds are configured), token sources only when their
    environment variable (``CRYPTOPANIC_TOKEN``, ``NEWSAPI_KEY``) is set; otherwise one log line."""
    config = config or NewsConfig()
    env = os.environ if env is None else env
    common = {
        "http": http,
        "timeout_s": config.timeout_s,
        "symbols": config.symbols,
        "aliases": config.aliases,
    }
    sources: list[NewsSource] = []
    if config.rss_feeds:
        sources.append(RssClient(config.rss_feeds, **common))
    else:
        log.info("RSS disabled: no feeds configured")
    if token := env.get("CRYPTOPANIC_TOKEN", "").strip():
        sources.append(
            CryptoPanicClient(
                token, config.cryptopanic_base_url, max_pages=config.cryptopanic_max_pages, **common
            )
        )
    else:
        log.info("CryptoPanic disabled: CRYPTOPANIC_TOKEN not set")
    if key := env.get("NEWSAPI_KEY", "").strip():
        sources.append(NewsApiClient(key, config.newsapi_base_url, query=config.newsapi_query, **common))
    else:
        log.info("NewsAPI disabled: NEWSAPI_KEY not set")
    return sources


@dataclass(frozen=True)
class HarvestResult:
    """Articles from all sources that worked, and an error message per source that did not."""

    articles: pd.DataFrame
    errors: dict[str, str]


def harvest_news(sources: Sequence[NewsSource], now: pd.Timestamp) -> HarvestResult:
    """Fetch every source at ``now``; a failing source is logged and skipped, the rest are merged and deduped."""
    now = utc_timestamp(now)
    frames, errors = [], {}
    for source in sources:
        try:
            frames.append(source.fetch(now))
        except NewsSourceError as exc:
            errors[source.name] = str(exc)
            log.warning("news source %s skipped: %s", source.name, exc)
        errors.update({f"{source.name}:{k}": v for k, v in getattr(source, "errors", {}).items()})
    frames = [f for f in frames if not f.empty]
    articles = dedupe_articles(pd.concat(frames, ignore_index=True)) if frames else empty_articles()
    return HarvestResult(articles, errors)
