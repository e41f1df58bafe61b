"""Loopback HTTP servers speaking the documented wire formats of the news and LLM APIs Antmeter uses.

* RSS 2.0 / Atom 1.0 feeds, plus a garbage "feed" and a 404;
* CryptoPanic developer v2 ``GET /api/developer/v2/posts/`` with ``auth_token``, ``currencies``,
  ``public`` and ``page``; pages linked by absolute ``next`` URLs; 401 ``{"status": "Incomplete",
  "info": ...}`` for a wrong token; scripted 429s with ``Retry-After``; a malformed-JSON mode;
* NewsAPI ``GET /v2/everything`` with ``X-Api-Key``; ``{"status": "error", "code": "apiKeyInvalid"}``
  / ``parametersMissing`` error bodies;
* Ollama ``POST /api/generate`` (non-streaming, JSON mode). The "model" is a keyword rule over the
  headline in the prompt, so the answer depends on the request; modes return garbage text, an
  out-of-range number, or a 404 ``{"error": "model ... not found"}``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base_url: str

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


Reply = tuple[int, dict[str, str], bytes]
Route = Callable[[Request], Reply]


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(payload).encode("utf-8"),
    )


class LoopbackServer:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 (random port) dispatching paths to route functions.

    Unknown paths answer 404. Every request is recorded in ``requests``. Use as a context manager.
    """

    def __init__(self, routes: dict[str, Route]):
        self.routes = routes
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                    base_url=f"http://{self.headers.get('Host')}",
                )
                with server._lock:
                    server.requests.append(request)
                route = server.routes.get(parts.path)
                status, headers, body = (
                    route(request) if route else (404, {"Content-Type": "text/plain"}, b"nope")
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


def unused_port() -> int:
    """A loopback port nothing listens on (bound and released), for "server down" tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- RSS / Atom -----------------------------------------------------------------------------------

RSS_20_FEED = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">
  <channel>
    <title>Loopback Crypto Wire</title>
    <link>https://wire.example/</link>
    <description>Test feed</description>
    <item>
      <title>Bitcoin rallies past $70,000 as ETF inflows surge</title>
      <link>https://Wire.Example/markets/btc-rally?utm_source=rss&amp;utm_medium=feed&amp;id=7#comments</link>
      <description>&lt;p&gt;BTC &lt;b&gt;climbed&lt;/b&gt; 5% on Monday.&lt;/p&gt;</description>
      <pubDate>Mon, 04 Mar 2024 14:30:00 +0100</pubDate>
      <guid>https://wire.example/markets/btc-rally</guid>
    </item>
    <item>
      <title>Ether slides amid exchange hack</title>
      <link>https://wire.example/markets/eth-hack</link>
      <description>Whether the ETH dip lasts is unclear.</description>
      <pubDate>Mon, 04 Mar 2024 15:00:00 GMT</pubDate>
    </item>
    <item>
      <title>Bitcoin rallies past $70,000 as ETF inflows surge</title>
      <link>https://wire.example/markets/btc-rally?id=7&amp;utm_campaign=x</link>
      <description>Duplicate of the first item with different tracking parameters.</description>
      <pubDate>Mon, 04 Mar 2024 14:31:00 GMT</pubDate>
    </item>
    <item>
      <title>Stablecoin issuer publishes attestation</title>
      <link>https://wire.example/markets/attestation</link>
    </item>
  </channel>
</rss>
"""

ATOM_FEED = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Loopback Atom Desk</title>
  <id>urn:uuid:60a76c80-d399-11d9-b93c-0003939e0af6</id>
  <updated>2024-03-04T16:00:00Z</updated>
  <entry>
    <title>Solana outage halts block production</title>
    <link href="https://atom.example/sol-outage"/>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <updated>2024-03-04T15:45:00Z</updated>
    <summary>SOL validators restarted the network.</summary>
  </entry>
  <entry>
    <title>ETHEREUM developers schedule upgrade; BTC miners watch fees</title>
    <link href="https://atom.example/eth-upgrade"/>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6b</id>
    <updated>2024-03-04T15:50:00-05:00</updated>
    <summary>No change for SOL.</summary>
  </entry>
</feed>
"""

GARBAGE_FEED = b"<html><body>502 Bad Gateway \x00\x01 <rss><item><title>half"


def feed_routes() -> dict[str, Route]:
    """``/rss.xml``, ``/atom.xml`` and a garbage ``/broken.xml`` (any other path is a 404)."""

    def serve(body: bytes, content_type: str) -> Route:
        return lambda request: (200, {"Content-Type": content_type}, body)

    return {
        "/rss.xml": serve(RSS_20_FEED, "application/rss+xml"),
        "/atom.xml": serve(ATOM_FEED, "application/atom+xml"),
        "/broken.xml": serve(GARBAGE_FEED, "application/rss+xml"),
    }


# --- CryptoPanic ----------------------------------------------------------------------------------

CRYPTOPANIC_POSTS_PATH = "/api/developer/v2/posts/"


def cryptopanic_post(
    post_id: int, title: str, codes: list[str], published_at: str, domain: str
) -> dict[str, Any]:
    """A post object as documented by the CryptoPanic developer API."""
    return {
        "kind": "news",
        "domain": domain,
        "source": {"title": domain.split(".")[0].title(), "region": "en", "domain": domain, "path": None},
        "title": title,
        "published_at": published_at,
        "slug": title.replace(" ", "-"),
        "currencies": [{"code": c, "title": c, "slug": c.lower(), "url": f"https://cryptopanic.com/news/{c}/"} for c in codes],
        "id": post_id,
        "url": f"https://cryptopanic.com/news/{post_id}/{title.replace(' ', '-')}",
        "created_at": published_at,
        "votes": {"negative": 0, "positive": 3, "important": 1, "liked": 2, "disliked": 0, "lol": 0, "toxic": 0,
                  "saved": 0, "comments": 0},
    }  # fmt: skip


@dataclass
class CryptoPanicApi:
    """State of the fake CryptoPanic API: its token, posts, page size and scripted faults."""

    token: str
    posts: list[dict[str, Any]]
    page_size: int = 2
    rate_limited_requests: int = 0  # answer this many requests with 429 before serving
    retry_after: str = "0"
    malformed: bool = False
    next_host: str | None = None  # absolute base for ``next`` links; default: this server
    served: list[int] = field(default_factory=list)

    def route(self, request: Request) -> Reply:
        if request.query.get("auth_token") != self.token:
            return json_reply(401, {"status": "Incomplete", "info": "Token not found"})
        if self.rate_limited_requests > 0:
            self.rate_limited_requests -= 1
            return json_reply(
                429,
                {"status": "Incomplete", "info": "Rate limit exceeded"},
                {"Retry-After": self.retry_after},
            )
        if self.malformed:
            return (
                200,
                {"Content-Type": "application/json"},
                b'{"count": 3, "next": null, "results": [{"id": 1,',
            )
        page = int(request.query.get("page", "1"))
        start = (page - 1) * self.page_size
        results = self.posts[start : start + self.page_size]
        self.served.append(page)
        query = {k: v for k, v in request.query.items() if k != "page"}

        def link(target: int) -> str | None:
            if target < 1 or (target - 1) * self.page_size >= len(self.posts):
                return None
            return f"{self.next_host or request.base_url}{CRYPTOPANIC_POSTS_PATH}?{urlencode({**query, 'page': target})}"

        return json_reply(
            200,
            {
                "count": len(self.posts),
                "next": link(page + 1),
                "previous": link(page - 1),
                "results": results,
            },
        )


# --- NewsAPI --------------------------------------------------------------------------------------

NEWSAPI_EVERYTHING_PATH = "/v2/everything"


def newsapi_article(
    source_name: str, title: str, url: str, published_at: str, description: str
) -> dict[str, Any]:
    """An article object as documented by NewsAPI."""
    return {
        "source": {"id": None, "name": source_name},
        "author": "A. Writer",
        "title": title,
        "description": description,
        "url": url,
        "urlToImage": None,
        "publishedAt": published_at,
        "content": description + " [+1200 chars]",
    }


@dataclass
class NewsApi:
    """State of the fake NewsAPI: the valid key and the articles it returns."""

    api_key: str
    articles: list[dict[str, Any]]

    def route(self, request: Request) -> Reply:
        if request.headers.get("x-api-key") != self.api_key:
            return json_reply(
                401,
                {
                    "status": "error",
                    "code": "apiKeyInvalid",
                    "message": "Your API key is invalid or incorrect. Check your key, or go to "
                    "https://newsapi.org to create a free API key.",
                },
            )
        if not request.query.get("q"):
            return json_reply(
                400,
                {
                    "status": "error",
                    "code": "parametersMissing",
                    "message": "Required parameters are missing.",
                },
            )
        size = int(request.query.get("pageSize", "100"))
        return json_reply(
            200, {"status": "ok", "totalResults": len(self.articles), "articles": self.articles[:size]}
        )


# --- Ollama ---------------------------------------------------------------------------------------

OLLAMA_GENERATE_PATH = "/api/generate"
_BULLISH_WORDS = ("rally", "rallies", "surge", "approval", "bullish")
_BEARISH_WORDS = ("hack", "hacked", "crash", "rekt", "bearish")


def keyword_model(headline: str) -> float:
    """The fake model's judgement: +0.8 for bullish words, -0.7 for bearish ones, 0.1 otherwise."""
    words = headline.lower().replace(",", " ").replace(".", " ").split()
    if any(w in _BEARISH_WORDS for w in words):
        return -0.7
    if any(w in _BULLISH_WORDS for w in words):
        return 0.8
    return 0.1


@dataclass
class OllamaApi:
    """The fake Ollama server. ``mode``: ``good`` | ``garbage`` | ``out_of_range`` | ``missing_model``."""

    mode: str = "good"
    model: str = "llama3.2"

    def route(self, request: Request) -> Reply:
        if request.method != "POST":
            return json_reply(405, {"error": "method not allowed"})
        try:
            body = request.json()
        except ValueError:
            return json_reply(400, {"error": "invalid JSON"})
        if body.get("model") != self.model or self.mode == "missing_model":
            return json_reply(404, {"error": f"model '{body.get('model')}' not found, try pulling it first"})
        if body.get("stream") is not False or body.get("format") != "json" or "prompt" not in body:
            return json_reply(400, {"error": "expected stream=false, format=json and a prompt"})
        headline = body["prompt"].rsplit("Headline:", 1)[-1].strip()
        if self.mode == "garbage":
            text = "Honestly it is hard to say, the market is the market!"
        elif self.mode == "out_of_range":
            text = json.dumps({"sentiment": 7})
        else:
            text = json.dumps({"sentiment": keyword_model(headline)})
        return json_reply(
            200,
            {
                "model": self.model,
                "created_at": "2024-03-04T16:00:00.000000Z",
                "response": text,
                "done": True,
                "done_reason": "stop",
                "context": [1, 2, 3],
                "total_duration": 123456,
                "load_duration": 1234,
                "prompt_eval_count": 42,
                "eval_count": 8,
            },
        )
