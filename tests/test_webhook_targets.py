"""Which webhook URLs the service will send to. No network: every test injects a resolver."""

from __future__ import annotations

import socket
import threading

import pytest

from app.generation.notify.targets import (
    InvalidWebhookUrl,
    Target,
    UnsafeTarget,
    check_target,
    parse_url,
    system_resolver,
)

PUBLIC = "93.184.216.34"


def answers(*addresses: str):
    """A resolver that answers every name with `addresses`."""

    def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


def no_lookups(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} should not have been resolved")


def check(url: str, *, allow_http=False, allow_private=False, resolve=no_lookups) -> Target:
    return check_target(url, allow_http=allow_http, allow_private=allow_private, resolve=resolve)


LOOPBACK = "a loopback address"
PRIVATE = "a private address"
LINK_LOCAL = "a link-local address (cloud metadata lives here)"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/", LOOPBACK),
        ("https://[::1]/", LOOPBACK),
        ("https://[::ffff:127.0.0.1]/", LOOPBACK),
        ("https://10.1.2.3/", PRIVATE),
        ("https://192.168.0.1/", PRIVATE),
        ("https://172.16.0.1", PRIVATE),
        ("https://[fc00::1]/", PRIVATE),
        ("https://169.254.169.254/latest/meta-data", LINK_LOCAL),
        ("https://[fe80::1]/", LINK_LOCAL),
        ("https://224.0.0.1/", "a multicast address"),
        ("https://100.64.0.1/", "an address that is not globally routable"),
    ],
)
def test_an_address_that_is_not_public_is_refused_and_named(url, reason):
    with pytest.raises(UnsafeTarget) as refused:
        check(url)
    message = str(refused.value)
    assert f"is {reason}" in message
    # Link-local (metadata) and multicast stay refused whatever WEBHOOK_ALLOW_PRIVATE says.
    never = "link-local" in reason or "multicast" in reason
    assert ("never a webhook target" in message) is never
    assert ("set WEBHOOK_ALLOW_PRIVATE=true" in message) is not never


@pytest.mark.parametrize(
    "host",
    [
        "240.0.0.1",  # reserved
        "192.0.0.8",  # IETF protocol assignments, which Python 3.11 calls global
        "[3fff::1]",  # IPv6 documentation
        "[fec0::1]",  # deprecated site-local
        "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[::7f00:1]",  # IPv4-compatible (deprecated) 127.0.0.1
    ],
)
def test_special_purpose_and_embedded_private_addresses_are_refused(host):
    with pytest.raises(UnsafeTarget, match="WEBHOOK_ALLOW_PRIVATE"):
        check(f"https://{host}/")


def test_a_nat64_address_of_a_public_ipv4_address_is_allowed():
    assert check("https://[64:ff9b::5db8:d822]/").address == "64:ff9b::5db8:d822"


def test_plain_http_to_loopback_is_refused_even_when_http_is_allowed():
    with pytest.raises(UnsafeTarget, match=LOOPBACK):
        check("http://127.0.0.1/", allow_http=True)


def test_a_name_resolving_to_loopback_is_refused_without_repeating_the_address():
    """The resolved address is not echoed: errors must not read out private DNS."""
    with pytest.raises(UnsafeTarget) as refused:
        check("https://localhost/", resolve=answers("127.0.0.1"))
    assert str(refused.value) == (
        "webhook host 'localhost' resolves to a loopback address; "
        "set WEBHOOK_ALLOW_PRIVATE=true to allow private targets"
    )


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "224.0.0.1"])
def test_metadata_link_local_and_multicast_stay_refused_with_allow_private(address):
    with pytest.raises(UnsafeTarget, match="never a webhook target"):
        check("https://meta.example/", allow_private=True, resolve=answers(address))


def test_a_lookup_that_never_ends_is_given_up_on(monkeypatch):
    """A nameserver that never answers costs a submit RESOLVE_TIMEOUT_SECONDS, no more."""
    import time

    from app.generation.notify import targets

    never = threading.Event()
    monkeypatch.setattr(targets.socket, "getaddrinfo", lambda *args, **kwargs: never.wait(10))
    monkeypatch.setattr(targets, "RESOLVE_TIMEOUT_SECONDS", 0.2)
    started = time.monotonic()
    with pytest.raises(UnsafeTarget, match="did not resolve in time"):
        targets.system_resolver("slow.example", 443)
    assert time.monotonic() - started < 1
    never.set()


@pytest.mark.parametrize("private", ["10.0.0.7", "::ffff:192.168.1.1", "fd00::7"])
def test_a_name_is_refused_if_any_of_its_addresses_is_private(private):
    with pytest.raises(UnsafeTarget, match=PRIVATE):
        check("https://hooks.example.com/", resolve=answers(PUBLIC, private))


def test_a_public_name_is_allowed_and_the_approved_address_returned():
    target = check("https://Hooks.Example.com/in/job?token=abc", resolve=answers(PUBLIC))
    assert target == Target(
        url="https://Hooks.Example.com/in/job?token=abc",
        scheme="https",
        host="hooks.example.com",
        port=443,
        path="/in/job?token=abc",
        address=PUBLIC,
    )


def test_the_first_address_is_the_one_to_connect_to():
    target = check("https://hooks.example.com:8443", resolve=answers(PUBLIC, "2606:2800:220:1::1"))
    assert (target.address, target.port, target.path) == (PUBLIC, 8443, "/")


def test_the_resolver_is_asked_for_the_host_and_port():
    asked = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [PUBLIC]

    check("https://hooks.example.com:8443/x", resolve=resolve)
    assert asked == [("hooks.example.com", 8443)]


def test_a_public_ipv6_literal_is_allowed_without_brackets():
    target = check("https://[2606:2800:220:1::1]:8443/x")
    assert (target.host, target.address, target.port) == ("2606:2800:220:1::1",) * 2 + (8443,)


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/", "https://10.1.2.3/", "https://[::1]:8080/", "https://[fd00::1]/"]
)
def test_allow_private_lets_private_targets_through(url):
    assert check(url, allow_private=True).url == url


def test_allow_private_lets_a_name_resolving_to_loopback_through():
    target = check("https://localhost:9000/", allow_private=True, resolve=answers("127.0.0.1"))
    assert target.address == "127.0.0.1"


@pytest.mark.parametrize("url", ["https://0.0.0.0/", "https://[::]/", "https://[::ffff:0.0.0.0]/"])
def test_the_unspecified_address_is_refused_even_with_allow_private(url):
    with pytest.raises(UnsafeTarget, match="unspecified"):
        check(url, allow_private=True)


def test_a_name_resolving_to_the_unspecified_address_is_refused_even_with_allow_private():
    with pytest.raises(UnsafeTarget, match="unspecified"):
        check("https://zero.example/", allow_private=True, resolve=answers("0.0.0.0"))


def test_plain_http_is_refused_unless_allowed():
    with pytest.raises(InvalidWebhookUrl, match="WEBHOOK_ALLOW_HTTP"):
        check("http://hooks.example.com/", resolve=answers(PUBLIC))
    target = check("http://hooks.example.com/", allow_http=True, resolve=answers(PUBLIC))
    assert (target.scheme, target.port) == ("http", 80)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example.com/", "https"),
        ("hooks.example.com/in", "absolute"),
        ("https://user:pass@hooks.example.com/", "credentials"),
        ("https://token@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/in#frag", "fragment"),
        ("https://hooks.example.com/in#", "fragment"),
        ("https:///in", "no host"),
        ("https://:443/in", "no host"),
        ("https://hooks.example.com/" + "a" * 2048, "longer than 2048"),
        ("https://hooks.example.com:99999/", "malformed"),
        ("https://hooks.example.com:http/", "malformed"),
        ("https://hooks.example.com:0/", "port"),
        ("https://[::1/", "malformed"),
        ("https://hooks.example.com/in put", "whitespace"),
        ("https://hooks.example.com/in\tput", "whitespace"),
        ("https://hooks.exam\nple.com/", "whitespace"),
        ("https://hooks.example.com/\x00", "control"),
        ("https://hooks%2eexample.com/", "not a valid host name"),
        ("https://bücher.example/", "xn--"),
        ("https://" + "a" * 64 + ".example/", "not a valid host name"),
    ],
)
def test_a_malformed_url_is_refused_as_invalid(url, problem):
    with pytest.raises(InvalidWebhookUrl, match=problem):
        check(url, allow_http=True, allow_private=True)


def test_refusals_never_echo_the_url_which_may_carry_a_token():
    with pytest.raises(InvalidWebhookUrl) as refused:
        check("https://user:s3cret@hooks.example.com/?token=t0ken")
    assert "s3cret" not in str(refused.value) and "t0ken" not in str(refused.value)


def test_parse_url_keeps_the_query_and_defaults_the_path_and_port():
    assert parse_url("https://hooks.example.com?a=1&b=2", allow_http=False) == (
        "https",
        "hooks.example.com",
        443,
        "/?a=1&b=2",
    )


@pytest.mark.parametrize(
    "failure", [socket.gaierror(socket.EAI_NONAME, "Name or service not known"), TimeoutError()]
)
def test_a_resolver_that_fails_gives_a_clear_refusal(failure):
    def resolve(host: str, port: int) -> list[str]:
        raise failure

    with pytest.raises(UnsafeTarget, match="webhook host 'gone.example' does not resolve"):
        check("https://gone.example/", resolve=resolve)


def test_a_host_with_no_addresses_is_refused():
    with pytest.raises(UnsafeTarget, match="does not resolve"):
        check("https://empty.example/", resolve=answers())


def test_a_resolver_answering_nonsense_is_refused():
    with pytest.raises(UnsafeTarget, match="invalid address"):
        check("https://odd.example/", resolve=answers("not-an-address"))


def test_the_system_resolver_turns_a_lookup_failure_into_a_refusal(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(UnsafeTarget, match="webhook host 'gone.example' does not resolve"):
        system_resolver("gone.example", 443)


def test_the_system_resolver_returns_unique_addresses_in_order(monkeypatch):
    def found(host, port, *, type):
        assert type == socket.SOCK_STREAM
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:220:1::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:220:1::1", port, 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", found)
    assert system_resolver("hooks.example.com", 443) == ["2606:2800:220:1::1", PUBLIC]
