"""The SSRF guard: hostile URL forms are judged by the address they reach, never by how they
look; the allow-list opens exactly what it names."""
from __future__ import annotations

import ipaddress
import pickle

import pytest

from es_metric.config import Settings
from es_metric.errors import ConfigError, ImageError
from es_metric.ingest.fetch import resolve
from es_metric.urlguard import AllowList, check_address, is_url, not_public, parse_url

pytestmark = pytest.mark.security

HOSTILE = [
    "http://127.0.0.1/", "http://localhost/", "http://127.1/", "http://2130706433/",
    "http://0177.0.0.1/", "http://0x7f.0.0.1/", "http://0/", "http://0.0.0.0/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/", "http://[::]/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/", "http://[fe80::1]/", "http://10.0.0.1/", "http://192.168.1.1:8080/",
    "http://172.16.0.1/", "http://100.64.0.1/", "https://[fd00:ec2::254]/", "http://224.0.0.1/",
    "HTTP://127.0.0.1./",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_private_loopback_link_local_and_metadata_addresses_are_refused(url):
    with pytest.raises(ImageError) as err:
        resolve(parse_url(url), AllowList())
    assert err.value.reason == "url_refused" and "ESM_URL_ALLOW" in str(err.value)


@pytest.mark.parametrize("url", ["http://good@127.0.0.1/", "http://good.example@169.254.169.254/",
                                 "http://user:pw@example.com/x.jpg", "file:///etc/passwd",
                                 "ftp://example.com/a.jpg", "gopher://127.0.0.1:6379/_INFO",
                                 "http:///nohost", "http://[::1/", "http://exa mple.com/"])
def test_user_info_other_schemes_and_broken_urls_are_refused_before_any_lookup(url):
    with pytest.raises(ImageError) as err:
        parse_url(url)
    assert err.value.reason == "url_refused"


def test_public_addresses_pass_and_embedded_ipv4_is_judged_as_ipv4():
    assert not_public(ipaddress.ip_address("93.184.215.14")) is None
    assert not_public(ipaddress.ip_address("2606:4700::6810:84e5")) is None
    assert not_public(ipaddress.ip_address("::ffff:127.0.0.1")) == "loopback"
    assert not_public(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) == "cloud metadata"
    assert not_public(ipaddress.ip_address("169.254.169.254")) == "cloud metadata"
    assert not_public(ipaddress.ip_address("fe80::1")) == "link-local"
    assert not_public(ipaddress.ip_address("0.0.0.0")) == "unspecified"


def test_allow_list_opens_exactly_the_named_host_port_or_network():
    allow = AllowList.parse("127.0.0.1:8080, media.internal ,10.0.0.0/8,[::1]:9000")
    t = parse_url("http://127.0.0.1:8080/a.jpg")
    check_address(t, ipaddress.ip_address("127.0.0.1"), allow)           # allowed
    with pytest.raises(ImageError):                                      # other port: refused
        check_address(parse_url("http://127.0.0.1:8081/"), ipaddress.ip_address("127.0.0.1"), allow)
    # the decimal form reaches the same allowed address and port
    assert resolve(parse_url("http://2130706433:8080/"), allow) == ipaddress.ip_address("127.0.0.1")
    check_address(parse_url("http://media.internal/x"), ipaddress.ip_address("192.168.3.4"), allow)
    check_address(parse_url("http://a.b/x"), ipaddress.ip_address("10.9.8.7"), allow)
    check_address(parse_url("http://[::1]:9000/"), ipaddress.ip_address("::1"), allow)
    with pytest.raises(ImageError):   # a name allow-listed does not open the metadata address
        check_address(parse_url("http://other.internal/"), ipaddress.ip_address("169.254.169.254"), allow)


@pytest.mark.parametrize("bad", ["http://x", "10.0.0.0/33", "a b", "host:99999", "-x"])
def test_a_malformed_allow_list_is_a_config_error_when_settings_are_read(bad):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"ESM_URL_ALLOW": bad})
    assert "ESM_URL_ALLOW" in str(err.value)


def test_settings_carry_the_allow_list_to_the_worker_and_errors_pickle():
    s = Settings.from_env({"ESM_URL_ALLOW": "127.0.0.1:8080,10.0.0.0/8", "ESM_URL_TIMEOUT": "3"})
    assert s.url_allow == ("127.0.0.1:8080", "10.0.0.0/8") and s.url_timeout == 3
    assert Settings.from_env(s.as_env()).url_allow == s.url_allow
    err = pickle.loads(pickle.dumps(ImageError("refused", reason="url_refused", hint="h")))
    assert err.reason == "url_refused" and err.hint == "h"
    assert is_url("HTTPS://x/a.jpg") and not is_url("/data/http://x") and not is_url(["http://x"])


@pytest.mark.parametrize("url", ["http://example.com/a\x01b.jpg", "http://example.com/a.jpg?x=\x00",
                                 "http://example.com/a\x7f.jpg", "http://example.com/a\nb.jpg",
                                 "http://exa\rmple.com/a.jpg", "http://example.com/\ta.jpg",
                                 "http://example.com/a\x85.jpg", "\x00http://example.com/a.jpg"])
def test_control_characters_in_a_url_are_refused_as_url_refused(url):
    """Issue 24, finding 13: urlsplit drops tab, CR and LF silently and httpx raised InvalidURL on
    the others, which the worker recorded as ``decode_error``."""
    with pytest.raises(ImageError) as err:
        parse_url(url)
    assert err.value.reason == "url_refused" and "control character" in err.value.message


@pytest.mark.parametrize("url, text", [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://localhost/", "localhost resolves to a loopback address"),
    ("http://2130706433/x.jpg", "2130706433 resolves to a loopback address"),
])
def test_refusals_read_well_and_never_say_where_a_name_resolves(url, text):
    """Issue 24, finding 13: the message read "a a cloud metadata address address" and told a
    key holder the address an internal name resolves to."""
    with pytest.raises(ImageError) as err:
        resolve(parse_url(url), AllowList())
    assert err.value.message == f"URL {url!r}: {text}; refused"
    assert err.value.hint == "add the host, host:port or network to ESM_URL_ALLOW if it is trusted"
    if "resolves" in text:
        assert "127.0.0.1" not in str(err.value)
