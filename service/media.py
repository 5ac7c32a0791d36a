"""Image inputs: base64 / data URIs (and, when enabled, public http(s) URLs) -> RGB PIL images.

Every check happens per request, before queueing, so one bad image fails only its own request:
encoded size, the declared pixel count read from the header before any pixel is decoded
(decompression bombs), a full decode (truncated files), then conversion to RGB.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge

# decoders Pillow implements itself; never EPS/PDF-like formats that hand the bytes to other programs
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "ICO")


@dataclass(frozen=True)
class MediaLimits:
    max_image_bytes: int
    max_image_pixels: int
    allow_remote: bool = False
    remote_timeout_s: float = 5.0
    remote_max_bytes: int = 8 * 1024 * 1024

    @classmethod
    def of(cls, settings: Any) -> "MediaLimits":
        s = settings
        return cls(s.max_image_bytes, s.max_image_pixels, s.allow_remote_images, s.remote_timeout_s,
                   s.remote_max_bytes)


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
            img.load()
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
    """GET a public http(s) image with size and time limits; redirects are not followed."""
    import httpx

    if not limits.allow_remote:
        raise BadRequest("remote image URLs are disabled on this server; send a data URI",
                         "remote_images_disabled")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("image URL must be http(s)://host/...", "invalid_image_url")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await asyncio.to_thread(_public_address, parts.hostname, port)
    try:
        async with httpx.AsyncClient(timeout=limits.remote_timeout_s, follow_redirects=False) as client:
            async with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise BadRequest(f"image URL answered HTTP {resp.status_code}", "image_url_failed")
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > limits.remote_max_bytes:
                        raise PayloadTooLarge(f"image URL body exceeds {limits.remote_max_bytes} bytes",
                                              "image_too_large")
                    chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise BadRequest(f"image URL could not be fetched ({type(exc).__name__})", "image_url_failed") from None
    return b"".join(chunks)


async def load_image(value: str, limits: MediaLimits) -> Image.Image:
    """Any accepted image reference -> RGB image; decoding runs off the event loop."""
    if is_url(value):
        data = await fetch_image_bytes(value, limits)
        return await asyncio.to_thread(open_image, data, limits)
    return await asyncio.to_thread(decode_image, value, limits)
