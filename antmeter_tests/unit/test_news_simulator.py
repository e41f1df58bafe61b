"""The offline news simulator: marked as simulated, deterministic, causal, tone tied to past returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antmeter.market.candles import CandleValidationError
from antmeter.news.articles import ARTICLE_COLUMNS, tag_symbols
from antmeter.news.sentiment import LexiconScorer, score_articles
from antmeter.news.simulator import (
    HEADLINE_REASONS,
    HEADLINE_TEMPLATES,
    SIM_SOURCE,
    simulate_news,
    trailing_returns,
)

DAY = "2024-03-02"


def make_candles(
    start: str, minutes: int, drift: float = 0.0, vol: float = 0.001, seed: int = 0
) -> pd.DataFrame:
    """A consistent 1-minute candle random walk (log-return drift ``drift`` per minute)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(drift + rng.normal(0.0, vol, minutes)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame(
        {
            "open_time": pd.date_range(start, periods=minutes, freq="1min", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0002,
            "low": np.minimum(open_, close) * 0.9998,
            "close": close,
            "volume": 1.0,
        }
    )


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    # from the previous day's last hours so that the first articles already have a trailing return
    return {
        "BTCUSDT": make_candles("2024-03-01T22:00Z", 26 * 60, seed=1),
        "ETHUSDT": make_candles("2024-03-01T22:00Z", 26 * 60, seed=2),
    }


def test_articles_are_clearly_marked_simulated(candles):
    news = simulate_news(candles, DAY, seed=7)
    assert list(news.columns) == ARTICLE_COLUMNS
    assert news["simulated"].all() and (news["source"] == SIM_SOURCE).all()
    assert news["summary"].str.startswith("Simulated by Antmeter").all()
    assert news["url"].str.match(r"^sim://antmeter/(BTCUSDT|ETHUSDT)/20240302T\d{6}Z/\d+$").all()
    assert news["article_id"].is_unique
    start, end = pd.Timestamp(DAY, tz="UTC"), pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(days=1)
    assert news["first_seen_at"].between(start, end, inclusive="left").all()
    assert news["first_seen_at"].is_monotonic_increasing
    assert (news["published_at"] <= news["first_seen_at"]).all()
    assert news["sentiment"].isna().all()
    # every headline mentions the symbol it is tagged with
    for title, symbol in zip(news["title"], news["symbols"], strict=True):
        assert tag_symbols(title, ["BTCUSDT", "ETHUSDT"]) == [symbol]


def test_arrivals_are_poisson_with_the_requested_rate(candles):
    counts = [len(simulate_news(candles, DAY, seed=s, rate_per_hour=4.0)) for s in range(10)]
    # 2 symbols x 24 h x 4/h = 192 expected per run; Poisson sd ~ 14
    assert 150 < np.mean(counts) < 234 and len(set(counts)) > 1
    assert simulate_news(candles, DAY, seed=1, rate_per_hour=0.0).empty


def test_deterministic_per_seed_day_and_symbol(candles):
    a = simulate_news(candles, DAY, seed=11)
    pd.testing.assert_frame_equal(a, simulate_news(candles, DAY, seed=11))
    assert not a["first_seen_at"].equals(simulate_news(candles, DAY, seed=12)["first_seen_at"])
    other_day = simulate_news(candles, "2024-03-03", seed=11)
    assert not np.array_equal(
        (a["first_seen_at"] - pd.Timestamp(DAY, tz="UTC")).to_numpy(),
        (other_day["first_seen_at"] - pd.Timestamp("2024-03-03", tz="UTC")).to_numpy(),
    )
    # a symbol's stream does not depend on which other symbols are simulated
    alone = simulate_news({"BTCUSDT": candles["BTCUSDT"]}, DAY, seed=11)
    pd.testing.assert_frame_equal(alone, a[a["symbols"] == "BTCUSDT"].reset_index(drop=True))


def _crash_after(candles: dict[str, pd.DataFrame], cut: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Copies of ``candles`` with every candle that closes after ``cut`` halved in price."""
    changed = {}
    for symbol, frame in candles.items():
        frame = frame.copy()
        after = frame["open_time"] + pd.Timedelta(minutes=1) > cut
        frame.loc[after, ["open", "high", "low", "close"]] *= 0.5
        changed[symbol] = frame
    return changed


def test_tone_depends_only_on_candles_closed_before_first_seen(candles):
    base = simulate_news(candles, DAY, seed=5, tone_noise=0.2)
    # cut exactly at some articles' first_seen_at: they must not see the candle closing a second later
    for cut in base["first_seen_at"].iloc[[3, 40, 77, 120]]:
        altered = simulate_news(_crash_after(candles, cut), DAY, seed=5, tone_noise=0.2)
        before = base["first_seen_at"] <= cut
        pd.testing.assert_frame_equal(base[before], altered[before])
        # the crash does show up after the cut (so the check above is not vacuous)
        assert (base.loc[~before, "summary"] != altered.loc[~before, "summary"]).any()
    crashed = simulate_news(
        _crash_after(candles, pd.Timestamp("2024-03-02T12:00Z")), DAY, seed=5, tone_noise=0.2
    )
    just_after = crashed["first_seen_at"].between(
        pd.Timestamp("2024-03-02T12:01Z"), pd.Timestamp("2024-03-02T13:00Z")
    )
    assert crashed.loc[just_after, "title"].str.contains("slides|tumbles|bearish|plunges|sinks").all()


def test_trailing_returns_use_closed_candles_only():
    candles = make_candles("2024-03-02T00:00Z", 10)
    at = pd.DatetimeIndex(
        pd.to_datetime(["2024-03-02T00:05:00Z", "2024-03-02T00:05:59Z", "2024-03-02T00:00:30Z"])
    )
    out = trailing_returns(candles, at, pd.Timedelta(minutes=3))
    close = candles["close"].to_numpy()
    # at 00:05 the last closed candle is the one opened 00:04 (index 4); 3 min earlier: index 1
    assert out[0] == pytest.approx(close[4] / close[1] - 1)
    assert out[1] == pytest.approx(close[4] / close[1] - 1)  # 00:05 candle still open at 00:05:59
    assert np.isnan(out[2])  # nothing closed yet


def test_tone_follows_the_market(candles):
    up = {"BTCUSDT": make_candles("2024-03-01T22:00Z", 26 * 60, drift=0.0004, seed=3)}
    down = {"BTCUSDT": make_candles("2024-03-01T22:00Z", 26 * 60, drift=-0.0004, seed=3)}
    scorer = LexiconScorer()
    up_scores = score_articles(simulate_news(up, DAY, seed=2), scorer)["sentiment"]
    down_scores = score_articles(simulate_news(down, DAY, seed=2), scorer)["sentiment"]
    assert up_scores.mean() > 0.3 and down_scores.mean() < -0.3
    # on a driftless walk the tone still correlates with the trailing return
    news = simulate_news(candles, DAY, seed=4, rate_per_hour=8.0)
    btc = news[news["symbols"] == "BTCUSDT"]
    returns = trailing_returns(
        candles["BTCUSDT"], pd.DatetimeIndex(btc["first_seen_at"]), pd.Timedelta(minutes=60)
    )
    scores = score_articles(btc, scorer)["sentiment"].to_numpy()
    assert np.corrcoef(returns, scores)[0, 1] > 0.3


@pytest.mark.parametrize("tone", ["positive", "negative", "neutral"])
def test_every_template_reads_with_its_tone(tone):
    scorer = LexiconScorer()
    scores = [
        scorer.score(template.format(name=name, reason=reason)).value
        for template in HEADLINE_TEMPLATES[tone]
        for reason in HEADLINE_REASONS[tone]
        for name in ("Bitcoin", "Ether", "Solana")
    ]
    if tone == "positive":
        assert min(scores) > 0.05
    elif tone == "negative":
        assert max(scores) < -0.05
    else:
        assert max(abs(s) for s in scores) <= 0.05


def test_missing_history_gives_neutral_headlines():
    late = {"BTCUSDT": make_candles("2024-03-02T20:00Z", 60)}
    news = simulate_news(late, DAY, seed=3)
    early = news[news["first_seen_at"] < pd.Timestamp("2024-03-02T20:00Z")]
    assert len(early) > 10 and early["summary"].str.contains("unavailable").all()
    assert early["title"].str.contains("sideways|recent levels|range-bound").all()


def test_bad_candles_and_settings_are_rejected():
    naive = make_candles("2024-03-02T00:00Z", 5)
    naive["open_time"] = naive["open_time"].dt.tz_localize(None)
    with pytest.raises(CandleValidationError, match=r"simulate_news\[BTCUSDT\].*open_time"):
        simulate_news({"BTCUSDT": naive}, DAY, seed=1)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        simulate_news({}, DAY, seed=-1)
    with pytest.raises(ValueError, match="lookback must be positive"):
        simulate_news({}, DAY, seed=1, lookback=pd.Timedelta(0))
