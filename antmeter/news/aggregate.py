"""Hourly per-symbol sentiment aggregates (the ``sentiment_hourly`` table).

Articles are bucketed by ``first_seen_at`` (when our harvester saw them), never by the feed's
``published_at``. The row for hour ``h`` summarises articles first seen in ``[h, h + 1h)`` and is
therefore known only at ``h + 1h``: consumers must join it as-of ``h + 1h``.

An article counts as positive when its score is ``> 0.05`` and negative when ``< -0.05`` (VADER's
convention); articles without a score (NaN) are left out. Hours with no scored article have no row.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from antmeter.news.articles import coerce_articles
from antmeter.news.sentiment import label_sentiment

HOURLY_COLUMNS = ["symbol", "hour", "mean_sentiment", "article_count", "positive_share", "negative_share"]


def empty_hourly() -> pd.DataFrame:
    """A zero-row hourly sentiment frame with the canonical dtypes."""
    return pd.DataFrame(
        {
            "symbol": pd.Series(dtype="str"),
            "hour": pd.Series(dtype="datetime64[ns, UTC]"),
            "mean_sentiment": pd.Series(dtype="float64"),
            "article_count": pd.Series(dtype="int64"),
            "positive_share": pd.Series(dtype="float64"),
            "negative_share": pd.Series(dtype="float64"),
        }
    )


def hourly_sentiment(articles: pd.DataFrame, symbols: Sequence[str]) -> pd.DataFrame:
    """Mean sentiment, article count and positive/negative shares per ``symbol`` and UTC hour.

    An article tagged with several symbols counts once for each of them; symbols outside ``symbols``
    are ignored. Sorted by symbol then hour.
    """
    frame = coerce_articles(articles)
    frame = frame[frame["sentiment"].notna()]
    if frame.empty or not symbols:
        return empty_hourly()
    exploded = (
        frame.assign(symbol=frame["symbols"].str.split(","), hour=frame["first_seen_at"].dt.floor("h"))
        .explode("symbol")
        .loc[:, ["symbol", "hour", "sentiment"]]
    )
    exploded = exploded[exploded["symbol"].isin(list(symbols))]
    if exploded.empty:
        return empty_hourly()
    labels = label_sentiment(exploded["sentiment"])
    exploded = exploded.assign(
        positive=(labels > 0).astype("float64"), negative=(labels < 0).astype("float64")
    )
    grouped = exploded.groupby(["symbol", "hour"], sort=True)
    out = pd.DataFrame(
        {
            "mean_sentiment": grouped["sentiment"].mean(),
            "article_count": grouped["sentiment"].size().astype("int64"),
            "positive_share": grouped["positive"].mean(),
            "negative_share": grouped["negative"].mean(),
        }
    ).reset_index()
    out["symbol"] = out["symbol"].astype("str")
    out["hour"] = out["hour"].astype("datetime64[ns, UTC]")
    return out[HOURLY_COLUMNS]
