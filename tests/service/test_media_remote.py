"""Remote images (SSRF): a loopback server that redirects to private and link-local addresses, sends
oversized, lying and slow bodies. Only the loopback server itself is let through the public-address
check (tests have no other network); everything it serves that is not a plain small image is refused."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from service import media
from service.errors import BadRequest, PayloadTooLarge
from service.media import MediaLimits, fetch_image_bytes

pytestmark = pytest.mark.unit


def _png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((16, 16), 60).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
REDIRECTS = {
    "/to-private": "http://10.0.0.7/cat.png",
    "/to-link-local": "http://169.254.169.254/latest/meta-data/iam",
    "/to-loopback": "http://127.0.0.1:1/admin",
    "/to-ipv6-loopback": "http://[::1]/x.png",
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path in REDIRECTS:
            self.send_response(302)
            self.send_header("Location", REDIRECTS[self.path])
            self.end_headers()
        elif self.path == "/ok.png":
            self._send(PNG)
        elif self.path == "/declared-huge":  # says 1 GB; the client must not wait for it
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            self.wfile.write(b"x" * 1000)
        elif self.path == "/chunked-huge":  # no length, keeps sending
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._drip(64 * 1024, 0.0, 200)
        elif self.path == "/slow":  # one byte every 0.1 s: each read is quick, the whole never ends
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._drip(1, 0.1, 300)
        else:
            self.send_response(404)
            self.end_headers()

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, size: int, pause: float, count: int) -> None:
        try:
            for _ in range(count):
                self.wfile.write(b"%x\r\n%s\r\n" % (size, b"x" * size))
                self.wfile.flush()
                time.sleep(pause)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up: what we want
            pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def loopback_allowed(monkeypatch: pytest.MonkeyPatch, server: str) -> None:
    """Let only the test server's own loopback address through the public-address check."""
    original = media._public_address
    port = int(server.rsplit(":", 1)[1])

    def allow_test_server(host: str, p: int) -> None:
        if (host, p) != ("127.0.0.1", port):
            original(host, p)

    monkeypatch.setattr(media, "_public_address", allow_test_server)


LIMITS = MediaLimits(max_image_bytes=200_000, max_image_pixels=1_000_000, allow_remote=True,
                     remote_timeout_s=1.0, remote_max_bytes=100_000)


def fetch(url: str) -> bytes:
    return asyncio.run(fetch_image_bytes(url, LIMITS))


def test_the_test_server_serves_a_plain_image(server, loopback_allowed):
    assert fetch(server + "/ok.png") == PNG


@pytest.mark.parametrize("path", sorted(REDIRECTS))
def test_redirects_to_private_and_link_local_addresses_are_refused(server, loopback_allowed, path):
    with pytest.raises(BadRequest) as err:
        fetch(server + path)
    assert err.value.code == "image_url_redirect" and "redirect" in err.value.message


@pytest.mark.parametrize("path", ["/declared-huge", "/chunked-huge"])
def test_oversized_bodies_are_refused_without_reading_them_whole(server, loopback_allowed, path):
    start = time.monotonic()
    with pytest.raises(PayloadTooLarge) as err:
        fetch(server + path)
    assert err.value.code == "image_too_large"
    assert time.monotonic() - start < 5


def test_a_body_that_drips_in_is_cut_at_the_overall_deadline(server, loopback_allowed):
    """Each read arrives within the per-read timeout; only a deadline for the whole fetch ends it."""
    start = time.monotonic()
    with pytest.raises(BadRequest) as err:
        fetch(server + "/slow")
    assert err.value.code == "image_url_timeout" and "within" in err.value.message
    assert time.monotonic() - start < 3 * LIMITS.remote_timeout_s


def test_without_the_test_exception_the_loopback_server_itself_is_refused(server):
    with pytest.raises(BadRequest) as err:
        fetch(server + "/ok.png")
    assert err.value.code == "image_url_refused"


@pytest.mark.api
@pytest.mark.asyncio(loop_scope="session")
async def test_over_http_every_refusal_is_a_clear_4xx_and_the_server_serves_on(make_client, server,
                                                                                  loopback_allowed, png):
    async with make_client(allow_remote_images=True, remote_timeout_s=1.0, remote_max_bytes=100_000) as client:
        for path, status, code in [("/to-private", 400, "image_url_redirect"),
                                   ("/to-link-local", 400, "image_url_redirect"),
                                   ("/declared-huge", 413, "image_too_large"),
                                   ("/chunked-huge", 413, "image_too_large"),
                                   ("/slow", 400, "image_url_timeout"),
                                   ("/missing", 400, "image_url_failed")]:
            resp = await client.post("/v1/classify", json={"image": server + path, "labels": ["a", "b"]})
            assert resp.status_code == status and resp.json()["error"]["code"] == code, (path, resp.text)
            ok = await client.post("/v1/classify", json={"image": png(), "labels": ["a", "b"]})
            assert ok.status_code == 200
        resp = await client.post("/v1/classify", json={"image": server + "/ok.png", "labels": ["a", "b"]})
        assert resp.status_code == 200, resp.text
