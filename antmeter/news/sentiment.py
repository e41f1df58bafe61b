"""Article sentiment in [-1, 1]: VADER with a crypto lexicon, or a local Ollama model with lexicon fallback.

Every scored article records which scorer produced its number in the ``scorer`` column, so a run in
which Ollama was down for some articles stays auditable.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import httpx
import numpy as np
import pandas as pd
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from antmeter.news.articles import coerce_articles

log = logging.getLogger(__name__)

# Valences on VADER's -4..+4 scale. Single tokens override/extend VADER's lexicon; multi-word phrases
# are rewritten to one underscore token (e.g. "ETF approval" -> "etf_approval") before scoring,
# because VADER looks words up one token at a time.
CRYPTO_LEXICON: dict[str, float] = {
    # bullish vocabulary
    "bullish": 2.5, "moon": 1.5, "mooning": 2.0, "to_the_moon": 2.2, "hodl": 0.8, "ath": 2.0,
    "all_time_high": 2.2, "record_high": 2.0, "etf_approval": 2.6, "etf_approvals": 2.6, "halving": 0.8,
    "rally": 1.8, "rallies": 1.8, "rallied": 1.8, "surge": 1.7, "surges": 1.7, "surged": 1.7,
    "soar": 2.0, "soars": 2.0, "soared": 2.0, "jumps": 1.2, "climbs": 1.2, "climbed": 1.2,
    "rebound": 1.3, "rebounds": 1.3, "breakout": 1.5, "inflows": 1.2, "adoption": 1.2,
    "pump": 0.8, "pumps": 0.8, "short_squeeze": 1.0, "golden_cross": 1.5, "upgrade": 1.0,
    # bearish vocabulary
    "bearish": -2.5, "rekt": -2.8, "hack": -2.5, "hacked": -2.8, "hacks": -2.5, "hacker": -2.0,
    "hackers": -2.0, "exploit": -2.5, "exploited": -2.5, "exploits": -2.5, "rug": -2.0, "rugpull": -3.0,
    "rugpulled": -3.0, "rug_pull": -3.0, "rug_pulled": -3.0, "liquidation": -2.0, "liquidations": -2.0,
    "liquidated": -2.2, "dump": -2.0, "dumps": -2.0, "dumped": -2.0, "fud": -1.8, "delist": -2.0,
    "delisting": -2.2, "delisted": -2.2, "sec_lawsuit": -2.8, "sec_sues": -2.8, "sec_charges": -2.6,
    "etf_rejection": -2.6, "etf_rejected": -2.6, "plunge": -2.3, "plunges": -2.3, "plunged": -2.3,
    "crash": -2.3, "crashes": -2.3, "crashed": -2.3, "flash_crash": -2.6, "slide": -1.5, "slides": -1.5,
    "slid": -1.5, "tumble": -2.0, "tumbles": -2.0, "tumbled": -2.0, "sinks": -1.5, "slumps": -1.8,
    "outflows": -1.2, "selloff": -2.0, "sell_off": -2.0, "capitulation": -2.0, "insolvent": -2.8,
    "insolvency": -2.8, "bankruptcy": -2.8, "breach": -2.0, "drained": -2.0, "depeg": -2.5,
    "depegged": -2.5, "death_cross": -1.5, "exit_scam": -3.0, "bank_run": -2.5, "ponzi": -3.0,
    "withdrawals_halted": -2.5, "halts_withdrawals": -2.5,
}  # fmt: skip

POSITIVE_THRESHOLD = 0.05  # VADER's convention: compound > 0.05 is positive, < -0.05 negative
NEGATIVE_THRESHOLD = -0.05


class Score(NamedTuple):
    """A sentiment in [-1, 1] and the name of the scorer that produced it."""

    value: float
    scorer: str


class SentimentScorer(Protocol):
    """Scores one text; returns the value and which scorer actually produced it."""

    name: str

    def score(self, text: str) -> Score: ...


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = r"[\s\-]+".join(re.escape(w) for w in phrase.split())
    return re.compile(rf"(?<![0-9A-Za-z_]){words}(?![0-9A-Za-z_])", re.IGNORECASE)


class LexiconScorer:
    """VADER's compound score with ``CRYPTO_LEXICON`` added (multi-word phrases joined into tokens)."""

    name = "lexicon:vader-crypto-v1"

    def __init__(self, extra_lexicon: Mapping[str, float] | None = None):
        lexicon = {**CRYPTO_LEXICON, **(extra_lexicon or {})}
        bad = {k: v for k, v in lexicon.items() if not (isinstance(v, int | float) and -4.0 <= v <= 4.0)}
        if bad:
            raise ValueError(f"LexiconScorer: valences must be numbers in [-4, 4], got {bad}")
        self._analyzer = SentimentIntensityAnalyzer()
        self._analyzer.lexicon.update({k.lower(): float(v) for k, v in lexicon.items()})
        phrases = sorted((k for k in lexicon if "_" in k), key=len, reverse=True)
        self._phrases = [(_phrase_pattern(p.replace("_", " ")), p.lower()) for p in phrases]

    def prepare(self, text: str) -> str:
        """``text`` with every known multi-word phrase replaced by its lexicon token."""
        for pattern, token in self._phrases:
            text = pattern.sub(token, text)
        return text

    def score(self, text: str) -> Score:
        """VADER compound in [-1, 1] (0.0 for empty text)."""
        if not text or not text.strip():
            return Score(0.0, self.name)
        return Score(float(self._analyzer.polarity_scores(self.prepare(text))["compound"]), self.name)


OLLAMA_PROMPT = (
    "You rate crypto market news. Read the headline below and rate how it bears on the price of the "
    "assets it mentions, from -1 (very bearish) through 0 (neutral) to 1 (very bullish). "
    'Answer with JSON only, exactly like {{"sentiment": 0.3}}.\n\nHeadline: {text}'
)


class OllamaScorer:
    """Scores with a local Ollama model (``POST /api/generate``, JSON mode), falling back to ``fallback``.

    Any failure (server down, HTTP error, malformed JSON, no number in [-1, 1]) is logged and the
    article is scored by the fallback, whose name then appears in the ``scorer`` column. After
    ``max_consecutive_failures`` failures in a row the server is not asked again by this instance.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:11434",
        model: str = "llama3.2",
        timeout_s: float = 30.0,
        fallback: SentimentScorer | None = None,
        http: httpx.Client | None = None,
        max_consecutive_failures: int = 3,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.fallback = fallback if fallback is not None else LexiconScorer()
        self.name = f"ollama:{model}"
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout_s)
        self.max_consecutive_failures = max_consecutive_failures
        self._failures = 0

    def close(self) -> None:
        """Close the HTTP client if this scorer created it."""
        if self._owns_http:
            self._http.close()

    @property
    def available(self) -> bool:
        """False once the consecutive-failure limit has been reached."""
        return self._failures < self.max_consecutive_failures

    def score(self, text: str) -> Score:
        """The model's sentiment for ``text``, or the fallback's when the model cannot give one."""
        if not self.available:
            return self.fallback.score(text)
        try:
            value = self._ask(text)
        except OllamaError as exc:
            self._failures += 1
            log.warning("Ollama scoring failed (%s); using %s", exc, self.fallback.name)
            if not self.available:
                log.warning("Ollama disabled after %d consecutive failures", self._failures)
            return self.fallback.score(text)
        self._failures = 0
        return Score(value, self.name)

    def _ask(self, text: str) -> float:
        payload = {
            "model": self.model,
            "prompt": OLLAMA_PROMPT.format(text=text),
            "stream": False,
            "format": "json",
        }
        try:
            response = self._http.post(f"{self.base_url}/api/generate", json=payload, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise OllamaError(f"{self.base_url} unreachable: {type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            raise OllamaError(
                f"HTTP {response.status_code}, body is not JSON: {response.text[:80]!r}"
            ) from None
        if response.status_code != 200 or not isinstance(body, dict):
            detail = body.get("error") if isinstance(body, dict) else body
            raise OllamaError(f"HTTP {response.status_code}: {detail}")
        return parse_sentiment(body.get("response"))


class OllamaError(RuntimeError):
    """The Ollama server did not produce a usable sentiment."""


_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_sentiment(text: Any) -> float:
    """A sentiment in [-1, 1] from a model answer: JSON ``{"sentiment": x}`` (or ``score``), a bare JSON
    number, or else the only number in the text. Raises ``OllamaError`` for anything else."""
    if not isinstance(text, str) or not text.strip():
        raise OllamaError(f"empty or missing 'response': {text!r}")
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        candidates = [decoded[k] for k in ("sentiment", "score") if k in decoded]
    elif isinstance(decoded, int | float) and not isinstance(decoded, bool):
        candidates = [decoded]
    else:
        candidates = _NUMBER_RE.findall(text)
    if len(candidates) != 1:
        raise OllamaError(f"no single sentiment number in response {text[:80]!r}")
    try:
        value = float(candidates[0])
    except (TypeError, ValueError):
        raise OllamaError(f"sentiment is not a number: {candidates[0]!r}") from None
    if not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise OllamaError(f"sentiment {value} outside [-1, 1]")
    return value


def article_text(title: str, summary: str, max_chars: int = 400) -> str:
    """The text scored for an article: the title, then the start of the summary."""
    title, summary = (title or "").strip(), (summary or "").strip()
    if not summary:
        return title
    return f"{title}. {summary}"[: max(max_chars, len(title))]


def score_articles(frame: pd.DataFrame, scorer: SentimentScorer, max_chars: int = 400) -> pd.DataFrame:
    """A copy of the article frame with ``sentiment`` and ``scorer`` filled for every row."""
    out = coerce_articles(frame)
    scores = [
        scorer.score(article_text(t, s, max_chars)) for t, s in zip(out["title"], out["summary"], strict=True)
    ]
    out["sentiment"] = np.array([s.value for s in scores], dtype="float64")
    out["scorer"] = pd.Series([s.scorer for s in scores], index=out.index, dtype="str")
    return out


def label_sentiment(values: pd.Series) -> pd.Series:
    """+1 / 0 / -1 by VADER's thresholds (``> 0.05`` positive, ``< -0.05`` negative); NaN stays NaN."""
    labels = np.select([values > POSITIVE_THRESHOLD, values < NEGATIVE_THRESHOLD], [1.0, -1.0], 0.0)
    return pd.Series(np.where(values.isna(), np.nan, labels), index=values.index)
