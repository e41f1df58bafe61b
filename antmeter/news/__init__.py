"""News harvest and sentiment: article frames from RSS/CryptoPanic/NewsAPI or the offline simulator,
sentiment scores (VADER + crypto lexicon, optional local Ollama) and hourly per-symbol aggregates."""
