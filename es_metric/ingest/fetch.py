"""Fetch image URLs for the workers and the query path, safely (httpx).

Every hop (the URL, then each redirect) is parsed, its host resolved once, and every address
checked by the SSRF guard (es_metric.urlguard); the request then goes to that very address with
the name in the Host header and TLS SNI, so the address checked is the address connected to.
Timeouts for connect and read, a deadline for the whole fetch (a server trickling bytes),
a byte limit enforced while streaming, a bounded number of redirects, retries with backoff for
5xx answers, timeouts and refused connections (the transient class of ingest.outcomes), and at
most ``url_per_host`` fetches at a time per host and process. The bytes are then sniffed by the
safe decoder like any file: the Content-Type is never trusted.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urljoin

import httpx

from ..config import Settings
from ..errors import ImageError, shown
from ..images import DecodeLimits, content_hash, decode, load_image, read_bytes
from ..paths import confine
from ..urlguard import AllowList, IPAddress, Target, check_address, is_url, parse_url
from .context import current

log = logging.getLogger(__name__)

REDIRECTS = frozenset({301, 302, 303, 307, 308})
GONE = frozenset({404, 410})
# Answers worth another try (the same set the worker path retries for Elasticsearch)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    allow: AllowList = AllowList()
    max_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 30.0          # the whole fetch: every hop and retry
    max_redirects: int = 5
    retries: int = 3                # tries after the first, for transient failures
    backoff: float = 0.5            # seconds, doubled each retry
    per_host: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> "FetchPolicy":
        return cls(AllowList.parse(settings.url_allow), settings.max_image_bytes,
                   read_timeout=settings.url_timeout, deadline=3 * settings.url_timeout,
                   per_host=settings.url_per_host)


class _Transient(Exception):
    """A failure worth another try (5xx, timeout, refused connection)."""


def resolve(target: Target, allow: AllowList) -> IPAddress:
    """The address to connect to: the host resolved once, every address guarded."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise ImageError(f"URL {shown(target.url)}: host {target.host!r} cannot be resolved "
                         f"({exc})", reason="url_unresolved") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    for ip in addresses:
        check_address(target, ip, allow)
    return addresses[0]


def fetch(url: str, policy: FetchPolicy) -> bytes:
    """The bytes at ``url`` after at most ``policy.max_redirects`` checked redirects;
    ImageError with a reason otherwise (url_refused, url_not_found, url_http_error,
    url_unavailable, url_timeout, too_large, too_many_redirects, empty_file)."""
    deadline = time.monotonic() + policy.deadline
    for _hop in range(policy.max_redirects + 1):
        target = parse_url(url)
        ip = resolve(target, policy.allow)
        answer = _with_retries(target, ip, policy, deadline)
        if isinstance(answer, bytes):
            return answer
        url = answer
    raise ImageError(f"URL {shown(target.url)}: more than {policy.max_redirects} redirects",
                     reason="too_many_redirects")


def _with_retries(target: Target, ip: IPAddress, policy: FetchPolicy, deadline: float) -> bytes | str:
    for attempt in range(policy.retries + 1):
        try:
            with current().host_slot(target.host, policy.per_host):
                return _get(target, ip, policy, deadline)
        except _Transient as exc:
            wait = policy.backoff * 2 ** attempt
            if attempt == policy.retries or time.monotonic() + wait > deadline:
                reason = "url_timeout" if "timed out" in str(exc) else "url_unavailable"
                raise ImageError(f"URL {shown(target.url)}: {exc} (after {attempt + 1} tries)",
                                 reason=reason) from None
            log.info("fetch %s: %s; retry in %.1f s", target.url, exc, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _request_url(target: Target, ip: IPAddress) -> str:
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{host}:{target.port}{target.path}".replace("http", target.scheme, 1)


def _get(target: Target, ip: IPAddress, policy: FetchPolicy, deadline: float) -> bytes | str:
    """One GET to ``ip``: the body, or the next URL of a redirect."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ImageError(f"URL {shown(target.url)}: no answer within {policy.deadline:.0f} s",
                         reason="url_timeout")
    timeout = httpx.Timeout(min(policy.read_timeout, left), connect=min(policy.connect_timeout, left))
    default_port = target.port == {"http": 80, "https": 443}[target.scheme]
    headers = {"Host": target.host if default_port else f"{target.host}:{target.port}"}
    if ":" in target.host:
        headers["Host"] = f"[{target.host}]" + ("" if default_port else f":{target.port}")
    try:
        with current().http().stream("GET", _request_url(target, ip), headers=headers, timeout=timeout,
                              extensions={"sni_hostname": target.host}) as resp:
            return _answer(target, resp, policy, deadline)
    except httpx.TimeoutException:
        raise _Transient("timed out") from None
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        why = str(exc).replace(str(ip), target.host) or type(exc).__name__  # never the address
        raise _Transient(f"connection failed ({why})") from None


def _answer(target: Target, resp: httpx.Response, policy: FetchPolicy, deadline: float) -> bytes | str:
    status = resp.status_code
    if status in REDIRECTS and resp.headers.get("location"):
        return urljoin(target.url, resp.headers["location"])
    if status in GONE:
        raise ImageError(f"URL {shown(target.url)}: HTTP {status}", reason="url_not_found")
    if status in TRANSIENT_STATUS:
        raise _Transient(f"HTTP {status}")
    if status != 200:
        raise ImageError(f"URL {shown(target.url)}: HTTP {status}", reason="url_http_error")
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise ImageError(f"URL {shown(target.url)}: {declared} bytes is over the "
                         f"{policy.max_bytes}-byte limit", reason="too_large")
    data = bytearray()
    for chunk in resp.iter_raw(CHUNK):
        data += chunk
        if len(data) > policy.max_bytes:
            raise ImageError(f"URL {shown(target.url)}: over the {policy.max_bytes}-byte limit",
                             reason="too_large")
        if time.monotonic() > deadline:
            raise ImageError(f"URL {shown(target.url)}: not complete within {policy.deadline:.0f} s",
                             reason="url_timeout")
    if not data:
        raise ImageError(f"URL {shown(target.url)}: empty body", reason="empty_file")
    return bytes(data)


def read_ref(ref: str, settings: Settings, limits: DecodeLimits | None = None) -> bytes:
    """The bytes of a query image given as a path (read by the caller's own rights: the CLI)
    or an http(s) URL (fetched under the settings' URL policy)."""
    limits = limits or DecodeLimits(settings.max_image_pixels, settings.max_image_bytes)
    if is_url(ref):
        return fetch(ref, replace(FetchPolicy.from_settings(settings), max_bytes=limits.max_bytes))
    return read_bytes(ref, limits)


def open_image(ref: str, limits: DecodeLimits, roots: tuple[Path, ...], policy: FetchPolicy | None,
               draft: int | None = None):
    """(RGB image, sha256 of the bytes) for a worker item's reference: an http(s) URL fetched
    under ``policy``, or a file path confined to ``roots``; ImageError/PathRefused otherwise."""
    if not is_url(ref):
        return load_image(confine(ref, Path("/"), roots), limits, draft=draft)
    if policy is None:
        raise ImageError(f"URL {shown(ref)}: image URLs are not fetched here", reason="url_refused")
    data = fetch(ref, replace(policy, max_bytes=min(policy.max_bytes, limits.max_bytes)))
    return decode(data, limits, draft), content_hash(data)


def fetch_query_url(url: str, settings: Settings, limits: DecodeLimits) -> bytes:
    """A query image named by URL in an HTTP request: an http(s) URL only (a request never
    names a file of the server), fetched under the settings' URL policy."""
    if not is_url(url):
        raise ImageError(f"image_url {shown(url)} is not an http(s) URL", reason="url_refused")
    return read_ref(url, settings, limits)
