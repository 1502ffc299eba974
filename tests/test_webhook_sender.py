"""One webhook attempt against real loopback servers: over TLS to the address that was
checked while presenting the host's name (SNI, Host, certificate), and the limits on what
is read back."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from app.generation.notify.sender import SNIPPET_BYTES, attempt_deadline, post
from app.generation.notify.targets import Target

HOST = "hooks.example"


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted(authority: trustme.CA, tmp_path, monkeypatch) -> None:
    """The test CA is the only one OpenSSL trusts (as a real one would be)."""
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


class Seen:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.server_names: list[str | None] = []


@contextmanager
def https_server(
    authority: trustme.CA, status: int = 204, body: bytes = b"", family: int = socket.AF_INET
) -> Iterator[tuple[int, Seen]]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.hosts.append(self.headers["Host"])
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Quiet."""

    class Server(ThreadingHTTPServer):
        address_family = family

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(HOST).configure_cert(context)
    context.sni_callback = lambda sock, name, ctx: seen.server_names.append(name)
    loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    server = Server((loopback, 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def target(host: str, port: int, address: str = "127.0.0.1", scheme: str = "https") -> Target:
    return Target(f"{scheme}://{host}:{port}/hooks?x=1", scheme, host, port, "/hooks?x=1", address)


def send(to: Target) -> object:
    return post(to, b"{}", {"webhook-id": "msg_1"}, connect_timeout=2, read_timeout=2)


@pytest.mark.usefixtures("trusted")
def test_tls_reaches_the_checked_address_under_the_host_name(authority):
    with https_server(authority) as (port, seen):
        answer = send(target(HOST, port))
    assert answer.delivered and answer.status == 204
    assert seen.server_names == [HOST]
    assert seen.hosts == [f"{HOST}:{port}"]


@pytest.mark.usefixtures("trusted")
def test_a_certificate_for_another_name_is_refused(authority):
    with https_server(authority) as (port, seen):
        answer = send(target("other.example", port))
    assert answer.status is None and "not valid for 'other.example'" in answer.error
    assert seen.hosts == []


def test_an_untrusted_certificate_is_refused(authority):
    with https_server(authority) as (port, seen):
        answer = send(target(HOST, port))
    assert answer.status is None and "certificate" in answer.error.lower()


@pytest.mark.usefixtures("trusted")
def test_only_the_start_of_a_long_answer_is_read(authority):
    with https_server(authority, status=500, body=b"x" * 5_000_000) as (port, _):
        answer = send(target(HOST, port))
    assert answer.status == 500
    assert answer.error == "HTTP 500: " + "x" * SNIPPET_BYTES


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 here")
@pytest.mark.usefixtures("trusted")
def test_an_ipv6_address_is_reached_with_the_host_name(authority):
    try:
        server = https_server(authority, family=socket.AF_INET6)
        port, seen = server.__enter__()
    except OSError as error:  # IPv6 compiled in but no ::1 configured
        pytest.skip(f"no IPv6 loopback: {error}")
    try:
        answer = send(target(HOST, port, address="::1"))
    finally:
        server.__exit__(None, None, None)
    assert answer.delivered and seen.hosts == [f"{HOST}:{port}"]


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline():
    """Each byte comes within the read timeout, so only the attempt's deadline ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                if stop.wait(0.3):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        answer = post(
            target(HOST, port, scheme="http"), b"{}", {}, connect_timeout=0.5, read_timeout=1.0
        )
    finally:
        stop.set()
        listener.close()
    assert answer.status is None and "did not answer in time" in answer.error
    assert time.monotonic() - started < attempt_deadline(0.5, 1.0) + 0.5
