"""News assets: harvested (or simulated) articles with sentiment, and hourly sentiment per symbol."""

import dagster as dg
import pandas as pd

from antmeter_assets.partitions import daily_partitions, day_of, utc_now
from antmeter_resources import AntmeterSettings, MarketStoreResource, NewsSourceResource


@dg.asset(
    partitions_def=daily_partitions,
    group_name="news",
    kinds={"python", "sql"},
    deps=[dg.AssetDep("ohlcv", partition_mapping=dg.MultiToSingleDimensionPartitionMapping("date"))],
)
def news_articles(
    context: dg.AssetExecutionContext,
    settings: AntmeterSettings,
    store: MarketStoreResource,
    news: NewsSourceResource,
) -> dg.MaterializeResult:
    """Articles first seen on this UTC day, deduplicated, tagged with symbols and scored.

    ``news.kind == "simulator"`` (the offline default) writes headlines marked ``simulated`` whose
    tone follows the simulated market; ``live`` harvests RSS/Atom feeds plus CryptoPanic and
    NewsAPI when their tokens are set (tokens only from environment variables).
    """
    from antmeter.news.clients import NewsConfig, clients_from_env, harvest_news
    from antmeter.news.sentiment import score_articles
    from antmeter.news.simulator import simulate_news

    day = day_of(context)
    market = store.get()
    symbols = market.symbols()
    now = utc_now()
    if news.kind == "simulator":
        candles = {
            s: market.read_candles(s, settings.interval, day.start - pd.Timedelta(hours=2), day.end)
            for s in symbols
        }
        articles = simulate_news(
            candles, day.start.date(), seed=news.seed, interval=settings.interval, now=now
        )
        articles = articles[articles["first_seen_at"] <= now]
    elif news.kind == "live":
        config = NewsConfig(
            symbols=tuple(symbols), **({"rss_feeds": tuple(news.rss_feeds)} if news.rss_feeds else {})
        )
        tokens = {"CRYPTOPANIC_TOKEN": news.cryptopanic_token or "", "NEWSAPI_KEY": news.newsapi_key or ""}
        harvest = harvest_news(clients_from_env(config, env=tokens), now)
        for source, error in harvest.errors.items():
            context.log.warning(f"news source {source} skipped: {error}")
        articles = harvest.articles
    else:
        raise ValueError(f"news source kind must be simulator or live, got {news.kind!r}")
    scored = score_articles(articles, news.scorer()) if len(articles) else articles
    written = market.upsert_frame("articles", scored) if len(scored) else 0
    context.log.info(f"{written} articles upserted for {day.start.date()} ({news.kind})")
    scorers = scored["scorer"].value_counts().to_dict() if len(scored) else {}
    return dg.MaterializeResult(
        metadata={
            "articles": written,
            "simulated": news.kind == "simulator",
            "scorers": dg.MetadataValue.json({str(k): int(v) for k, v in scorers.items()}),
            "preview": dg.MetadataValue.md(_preview(scored)),
        }
    )


@dg.asset(partitions_def=daily_partitions, group_name="news", kinds={"python", "sql"}, deps=[news_articles])
def sentiment_hourly(context: dg.AssetExecutionContext, store: MarketStoreResource) -> dg.MaterializeResult:
    """Mean sentiment, article count and positive/negative share per symbol and UTC hour.

    Hours are bucketed by when the harvester first saw an article, not by the publish time a feed
    claims, so features can join them as-of without look-ahead.
    """
    from antmeter.news.aggregate import hourly_sentiment

    day = day_of(context)
    market = store.get()
    articles = market.read_frame("articles", time_range=(day.start, day.end))
    hourly = hourly_sentiment(articles, market.symbols())
    written = market.upsert_frame("sentiment_hourly", hourly) if len(hourly) else 0
    return dg.MaterializeResult(
        metadata={
            "rows": written,
            "mean_sentiment": float(hourly["mean_sentiment"].mean()) if len(hourly) else 0.0,
            "table": dg.MetadataValue.md(
                hourly.head(24).to_markdown(index=False) if len(hourly) else "no articles"
            ),
        }
    )


def _preview(articles: pd.DataFrame, rows: int = 8) -> str:
    if articles.empty:
        return "no articles"
    cols = [c for c in ("first_seen_at", "symbols", "sentiment", "title") if c in articles]
    return articles[cols].head(rows).to_markdown(index=False)
