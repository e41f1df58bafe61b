"""Keep secrets out of logs and error messages.

:func:`redact` masks, in any text: secrets registered with :func:`register_secret` (API tokens, the
alert webhook URL), values of secret-looking query parameters (``auth_token=``, ``apiKey=``, ...),
passwords in URLs (``user:password@``) and ``Authorization``/``X-Api-Key`` header values.
:class:`RedactingFilter` applies it to every record of a logger (message, arguments and traceback);
:func:`install_log_redaction` attaches it to httpx's and httpcore's loggers (their request lines carry
full URLs) and :func:`get_logger` returns a project logger that has it.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit

MASK = "***"
_SECRET_PARAMETER = re.compile(
    r"(?i)((?<![a-z0-9_])(?:auth_token|access_token|token|api_?key|apikey|secret|password|passwd|signature|key)=)"
    r"[^&\s'\"<>]+"
)
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+@")
_SECRET_HEADER = re.compile(
    r"(?i)((?:authorization|x-api-key|x-mbx-apikey)['\"]?\s*[:=]\s*['\"]?)[^'\",\s}]+"
)
_MIN_SECRET_LENGTH = 4
_secrets: set[str] = set()
_lock = threading.Lock()
_HTTP_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2")


def register_secret(value: str | None) -> None:
    """Mask ``value`` (a token, a webhook URL and its path) wherever it appears from now on."""
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets.add(value)
        parts = urlsplit(value)
        if parts.scheme and parts.netloc:
            for piece in (parts.path.strip("/"), parts.query):
                if len(piece) >= _MIN_SECRET_LENGTH:
                    _secrets.add(piece)


def redact(text: str) -> str:
    """``text`` with every known or secret-looking value replaced by ``***``."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    text = _SECRET_PARAMETER.sub(rf"\1{MASK}", text)
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    return _SECRET_HEADER.sub(rf"\1{MASK}", text)


def redact_url(url: str) -> str:
    """``scheme://host[:port]/***``: enough to tell which endpoint failed, nothing of its path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/{MASK}" if parts.scheme else MASK


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and formatted traceback) through :func:`redact`; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def _attach(logger: logging.Logger) -> logging.Logger:
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(_FILTER)
    return logger


def install_log_redaction() -> None:
    """Attach the redacting filter to httpx's and httpcore's loggers (idempotent)."""
    for name in _HTTP_LOGGERS:
        _attach(logging.getLogger(name))


def get_logger(name: str) -> logging.Logger:
    """The project logger ``name`` with the redacting filter (and httpx's loggers redacted too)."""
    install_log_redaction()
    return _attach(logging.getLogger(name))
