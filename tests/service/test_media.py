"""Image decoding limits and remote URL policy (no network: refusals happen before any connection)."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image

from service.errors import BadRequest, PayloadTooLarge
from service.media import MediaLimits, decode_image, fetch_image_bytes

pytestmark = pytest.mark.unit

LIMITS = MediaLimits(max_image_bytes=100_000, max_image_pixels=50_000)


def encoded(img: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "JPEG"), ("P", "GIF"),
                                       ("RGB", "WEBP")])
def test_formats_decode_to_rgb(mode, fmt):
    img = Image.new(mode, (20, 10))
    for value in (encoded(img, fmt), f"data:image/{fmt.lower()};base64," + encoded(img, fmt)):
        out = decode_image(value, LIMITS)
        assert out.mode == "RGB" and out.size == (20, 10)


def test_only_pillow_native_formats_are_decoded():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(BadRequest, match="not a supported image format"):
        decode_image(base64.b64encode(eps).decode(), LIMITS)


def test_limits_and_corrupt_input():
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_image(encoded(Image.new("RGB", (1000, 1000)), "PNG"), LIMITS)
    with pytest.raises(PayloadTooLarge, match="bytes"):
        decode_image(base64.b64encode(bytes(150_000)).decode(), LIMITS)
    good = base64.b64decode(encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG"))
    with pytest.raises(BadRequest, match="truncated"):
        decode_image(base64.b64encode(good[:-200]).decode(), LIMITS)
    with pytest.raises(BadRequest, match="base64"):
        decode_image("####", LIMITS)
    with pytest.raises(BadRequest):
        decode_image("", LIMITS)


@pytest.mark.parametrize("url, code", [
    ("http://127.0.0.1/x.png", "image_url_refused"),
    ("http://localhost:8000/x.png", "image_url_refused"),
    ("http://10.1.2.3/x.png", "image_url_refused"),
    ("http://169.254.169.254/latest/meta-data", "image_url_refused"),
    ("http://[::1]/x.png", "image_url_refused"),
    ("ftp://example.com/x.png", "invalid_image_url"),
])
def test_remote_urls_refuse_non_public_addresses(url, code):
    on = MediaLimits(100_000, 50_000, allow_remote=True)
    with pytest.raises(BadRequest) as err:
        asyncio.run(fetch_image_bytes(url, on))
    assert err.value.code == code
    with pytest.raises(BadRequest) as err:
        asyncio.run(fetch_image_bytes(url, LIMITS))
    assert err.value.code == "remote_images_disabled"


def test_decompression_bomb_past_pillows_own_limit_is_a_413_not_a_format_error():
    # 15000 x 15000 = 225 Mpx: Pillow itself raises (> 2x its default limit) before our check runs
    bomb = io.BytesIO()
    Image.new("1", (15000, 15000)).save(bomb, "PNG")
    limits = MediaLimits(max_image_bytes=len(bomb.getvalue()) + 1, max_image_pixels=50_000)
    with pytest.raises(PayloadTooLarge, match="pixels") as info:
        decode_image(base64.b64encode(bomb.getvalue()).decode(), limits)
    assert info.value.code == "image_too_many_pixels"
