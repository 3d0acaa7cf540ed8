"""Secrets out of every output: one function masks the password in a URL, another scrubs
URLs and known secrets (passwords, API keys) from any text, and a logging filter applies it
to every log record, tracebacks included.

``redis://:hunter2@host:6379/0`` becomes ``redis://:***@host:6379/0``; scheme, user name,
host, port and path stay, so a message still says where it tried to connect.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable
from urllib.parse import unquote, urlsplit

__all__ = ["install_log_filter", "MASK", "redact_text", "redact_url", "RedactingFilter",
           "url_password"]

MASK = "***"
# query parameters that carry credentials (redis-py reads ?password=, some proxies ?api_key=)
_SECRET_PARAMS = r"password|passwd|pass|pwd|api_key|apikey|api-key|token|access_token|secret"
_QUERY_SECRET = re.compile(rf"(?i)([?&;](?:{_SECRET_PARAMS})=)[^&;#\s]*")
# user:password@ in any URL inside free text (user names are kept, passwords are not)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/@\s:]*):[^/@\s]*@")


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***``."""
    if not url:
        return url
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # unparsable: say nothing rather than leak
        return MASK
    userinfo, at, _host = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        url = url.replace(netloc, f"{user}:{MASK}@{_host}", 1)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, url)


def url_password(url: str | None) -> str | None:
    """The password a URL carries (user info or a secret query parameter), if any."""
    if not url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    if password:
        return password
    found = _QUERY_SECRET.search(url)
    return url[found.end(1):found.end()] if found and found.end() > found.end(1) else None


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with URL passwords masked and every known secret (raw and URL-decoded) replaced."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    for secret in _variants(secrets):
        text = text.replace(secret, MASK)
    return text


def _variants(secrets: Iterable[str | None]) -> list[str]:
    out = {v for s in secrets if s for v in (s, unquote(s))}
    return sorted((s for s in out if len(s) >= 3), key=len, reverse=True)  # longest first


class RedactingFilter(logging.Filter):
    """Scrubs secrets from a record's message and traceback before any handler formats it."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug; leave it to logging
            return True
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True


def install_log_filter(secrets: Iterable[str | None], logger: logging.Logger | None = None) -> None:
    """Scrub ``secrets`` in every handler of ``logger`` (the root logger by default)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        found = [f for f in handler.filters if isinstance(f, RedactingFilter)]
        if found:
            found[0].secrets = tuple(dict.fromkeys((*found[0].secrets, *(s for s in secrets if s))))
        else:
            handler.addFilter(RedactingFilter(secrets))
