"""Which hosts an image URL may reach (pure, no network): the SSRF guard's rules.

A URL names a host; what is checked is every address that host resolves to (the fetcher then
connects to exactly that address, so a second DNS answer cannot swap it: no DNS rebinding).
Public addresses are allowed; private, loopback, link-local (169.254.169.254, the cloud metadata
service), unspecified, multicast and reserved ones are refused unless ``ESM_URL_ALLOW`` names the
host, the host and port, or a network holding the address. IPv4 addresses embedded in IPv6
(``::ffff:127.0.0.1``, 6to4, NAT64) are judged as the IPv4 address they carry.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TypeGuard
from urllib.parse import urlsplit

from .errors import ConfigError, ImageError, shown

log = logging.getLogger(__name__)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))


def is_url(ref: object) -> TypeGuard[str]:
    """True for a string that names an http(s) URL (anything else is a file path)."""
    return isinstance(ref, str) and ref[:8].lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class Target:
    """A parsed URL: scheme, host as written (lower case, no brackets), port, and the request
    target (path and query)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> Target:
    """The URL's parts; ImageError(url_refused) for control characters, another scheme, user
    info, or no host. Control characters are refused, not cleaned: urlsplit drops tab, CR and LF
    silently, so the URL fetched would not be the URL given."""
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        raise ImageError(f"URL {shown(url)} holds a control character", reason="url_refused")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise ImageError(f"URL {shown(url)} cannot be read: {exc}", reason="url_refused") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ImageError(f"URL {shown(url)}: only http and https are fetched", reason="url_refused")
    if "@" in parts.netloc:  # http://good@127.0.0.1/ names 127.0.0.1, whatever it looks like
        raise ImageError(f"URL {shown(url)}: user info in URLs is refused", reason="url_refused")
    if not host or any(c in host for c in "\x00\\ %"):
        raise ImageError(f"URL {shown(url)} names no usable host", reason="url_refused")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, scheme, host.lower().rstrip("."), port or DEFAULT_PORTS[scheme], path)


def embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else ``ip`` itself."""
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def not_public(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, as an adjective ("loopback"; None when it is
    one)."""
    ip = embedded_ipv4(ip)
    checks = (("cloud metadata", ip in METADATA), ("loopback", ip.is_loopback),
              ("link-local", ip.is_link_local), ("unspecified", ip.is_unspecified),
              ("multicast", ip.is_multicast), ("private", ip.is_private),
              ("reserved", ip.is_reserved or not ip.is_global))
    return next((why for why, hit in checks if hit), None)


@dataclass(frozen=True)
class AllowList:
    """``ESM_URL_ALLOW``: hosts, host:port pairs and CIDR networks that may be private."""

    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str | tuple[str, ...] | None) -> "AllowList":
        entries = text.split(",") if isinstance(text, str) else list(text or ())
        hosts, host_ports, networks = set(), set(), []
        for raw in (e.strip() for e in entries):
            if not raw:
                continue
            try:
                networks.append(ipaddress.ip_network(raw.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host, sep, port = raw.rpartition(":")
            if sep and port.isdigit() and 0 < int(port) < 65536 and host and "/" not in host:
                host_ports.add((_host_key(host), int(port)))
            elif _plain_host(raw):
                hosts.add(_host_key(raw))
            else:
                raise ConfigError(f"ESM_URL_ALLOW entry {shown(raw)} is not a host, host:port or CIDR",
                                  hint="e.g. ESM_URL_ALLOW=media.internal,127.0.0.1:8080,10.0.0.0/8")
        return cls(frozenset(hosts), frozenset(host_ports), tuple(networks))

    def allows(self, host: str, port: int, ip: IPAddress) -> bool:
        """True when the user allow-listed this host, host:port, or a network holding ``ip``."""
        names = {host, str(ip), str(embedded_ipv4(ip))}
        return (bool(names & self.hosts) or any((n, port) in self.host_ports for n in names)
                or any(a in net for a in {ip, embedded_ipv4(ip)} for net in self.networks
                       if a.version == net.version))


def _host_key(host: str) -> str:
    host = host.strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _plain_host(text: str) -> bool:
    return all(c.isalnum() or c in "-._" for c in text) and not text.startswith(("-", "."))


def check_address(target: Target, ip: IPAddress, allow: AllowList) -> None:
    """ImageError(url_refused) unless ``ip`` is public or allow-listed for ``target``. The
    message names the kind of address, never the address a name resolves to (a key holder of
    the API would learn the internal network from it); the log has it, for the operator."""
    why = not_public(ip)
    if why and not allow.allows(target.host, target.port, ip):
        log.info("URL %s refused: %s resolves to %s (%s)", shown(target.url), target.host, ip, why)
        verb = "is" if _host_key(target.host) == str(ip) else "resolves to"
        article = "an" if why[0] in "aeiou" else "a"
        raise ImageError(f"URL {shown(target.url)}: {target.host} {verb} {article} {why} address; "
                         "refused", reason="url_refused",
                         hint="add the host, host:port or network to ESM_URL_ALLOW if it is trusted")
