"""Whether a webhook URL is a safe place to send to (protection against SSRF).

A webhook URL comes from a client, and the service will POST to it from inside its own
network. Left unchecked, `https://169.254.169.254/...` would read the cloud metadata
service and `http://localhost:5432/` would probe the database. So a URL must be https,
carry no credentials or fragment, and every address its host resolves to must be
globally routable; WEBHOOK_ALLOW_PRIVATE and WEBHOOK_ALLOW_HTTP relax that for
deployments whose receivers live on a private network.

The check returns the approved address, and the sender connects to exactly that one:
resolving again at connect time would let a DNS answer change in between (rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_ALLOW_PRIVATE_HINT = "set WEBHOOK_ALLOW_PRIVATE=true to allow private targets"

# Prefixes that carry an IPv4 address in their low 32 bits (RFC 6052's NAT64): such an
# address reaches what the IPv4 address reaches, so it is judged as that address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Special-purpose networks that Python 3.11's `is_global` still calls global (newer
# Pythons agree they are not): IETF protocol assignments, the 6to4 relay anycast,
# IPv6 documentation, the deprecated site-local range and local-use NAT64.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(network)
    for network in ("192.0.0.0/24", "192.88.99.0/24", "3fff::/20", "fec0::/10", "64:ff9b:1::/48")
)


class UnsafeTarget(ValueError):
    """A webhook URL the service will not send to; the message is a sentence for the client."""


class InvalidWebhookUrl(UnsafeTarget):
    """The URL's shape is refused (scheme, host, credentials, fragment, port, characters)."""


@dataclass(frozen=True)
class Target:
    """An approved webhook target: where to connect, and what to ask for there."""

    url: str
    scheme: str
    host: str  # as in the URL (lowercased), an IPv6 literal without brackets
    port: int
    path: str  # path and '?query', at least '/'
    address: str  # the approved IP address: connect to this one, never re-resolve


# Returns the IP addresses (as strings) that (host, port) resolves to.
Resolver = Callable[[str, int], list[str]]


# How long a lookup may take. getaddrinfo has no timeout of its own, and a name whose
# nameserver never answers would otherwise hold the caller (a request thread at submit)
# for the resolver's whole retry cycle.
RESOLVE_TIMEOUT_SECONDS = 2.0


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, unique, in the resolver's order;
    UnsafeTarget if it cannot say within RESOLVE_TIMEOUT_SECONDS.

    The lookup runs on a daemon thread of its own, so a lookup that never ends is left
    behind (and holds nothing but that thread) rather than waited for."""
    answer: list[object] = []
    lookup = threading.Thread(
        target=_look_up, args=(host, port, answer), name="gen-resolve", daemon=True
    )
    lookup.start()
    lookup.join(RESOLVE_TIMEOUT_SECONDS)
    if not answer:
        raise UnsafeTarget(f"webhook host {host!r} did not resolve in time")
    found = answer[0]
    if isinstance(found, Exception):  # UnicodeError: a label IDNA refuses
        raise UnsafeTarget(f"webhook host {host!r} does not resolve") from found
    assert isinstance(found, list)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


def _look_up(host: str, port: int, answer: list[object]) -> None:
    try:
        answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError) as error:
        answer.append(error)


def parse_url(url: str, *, allow_http: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a webhook URL whose shape is acceptable.

    Raises InvalidWebhookUrl naming the problem. Messages quote the host at most, never
    the URL, which may carry a token in its query.
    """
    _check_characters(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed lazily; raises for a non-numeric or out-of-range port
    except ValueError as error:
        raise InvalidWebhookUrl(f"webhook URL is malformed ({error})") from error
    scheme = _check_scheme(parts.scheme, allow_http=allow_http)
    if "@" in parts.netloc:
        # Credentials in a URL end up in logs, and `user@` can disguise the real host.
        raise InvalidWebhookUrl("webhook URL must not contain credentials (user:password@)")
    if "#" in url:
        # A fragment is never sent to the server; accepting one hides a mistake.
        raise InvalidWebhookUrl("webhook URL must not contain a fragment (#...)")
    host = _check_host(parts.hostname)
    if port == 0:
        raise InvalidWebhookUrl("webhook URL has an invalid port (0)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or _DEFAULT_PORTS[scheme], path


def check_target(
    url: str, *, allow_http: bool, allow_private: bool, resolve: Resolver = system_resolver
) -> Target:
    """The approved Target for `url`, or UnsafeTarget saying why not.

    Every address the host resolves to must pass, not only the first: the client library
    of a receiver-controlled DNS name may otherwise be steered to the failing one.
    """
    scheme, host, port, path = parse_url(url, allow_http=allow_http)
    literal = _ip_literal(host)
    addresses = [host] if literal else _resolve(host, port, resolve)
    for address in addresses:
        _judge(host, address, literal=literal, allow_private=allow_private)
    return Target(url=url, scheme=scheme, host=host, port=port, path=path, address=addresses[0])


def _check_characters(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    # urlsplit silently deletes tabs and newlines, and other parsers split on them
    # differently: a URL with any is refused rather than guessed at.
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InvalidWebhookUrl("webhook URL contains whitespace or control characters")
    # A URI is ASCII (RFC 3986); an IRI's other characters have an ASCII form.
    if not url.isascii():
        raise InvalidWebhookUrl(
            "webhook URL must be ASCII: write an international host name in its xn-- "
            "(punycode) form and percent-encode other characters"
        )


def _check_scheme(scheme: str, *, allow_http: bool) -> str:
    if scheme == "https" or (scheme == "http" and allow_http):
        return scheme
    if scheme == "http":
        raise InvalidWebhookUrl(
            "webhook URL must use https; set WEBHOOK_ALLOW_HTTP=true to allow plain http"
        )
    if not scheme:
        raise InvalidWebhookUrl("webhook URL must be absolute and use https")
    raise InvalidWebhookUrl(f"webhook URL must use https, not {scheme!r}")


def _check_host(host: str | None) -> str:
    if not host:
        raise InvalidWebhookUrl("webhook URL has no host")
    if _ip_literal(host) or _is_host_name(host):
        return host
    raise InvalidWebhookUrl(f"webhook host {host!r} is not a valid host name")


def _is_host_name(host: str) -> bool:
    """DNS name syntax: labels of 1-63 letters, digits, '-' or '_'; 253 characters in all.

    Anything else (a '%', a stray ':') would reach the resolver with a meaning of its own.
    """
    name = host.removesuffix(".")
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(0 < len(label) <= 63 for label in labels)
        and set(name) <= _HOST_CHARACTERS | {"."}
    )


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int, resolve: Resolver) -> list[str]:
    try:
        addresses = resolve(host, port)
    except OSError as error:  # gaierror, a timeout: the host cannot be reached by name
        raise UnsafeTarget(f"webhook host {host!r} does not resolve") from error
    if not addresses:
        raise UnsafeTarget(f"webhook host {host!r} does not resolve")
    return addresses


def _judge(host: str, address: str, *, literal: bool, allow_private: bool) -> None:
    """Raise UnsafeTarget if `host` may not be sent to because it resolved to `address`."""
    try:
        judged = _embedded_ipv4(ipaddress.ip_address(address))
    except ValueError as error:
        raise UnsafeTarget(f"webhook host {host!r} resolves to an invalid address") from error
    # The address a name resolves to is not repeated to the client: that would let anyone
    # read this network's private DNS through the error messages.
    where = f"webhook host {host!r} " + ("is" if literal else "resolves to")
    # Connecting to the unspecified address reaches this very machine; no setting allows
    # it. Link-local addresses are where cloud metadata services answer (169.254.169.254),
    # and multicast is no receiver: WEBHOOK_ALLOW_PRIVATE opens neither.
    if judged.is_unspecified:
        raise UnsafeTarget(f"{where} the unspecified address, which is never a webhook target")
    if judged.is_link_local or judged.is_multicast:
        raise UnsafeTarget(f"{where} {_why_not_global(judged)}, which is never a webhook target")
    reason = None if allow_private else _why_not_global(judged)
    if reason:
        raise UnsafeTarget(f"{where} {reason}; {_ALLOW_PRIVATE_HINT}")


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), else itself.

    `::ffff:127.0.0.1` connects to the loopback interface, yet Python judges its IPv6 form
    by different rules; judging the IPv4 address inside closes that gap.
    """
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _why_not_global(address: IPAddress) -> str | None:
    """Why `address` is no public target, as words for the client; None if it is one."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives here)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_reserved or any(address in n for n in _NOT_GLOBAL):
        return "an address that is not globally routable"
    return None
