"""Sentiment scorers (VADER + crypto lexicon, Ollama over real HTTP with fallback) and hourly aggregation."""

from __future__ import annotations

import logging
import math

import httpx
import numpy as np
import pandas as pd
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from antmeter.news.aggregate import HOURLY_COLUMNS, hourly_sentiment
from antmeter.news.articles import ARTICLE_COLUMNS, articles_frame
from antmeter.news.sentiment import (
    LexiconScorer,
    OllamaError,
    OllamaScorer,
    parse_sentiment,
    score_articles,
)
from antmeter_testkit.servers.news_servers import (
    OLLAMA_GENERATE_PATH,
    LoopbackServer,
    OllamaApi,
    keyword_model,
    unused_port,
)

PLAIN_VADER = SentimentIntensityAnalyzer()


@pytest.fixture(scope="module")
def lexicon() -> LexiconScorer:
    return LexiconScorer()


def _plain(text: str) -> float:
    return PLAIN_VADER.polarity_scores(text)["compound"]


# --- lexicon -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("Exchange hacked, users rekt", -1),
        ("ETF approval sparks bullish rally", 1),
        ("SEC lawsuit hits top exchange", -1),
        ("Token delisted after rugpull", -1),
        ("Bitcoin breaks out to new ATH", 1),
        ("Bearish traders face liquidation as longs get liquidated", -1),
        ("Bitcoin surges to an all-time high", 1),
    ],
)
def test_crypto_lexicon_moves_scores_the_right_way(lexicon, text, sign):
    score = lexicon.score(text)
    assert score.scorer == lexicon.name
    assert sign * score.value > 0.05  # clearly on the right side of VADER's neutral band
    assert sign * score.value > sign * _plain(text)  # and further than plain VADER puts it


def test_multi_word_phrases_become_single_tokens(lexicon):
    assert (
        lexicon.prepare("Spot ETF  Approval nears; SEC-lawsuit dropped")
        == "Spot etf_approval nears; sec_lawsuit dropped"
    )
    assert lexicon.prepare("ETF approvals") == "etf_approvals"  # the longer phrase wins
    assert lexicon.prepare("Rug pulled!") == "rug_pulled!"
    assert lexicon.prepare("no etfapproval here") == "no etfapproval here"


def test_neutral_and_empty_texts(lexicon):
    assert lexicon.score("").value == 0.0
    assert abs(lexicon.score("Bitcoin developers publish meeting notes").value) <= 0.05


def test_extra_lexicon_is_validated_and_applied():
    assert LexiconScorer({"wagmi": 2.0}).score("wagmi").value > 0.3
    with pytest.raises(ValueError, match="valences must be numbers in \\[-4, 4\\]"):
        LexiconScorer({"wagmi": 9.0})


# --- Ollama over real HTTP -----------------------------------------------------------------------

HEADLINES = [
    "ETF approval sparks bullish rally",
    "Exchange hacked, users rekt",
    "Bitcoin developers publish notes",
]


def _frame(titles: list[str], seen: str = "2024-03-04T10:00:00Z") -> pd.DataFrame:
    return articles_frame(
        {"url": f"https://n.example/{i}", "title": t, "source": "s", "first_seen_at": pd.Timestamp(seen)}
        for i, t in enumerate(titles)
    )


def test_ollama_scores_each_article_via_api_generate():
    api = OllamaApi(mode="good")
    with LoopbackServer({OLLAMA_GENERATE_PATH: api.route}) as server, httpx.Client() as http:
        scorer = OllamaScorer(base_url=server.url, model="llama3.2", timeout_s=5.0, http=http)
        scored = score_articles(_frame(HEADLINES), scorer)
        bodies = [r.json() for r in server.requests_to(OLLAMA_GENERATE_PATH)]
    assert list(scored.columns) == ARTICLE_COLUMNS
    assert list(scored["sentiment"]) == [keyword_model(h) for h in HEADLINES]
    assert set(scored["scorer"]) == {"ollama:llama3.2"}
    assert len(bodies) == 3
    for body, headline in zip(bodies, HEADLINES, strict=True):
        assert body["model"] == "llama3.2" and body["stream"] is False and body["format"] == "json"
        assert body["prompt"].endswith(f"Headline: {headline}")


@pytest.mark.parametrize("mode", ["garbage", "out_of_range", "missing_model"])
def test_ollama_bad_answers_fall_back_to_the_lexicon(mode, lexicon, caplog):
    api = OllamaApi(mode=mode)
    with LoopbackServer({OLLAMA_GENERATE_PATH: api.route}) as server, httpx.Client() as http:
        scorer = OllamaScorer(base_url=server.url, http=http, fallback=lexicon, max_consecutive_failures=10)
        with caplog.at_level(logging.WARNING, logger="antmeter.news.sentiment"):
            scored = score_articles(_frame(HEADLINES), scorer)
        asked = len(server.requests)
    assert asked == 3  # every article was offered to the model first
    assert list(scored["sentiment"]) == [lexicon.score(h).value for h in HEADLINES]
    assert set(scored["scorer"]) == {lexicon.name}
    assert "Ollama scoring failed" in caplog.text


def test_ollama_server_down_falls_back_and_stops_asking(lexicon, caplog):
    scorer = OllamaScorer(base_url=f"http://127.0.0.1:{unused_port()}", timeout_s=2.0, fallback=lexicon)
    with caplog.at_level(logging.WARNING, logger="antmeter.news.sentiment"):
        scored = score_articles(_frame(HEADLINES * 2), scorer)
    assert list(scored["scorer"]) == [lexicon.name] * 6
    assert scored["sentiment"].iloc[0] > 0.05 and scored["sentiment"].iloc[1] < -0.05
    assert not scorer.available
    assert caplog.text.count("unreachable") == 3  # circuit opens after 3 consecutive failures
    assert "Ollama disabled after 3 consecutive failures" in caplog.text


def test_ollama_recovers_mixed_answers_per_article(lexicon):
    """A model that only sometimes answers: the scorer column says which scorer produced each number."""
    api = OllamaApi(mode="good")
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        api.mode = "garbage" if calls["n"] % 2 == 0 else "good"
        return api.route(request)

    with LoopbackServer({OLLAMA_GENERATE_PATH: flaky}) as server, httpx.Client() as http:
        scored = score_articles(
            _frame(HEADLINES), OllamaScorer(base_url=server.url, http=http, fallback=lexicon)
        )
    assert list(scored["scorer"]) == ["ollama:llama3.2", lexicon.name, "ollama:llama3.2"]
    assert scored["sentiment"].iloc[1] == lexicon.score(HEADLINES[1]).value


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"sentiment": -0.25}', -0.25), ('{"score": 1}', 1.0), ("0.4", 0.4), ("Sentiment: -0.6", -0.6)],
)
def test_parse_sentiment_accepts_documented_shapes(text, expected):
    assert math.isclose(parse_sentiment(text), expected)


@pytest.mark.parametrize(
    "text",
    ["", None, '{"sentiment": "high"}', '{"sentiment": 1.5}', "between 0.2 and 0.4", "NaN", '{"x": 1}'],
)
def test_parse_sentiment_rejects_garbage(text):
    with pytest.raises(OllamaError):
        parse_sentiment(text)


# --- hourly aggregation ---------------------------------------------------------------------------


def _scored(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """rows: (first_seen_at, published_at, symbols, sentiment)."""
    return articles_frame(
        {
            "url": f"https://n.example/{i}",
            "title": f"t{i}",
            "first_seen_at": pd.Timestamp(seen),
            "published_at": pd.Timestamp(published),
            "symbols": symbols,
            "sentiment": score,
            "scorer": "test",
        }
        for i, (seen, published, symbols, score) in enumerate(rows)
    )


def test_hourly_sentiment_buckets_by_first_seen_at():
    articles = _scored(
        [
            ("2024-03-04T10:00:00Z", "2024-03-04T09:10:00Z", "BTCUSDT", 0.6),
            ("2024-03-04T10:59:59.999Z", "2024-03-04T09:59:00Z", "BTCUSDT,ETHUSDT", -0.3),
            ("2024-03-04T10:30:00Z", "2024-03-04T10:30:00Z", "BTCUSDT", 0.05),  # boundary: neutral
            ("2024-03-04T11:00:00Z", "2024-03-04T10:59:00Z", "ETHUSDT", -0.05),  # boundary: neutral
            ("2024-03-04T11:15:00Z", "2024-03-04T11:15:00Z", "ETHUSDT", float("nan")),  # unscored: ignored
            ("2024-03-04T11:20:00Z", "2024-03-04T11:20:00Z", "SOLUSDT", 0.9),  # not requested
            ("2024-03-04T11:25:00Z", "2024-03-04T11:25:00Z", "", 0.9),  # no symbol
        ]
    )
    out = hourly_sentiment(articles, ["BTCUSDT", "ETHUSDT"])
    assert list(out.columns) == HOURLY_COLUMNS
    assert str(out["hour"].dtype) == "datetime64[ns, UTC]" and out["article_count"].dtype == np.int64
    expected = pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "ETHUSDT", "ETHUSDT"],
            "hour": pd.to_datetime(["2024-03-04T10:00Z", "2024-03-04T10:00Z", "2024-03-04T11:00Z"], utc=True),
            "mean_sentiment": [(0.6 - 0.3 + 0.05) / 3, -0.3, -0.05],
            "article_count": [3, 1, 1],
            "positive_share": [1 / 3, 0.0, 0.0],
            "negative_share": [1 / 3, 1.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(out, expected, check_dtype=False)


def test_hourly_sentiment_of_nothing_is_an_empty_frame():
    out = hourly_sentiment(
        _scored([("2024-03-04T10:00:00Z", "2024-03-04T10:00:00Z", "SOLUSDT", 0.2)]), ["BTCUSDT"]
    )
    assert out.empty and list(out.columns) == HOURLY_COLUMNS
    assert hourly_sentiment(articles_frame([]), ["BTCUSDT"]).empty


def test_score_then_aggregate_end_to_end(lexicon):
    frame = _frame(["ETF approval sparks bullish rally for Bitcoin", "Bitcoin exchange hacked, users rekt"])
    frame["symbols"] = "BTCUSDT"
    out = hourly_sentiment(score_articles(frame, lexicon), ["BTCUSDT"])
    assert out["article_count"].tolist() == [2]
    assert out["positive_share"].tolist() == [0.5] and out["negative_share"].tolist() == [0.5]
