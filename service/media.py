"""Image inputs: base64 / data URIs (and, when enabled, public http(s) URLs) -> RGB PIL images.

Every check happens per request, before queueing, so one bad image fails only its own request:
encoded size, the declared pixel count and aspect ratio read from the header before any pixel is
decoded (decompression bombs, 1 x 400000 strips that would grow enormous when resized), a full
decode (truncated files), the EXIF orientation applied (phone photos), then conversion to RGB.
Preprocessors call ``check_resize`` before they resize, so no image grows past a bound.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
import time
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge

# decoders Pillow implements itself; never EPS/PDF-like formats that hand the bytes to other programs
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "ICO")
# most pixels an image may have after a preprocessor's resize (its short side to the model's size):
# 16 Mpx is 48 MiB of RGB, about 75:1 at 448 px or 330:1 at 224 px
MAX_RESIZED_PIXELS = 16 * 1024 * 1024
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class MediaLimits:
    max_image_bytes: int
    max_image_pixels: int
    allow_remote: bool = False
    remote_timeout_s: float = 5.0
    remote_max_bytes: int = 8 * 1024 * 1024
    max_aspect_ratio: float = 50.0

    @classmethod
    def of(cls, settings: Any) -> "MediaLimits":
        s = settings
        return cls(s.max_image_bytes, s.max_image_pixels, s.allow_remote_images, s.remote_timeout_s,
                   s.remote_max_bytes, s.max_image_aspect_ratio)


def is_url(value: str) -> bool:
    return value[:8].lower().startswith(("http://", "https://"))


def decode_base64(value: str, limits: MediaLimits) -> bytes:
    """Bytes of a data URI (``data:image/png;base64,...``) or a bare base64 string."""
    text = value.strip()
    if text[:5].lower() == "data:":
        header, sep, text = text.partition(",")
        if not sep or not header.lower().endswith(";base64"):
            raise BadRequest("image data URI must be base64-encoded (data:image/...;base64,...)", "invalid_image")
    # base64 inflates by 4/3: refuse before decoding anything too large
    if len(text) > limits.max_image_bytes * 4 // 3 + 4:
        raise PayloadTooLarge(f"image is larger than {limits.max_image_bytes} bytes", "image_too_large")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image is not valid base64 (send base64 bytes or a data URI)", "invalid_base64") from None
    if not data:
        raise BadRequest("image is empty", "invalid_image")
    return data


def open_image(data: bytes, limits: MediaLimits) -> Image.Image:
    """Decode ``data`` fully into an RGB image, enforcing the byte and pixel limits."""
    if len(data) > limits.max_image_bytes:
        raise PayloadTooLarge(f"image is larger than {limits.max_image_bytes} bytes", "image_too_large")
    try:
        with warnings.catch_warnings():
            # our own pixel limit below is the bomb check; PIL's global one must not raise first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = img.size
            if width * height > limits.max_image_pixels:
                raise PayloadTooLarge(f"image has {width}x{height} pixels, more than the limit of "
                                      f"{limits.max_image_pixels}", "image_too_many_pixels")
            if width < 1 or height < 1:
                raise BadRequest("image has no pixels", "invalid_image")
            check_aspect(width, height, limits.max_aspect_ratio)
            img.load()
            img = upright(img)
    except Image.DecompressionBombError:  # PIL refuses > 2x its own limit before we see the size
        raise PayloadTooLarge(f"image has more pixels than the limit of {limits.max_image_pixels}",
                              "image_too_many_pixels") from None
    except UnidentifiedImageError:
        raise BadRequest(f"image bytes are not a supported image format ({', '.join(FORMATS)})",
                         "invalid_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadRequest(f"image cannot be decoded (truncated or corrupt): {type(exc).__name__}",
                         "invalid_image") from None
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def check_aspect(width: int, height: int, max_ratio: float) -> None:
    """Refuse images whose long side exceeds ``max_ratio`` times the short side."""
    ratio = max(width, height) / min(width, height)
    if ratio > max_ratio:
        raise BadRequest(f"image is {width}x{height} pixels, an aspect ratio of {ratio:.0f}:1; the limit is "
                         f"{max_ratio:g}:1 (crop or pad it)", "image_aspect_ratio")


def check_resize(width: int, height: int, new_width: int, new_height: int) -> None:
    """Refuse a resize of a ``width x height`` image to more than ``MAX_RESIZED_PIXELS`` (call it first)."""
    if new_width * new_height > MAX_RESIZED_PIXELS:
        raise BadRequest(f"image is {width}x{height} pixels; this model would resize it to {new_width}x"
                         f"{new_height}, more than {MAX_RESIZED_PIXELS} pixels: crop it closer to a square",
                         "image_aspect_ratio")


def shortest_edge_resize(width: int, height: int, shortest: int) -> tuple[int, int]:
    """``(w, h)`` after resizing the short side to ``shortest`` (transformers' rule), checked first."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest * long / short)  # transformers' get_resize_output_image_size
    size = (shortest, new_long) if width <= height else (new_long, shortest)
    check_resize(width, height, *size)
    return size


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says (phone photos); untouched without one."""
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        return img  # an unreadable EXIF block does not spoil the pixels
    if orientation in (1, None) or not isinstance(orientation, int) or not 2 <= orientation <= 8:
        return img
    return ImageOps.exif_transpose(img)


def decode_image(value: str, limits: MediaLimits) -> Image.Image:
    """base64 / data URI -> RGB image (CPU work: call it from a worker thread)."""
    return open_image(decode_base64(value, limits), limits)


def _public_address(host: str, port: int) -> None:
    """Refuse hosts that resolve to private, loopback, link-local or otherwise non-public addresses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise BadRequest(f"image URL host {host!r} does not resolve", "invalid_image_url") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_global or addr.is_multicast:
            raise BadRequest("image URL points to a private, loopback or link-local address; refused",
                             "image_url_refused")


async def fetch_image_bytes(url: str, limits: MediaLimits) -> bytes:
    """GET a public http(s) image within ``remote_timeout_s`` in all and ``remote_max_bytes``.

    Redirects are refused, not followed (a public URL could redirect to a private address); a
    declared ``Content-Length`` over the limit is refused before the body is read, and a body that
    drips in slowly is cut at the overall deadline.
    """
    import httpx

    if not limits.allow_remote:
        raise BadRequest("remote image URLs are disabled on this server; send a data URI",
                         "remote_images_disabled")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("image URL must be http(s)://host/...", "invalid_image_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadRequest("image URL has an invalid port", "invalid_image_url") from None
    deadline = time.monotonic() + limits.remote_timeout_s
    await asyncio.to_thread(_public_address, parts.hostname, port)
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await _get(url, limits)
    except TimeoutError:
        raise BadRequest(f"image URL did not deliver within {limits.remote_timeout_s:g} s",
                         "image_url_timeout") from None
    except httpx.HTTPError as exc:
        raise BadRequest(f"image URL could not be fetched ({type(exc).__name__})", "image_url_failed") from None


async def _get(url: str, limits: MediaLimits) -> bytes:
    import httpx

    async with httpx.AsyncClient(timeout=limits.remote_timeout_s, follow_redirects=False) as client:
        async with client.stream("GET", url) as resp:
            if resp.is_redirect:
                raise BadRequest(f"image URL answered a redirect (HTTP {resp.status_code}); redirects are not "
                                 "followed: send the final URL", "image_url_redirect")
            if resp.status_code != 200:
                raise BadRequest(f"image URL answered HTTP {resp.status_code}", "image_url_failed")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.remote_max_bytes:
                raise PayloadTooLarge(f"image URL body is {declared} bytes, more than {limits.remote_max_bytes}",
                                      "image_too_large")
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > limits.remote_max_bytes:
                    raise PayloadTooLarge(f"image URL body exceeds {limits.remote_max_bytes} bytes",
                                          "image_too_large")
                chunks.append(chunk)
    return b"".join(chunks)
