"""News harvesters against real loopback HTTP servers speaking the documented wire formats."""

from __future__ import annotations

import logging

import httpx
import pandas as pd
import pytest

from antmeter.news.articles import ARTICLE_COLUMNS, article_id, normalize_url, split_symbols
from antmeter.news.clients import (
    CryptoPanicClient,
    NewsApiClient,
    NewsConfig,
    NewsSourceError,
    RssClient,
    clients_from_env,
    dedupe_articles,
    harvest_news,
    tag_symbols,
)
from antmeter_testkit.servers.news_servers import (
    CRYPTOPANIC_POSTS_PATH,
    NEWSAPI_EVERYTHING_PATH,
    CryptoPanicApi,
    LoopbackServer,
    NewsApi,
    cryptopanic_post,
    feed_routes,
    newsapi_article,
)

NOW = pd.Timestamp("2024-03-04T16:07:00Z")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


@pytest.fixture
def http():
    with httpx.Client(timeout=5.0) as client:
        yield client


# --- symbol tagging, ids, dedupe -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bitcoin and Ether rally", ["BTCUSDT", "ETHUSDT"]),
        ("XBT futures open; $BTC steady", ["BTCUSDT"]),
        ("Ethereum's roadmap", ["ETHUSDT"]),
        ("ETH/BTC ratio hits low", ["BTCUSDT", "ETHUSDT"]),
        ("Whether rates fall or not", []),  # "ether" inside "whether" is not Ether
        ("el sol brilla", []),  # lowercase "sol" is not the SOL ticker
        ("SOL and solana DeFi", ["SOLUSDT"]),
        ("BITCOIN HITS RECORD", ["BTCUSDT"]),
        ("BTCUSDT perpetual funding", ["BTCUSDT"]),
        ("Bitcoiners and ETHBTC pair", []),  # no whole-word alias
        ("XRP and DOGE jump", []),  # outside the configured symbol universe
        ("", []),
    ],
)
def test_tag_symbols_matches_whole_words_case_aware(text, expected):
    assert tag_symbols(text, SYMBOLS) == expected


def test_tag_symbols_uses_configurable_aliases():
    aliases = {"BTCUSDT": ("digital gold",), "ETHUSDT": ()}
    assert tag_symbols("Digital   Gold shines", SYMBOLS, aliases) == ["BTCUSDT"]
    assert tag_symbols("Ether rallies", SYMBOLS, aliases) == []  # default names replaced
    assert tag_symbols("ETH rallies", SYMBOLS, aliases) == ["ETHUSDT"]  # the base asset always counts


def test_normalize_url_and_article_id():
    url = "HTTPS://News.Example.COM/Path/Story?utm_source=x&id=3&UTM_Medium=y#frag"
    assert normalize_url(url) == "https://news.example.com/Path/Story?id=3"
    assert article_id(url, "a", "t") == article_id("https://news.example.com/Path/Story?id=3", "b", "u")
    assert article_id(url, "a", "t") != article_id("https://news.example.com/path/story?id=3", "a", "t")
    assert len(article_id(None, "src", "Title")) == 64
    assert article_id(None, "src", "Title") != article_id(None, "other", "Title")
    assert article_id("", "src", "Title") == article_id(None, "src", "Title")


def _article(url, title, seen, symbols="BTCUSDT"):
    return {
        "article_id": article_id(url, "src", title),
        "url": url,
        "title": title,
        "summary": "",
        "source": "src",
        "published_at": pd.NaT,
        "first_seen_at": pd.Timestamp(seen, tz="UTC"),
        "symbols": symbols,
        "simulated": False,
        "sentiment": float("nan"),
        "scorer": None,
    }


def test_dedupe_keeps_earliest_first_seen_and_merges_symbols():
    frame = pd.DataFrame(
        [
            _article("https://a.example/x?utm_source=tw", "Story one", "2024-03-04 10:05", "ETHUSDT"),
            _article("https://A.example/x#top", "Story one (updated)", "2024-03-04 09:00", "BTCUSDT"),
            _article("https://b.example/other", "STORY ONE  (updated)!", "2024-03-04 11:00", "SOLUSDT"),
            _article("https://c.example/1", "", "2024-03-04 12:00"),
            _article("https://c.example/2", "", "2024-03-04 12:00"),
            _article("https://d.example/new", "Something else", "2024-03-04 08:00"),
        ]
    )
    out = dedupe_articles(frame)
    assert list(out.columns) == ARTICLE_COLUMNS
    assert len(out) == 4  # two url duplicates + one title duplicate collapsed; empty titles kept apart
    story = out[out["url"] == "https://A.example/x#top"].iloc[0]
    assert story["first_seen_at"] == pd.Timestamp("2024-03-04 09:00", tz="UTC")
    assert story["symbols"] == "BTCUSDT,ETHUSDT,SOLUSDT"
    assert out["first_seen_at"].is_monotonic_increasing


def test_dedupe_of_stored_plus_new_keeps_the_stored_first_seen():
    stored = dedupe_articles(pd.DataFrame([_article("https://a.example/x", "Story", "2024-03-04 09:00")]))
    again = dedupe_articles(pd.DataFrame([_article("https://a.example/x", "Story", "2024-03-04 15:00")]))
    merged = dedupe_articles(pd.concat([again, stored], ignore_index=True))
    assert len(merged) == 1 and merged["first_seen_at"].iloc[0] == pd.Timestamp("2024-03-04 09:00", tz="UTC")


# --- RSS / Atom ----------------------------------------------------------------------------------


def test_rss_client_harvests_rss_and_atom_and_skips_broken_feeds(http, caplog):
    with LoopbackServer(feed_routes()) as server:
        feeds = [
            f"{server.url}/rss.xml",
            f"{server.url}/broken.xml",
            f"{server.url}/missing.xml",
            f"{server.url}/atom.xml",
        ]
        client = RssClient(feeds, http=http, symbols=SYMBOLS)
        with caplog.at_level(logging.WARNING, logger="antmeter.news.clients"):
            frame = client.fetch(NOW)
    assert list(frame.columns) == ARTICLE_COLUMNS
    assert set(client.errors) == {f"{server.url}/broken.xml", f"{server.url}/missing.xml"}
    assert "unparseable feed" in client.errors[f"{server.url}/broken.xml"]
    assert "HTTP 404" in client.errors[f"{server.url}/missing.xml"]
    assert "RSS feed skipped" in caplog.text and "broken.xml" in caplog.text
    by_title = frame.set_index("title")
    # 4 RSS items with one tracking-parameter duplicate + 2 Atom entries
    assert len(frame) == 5
    rally = by_title.loc["Bitcoin rallies past $70,000 as ETF inflows surge"]
    assert rally["source"] == "Loopback Crypto Wire"
    assert rally["summary"] == "BTC climbed 5% on Monday."
    assert rally["published_at"] == pd.Timestamp("2024-03-04T13:30:00Z")  # +0100 converted to UTC
    assert rally["symbols"] == "BTCUSDT"
    hack = by_title.loc["Ether slides amid exchange hack"]
    assert hack["symbols"] == "ETHUSDT"  # "Whether" in the summary does not add anything
    assert pd.isna(by_title.loc["Stablecoin issuer publishes attestation", "published_at"])
    assert by_title.loc["Stablecoin issuer publishes attestation", "symbols"] == ""
    eth_upgrade = by_title.loc["ETHEREUM developers schedule upgrade; BTC miners watch fees"]
    assert eth_upgrade["source"] == "Loopback Atom Desk"
    assert eth_upgrade["published_at"] == pd.Timestamp("2024-03-04T20:50:00Z")
    assert split_symbols(eth_upgrade["symbols"]) == list(SYMBOLS)  # summary mentions SOL
    assert (frame["first_seen_at"] == NOW).all()
    assert not frame["simulated"].any() and frame["sentiment"].isna().all()


def test_rss_client_reports_unreachable_feed(http):
    with LoopbackServer(feed_routes()) as server:
        url = server.url
    client = RssClient([f"{url}/rss.xml"], http=http, timeout_s=2.0)
    frame = client.fetch(NOW)  # server already stopped
    assert frame.empty and list(frame.columns) == ARTICLE_COLUMNS
    assert "request failed" in client.errors[f"{url}/rss.xml"]


def test_fetch_requires_timezone_aware_now(http):
    with pytest.raises(ValueError, match="timezone-aware"):
        RssClient([], http=http).fetch(pd.Timestamp("2024-03-04 16:00"))


# --- CryptoPanic ---------------------------------------------------------------------------------

TOKEN = "cp-secret-token-123"


def _posts() -> list[dict]:
    return [
        cryptopanic_post(
            1, "Bitcoin ETF sees record inflows", ["BTC"], "2024-03-04T15:00:00Z", "coindesk.com"
        ),
        cryptopanic_post(2, "Exchange hacked, users rekt", [], "2024-03-04T15:10:00.123456Z", "decrypt.co"),
        cryptopanic_post(3, "Layer-2 fees drop", ["ETH", "ARB"], "2024-03-04T15:20:00Z", "theblock.co"),
        cryptopanic_post(4, "Solana DEX volume climbs", ["SOL"], "2024-03-04T15:30:00Z", "cointelegraph.com"),
        cryptopanic_post(5, "Market wrap", ["BTC", "ETH"], "not a date", "coindesk.com"),
    ]


def _cryptopanic(server_url: str, http: httpx.Client, **kwargs) -> CryptoPanicClient:
    return CryptoPanicClient(
        kwargs.pop("token", TOKEN),
        base_url=f"{server_url}/api/developer/v2",
        http=http,
        symbols=SYMBOLS,
        **kwargs,
    )


def test_cryptopanic_follows_next_pages_and_maps_posts(http):
    api = CryptoPanicApi(TOKEN, _posts(), page_size=2)
    with LoopbackServer({CRYPTOPANIC_POSTS_PATH: api.route}) as server:
        frame = _cryptopanic(server.url, http, max_pages=5).fetch(NOW)
        first = server.requests_to(CRYPTOPANIC_POSTS_PATH)[0]
    assert api.served == [1, 2, 3]
    assert first.query == {"auth_token": TOKEN, "currencies": "BTC,ETH,SOL", "public": "true"}
    assert len(frame) == 5
    rows = frame.set_index("title")
    assert rows.loc["Bitcoin ETF sees record inflows", "symbols"] == "BTCUSDT"
    assert rows.loc["Layer-2 fees drop", "symbols"] == "ETHUSDT"  # ARB is not in the universe
    assert rows.loc["Market wrap", "symbols"] == "BTCUSDT,ETHUSDT"
    assert rows.loc["Exchange hacked, users rekt", "symbols"] == ""
    assert rows.loc["Exchange hacked, users rekt", "source"] == "Decrypt"
    assert rows.loc["Exchange hacked, users rekt", "published_at"] == pd.Timestamp(
        "2024-03-04T15:10:00.123456Z"
    )
    assert pd.isna(rows.loc["Market wrap", "published_at"])
    assert rows.loc["Solana DEX volume climbs", "url"].startswith("https://cryptopanic.com/news/4/")
    assert (frame["first_seen_at"] == NOW).all()


def test_cryptopanic_page_limit_is_respected(http):
    api = CryptoPanicApi(TOKEN, _posts(), page_size=2)
    with LoopbackServer({CRYPTOPANIC_POSTS_PATH: api.route}) as server:
        frame = _cryptopanic(server.url, http, max_pages=2).fetch(NOW)
    assert api.served == [1, 2] and len(frame) == 4


def test_cryptopanic_wrong_token_gives_clear_error_without_the_token(http):
    api = CryptoPanicApi(TOKEN, _posts())
    with (
        LoopbackServer({CRYPTOPANIC_POSTS_PATH: api.route}) as server,
        pytest.raises(NewsSourceError, match=r"HTTP 401\): Token not found") as info,
    ):
        _cryptopanic(server.url, http, token="wrong-token-999").fetch(NOW)
    assert "wrong-token-999" not in str(info.value)


def test_cryptopanic_malformed_json_is_an_error(http):
    api = CryptoPanicApi(TOKEN, _posts(), malformed=True)
    with (
        LoopbackServer({CRYPTOPANIC_POSTS_PATH: api.route}) as server,
        pytest.raises(NewsSourceError, match="malformed JSON"),
    ):
        _cryptopanic(server.url, http).fetch(NOW)


def test_cryptopanic_backs_off_on_429_then_succeeds(http):
    api = CryptoPanicApi(TOKEN, _posts(), page_size=10, rate_limited_requests=2, retry_after="0.01")
    sleeps: list[float] = []
    with LoopbackServer({CRYPTOPANIC_POSTS_PATH: api.route}) as server:
        frame = _cryptopanic(server.url, http, sleep=sleeps.append, max_retries=3).fetch(NOW)
        attempts = len(server.requests)
    assert sleeps == [0.01, 0.01] and attempts == 3 and len(frame) == 5


def test_cryptopanic_gives_up_after_max_retries(http):
    api = CryptoPanicApi(TOKEN, _posts(), rate_limited_requests=5, retry_after="not-a-number")
    sleeps: list[float] = []
    with LoopbackServer({CRYPTOPANIC_POSTS_PATH: api.route}) as server:
        client = _cryptopanic(server.url, http, sleep=sleeps.append, max_retries=2, backoff_s=0.5)
        with pytest.raises(NewsSourceError, match="HTTP 429: Rate limit exceeded"):
            client.fetch(NOW)
    assert sleeps == [0.5, 1.0]  # exponential back-off when Retry-After is unusable


def test_cryptopanic_does_not_follow_next_to_another_host(http):
    api = CryptoPanicApi(TOKEN, _posts(), page_size=2, next_host="http://elsewhere.invalid")
    with (
        LoopbackServer({CRYPTOPANIC_POSTS_PATH: api.route}) as server,
        pytest.raises(NewsSourceError, match="not followed"),
    ):
        _cryptopanic(server.url, http).fetch(NOW)
    assert api.served == [1]


# --- NewsAPI -------------------------------------------------------------------------------------

KEY = "newsapi-key-abc"


def _newsapi_articles() -> list[dict]:
    return [
        newsapi_article("Reuters", "Bitcoin slips as dollar firms", "https://reuters.example/btc", "2024-03-04T14:00:00Z",
                        "The largest cryptocurrency fell."),
        newsapi_article("CoinDesk", "[Removed]", "https://removed.com", "1970-01-01T00:00:00Z", "[Removed]"),
        newsapi_article("Bloomberg", "Ether options traders position for upgrade",
                        "https://bloomberg.example/eth?utm_source=newsapi", "2024-03-04T13:00:00Z", "ETH vol rises."),
    ]  # fmt: skip


def test_newsapi_maps_documented_articles(http):
    api = NewsApi(KEY, _newsapi_articles())
    with LoopbackServer({NEWSAPI_EVERYTHING_PATH: api.route}) as server:
        client = NewsApiClient(
            KEY, base_url=f"{server.url}/v2", http=http, query="bitcoin OR ether", symbols=SYMBOLS
        )
        frame = client.fetch(NOW)
        request = server.requests[0]
    assert request.headers["x-api-key"] == KEY and "apiKey" not in request.query
    assert request.query == {
        "q": "bitcoin OR ether",
        "language": "en",
        "sortBy": "publishedAt",
        "pageSize": "100",
    }
    assert set(frame["title"]) == {
        "Ether options traders position for upgrade",
        "Bitcoin slips as dollar firms",
    }
    rows = frame.set_index("title")
    assert rows.loc["Bitcoin slips as dollar firms", "source"] == "Reuters"
    assert rows.loc["Bitcoin slips as dollar firms", "published_at"] == pd.Timestamp("2024-03-04T14:00:00Z")
    assert rows.loc["Ether options traders position for upgrade", "symbols"] == "ETHUSDT"
    assert rows.loc["Ether options traders position for upgrade", "article_id"] == article_id(
        "https://bloomberg.example/eth", None, None
    )


def test_newsapi_invalid_key_error_names_the_code(http):
    api = NewsApi(KEY, _newsapi_articles())
    with LoopbackServer({NEWSAPI_EVERYTHING_PATH: api.route}) as server:
        client = NewsApiClient("bad-key-000", base_url=f"{server.url}/v2", http=http)
        with pytest.raises(
            NewsSourceError, match=r"NewsAPI error apiKeyInvalid \(HTTP 401\): Your API key"
        ) as info:
            client.fetch(NOW)
    assert "bad-key-000" not in str(info.value)


# --- factory and harvest -------------------------------------------------------------------------


def test_clients_from_env_disables_sources_without_tokens(caplog):
    with caplog.at_level(logging.INFO, logger="antmeter.news.clients"):
        sources = clients_from_env(NewsConfig(), env={"CRYPTOPANIC_TOKEN": "  "})
    assert [type(s) for s in sources] == [RssClient]
    assert "CryptoPanic disabled: CRYPTOPANIC_TOKEN not set" in caplog.messages
    assert "NewsAPI disabled: NEWSAPI_KEY not set" in caplog.messages
    sources = clients_from_env(NewsConfig(rss_feeds=()), env={"CRYPTOPANIC_TOKEN": "t", "NEWSAPI_KEY": "k"})
    assert [type(s) for s in sources] == [CryptoPanicClient, NewsApiClient]


def test_harvest_news_merges_working_sources_and_reports_failures(http):
    duplicate = newsapi_article(
        "Wire", "Bitcoin rallies past $70,000 as ETF inflows surge", "https://wire.example/markets/btc-rally?id=7",
        "2024-03-04T13:30:00Z", "dup",
    )  # fmt: skip
    routes = {
        **feed_routes(),
        NEWSAPI_EVERYTHING_PATH: NewsApi(KEY, [duplicate, *_newsapi_articles()]).route,
        CRYPTOPANIC_POSTS_PATH: CryptoPanicApi(TOKEN, _posts()).route,
    }
    with LoopbackServer(routes) as server:
        sources = [
            RssClient([f"{server.url}/rss.xml", f"{server.url}/broken.xml"], http=http, symbols=SYMBOLS),
            NewsApiClient(KEY, base_url=f"{server.url}/v2", http=http, symbols=SYMBOLS),
            _cryptopanic(server.url, http, token="revoked"),
        ]
        result = harvest_news(sources, NOW)
    assert set(result.errors) == {"cryptopanic", f"rss:{server.url}/broken.xml"}
    # 3 RSS articles + 2 live NewsAPI articles; the NewsAPI copy of the RSS story is a duplicate
    assert len(result.articles) == 5
    assert result.articles["article_id"].is_unique


def test_article_frame_rejects_naive_first_seen():
    frame = pd.DataFrame([_article("https://a.example/x", "Story", "2024-03-04 09:00")])
    frame["first_seen_at"] = frame["first_seen_at"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="'first_seen_at' must be timezone-aware"):
        dedupe_articles(frame)


def test_cryptopanic_token_never_reaches_a_log_line(http, caplog):
    """CryptoPanic only takes the token as ``auth_token`` in the query: httpx's request log must mask it."""
    api = CryptoPanicApi(TOKEN, _posts(), page_size=2)
    with (
        LoopbackServer({CRYPTOPANIC_POSTS_PATH: api.route}) as server,
        caplog.at_level(logging.DEBUG),
    ):
        _cryptopanic(server.url, http, max_pages=2).fetch(NOW)
    request_lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert len(request_lines) == 2 and all("auth_token=***" in line for line in request_lines)
    assert TOKEN not in caplog.text
