"""The playground in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against a
real ``radapt serve --playground`` on loopback: load, classify, attack, upload, errors, keyboard use,
accessible names, and screenshots whose pixels show the result. Nothing may leave loopback."""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from bench.server import ServerProcess

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)", allow_module_level=True)
expect = playwright.expect

STANDARD_RGB, ROBUST_RGB = (194, 65, 12), (29, 78, 216)  # --standard and --robust in playground.css
HELD_RGB, FOOLED_RGB = (21, 128, 61), (185, 28, 28)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("playground")
    from adapters.zoo.fashion import WEIGHTS

    rplus = WEIGHTS / "fashion-clip-rplus.adapter.safetensors"
    cmd = [sys.executable, "-m", "service.cli", "--log-level", "WARNING", "serve", "--port", "{port}",
           "--model", "builtin:fashion-clip", "--device", "cpu", "--dtype", "float32", "--playground",
           "--adapter", f"rplus={rplus}"]
    with ServerProcess("playground", cmd, "/health/ready", work / "server.log",
                       env={"RADAPT_ATTACKS_PER_MINUTE": "600"}) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        # root on CI needs --no-sandbox; containers often have a small /dev/shm
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    """A fresh page on the playground; requests to any other host are aborted and recorded, as are
    console errors (a CSP violation is one)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    here = urlparse(server).netloc
    page = context.new_page()
    page.foreign, page.errors = [], []

    def gate(route):
        if urlparse(route.request.url).netloc == here or route.request.url.startswith("data:"):
            route.continue_()
        else:
            page.foreign.append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(server + "/playground")
    page.wait_for_selector("input[name=sample]", state="attached")
    yield page
    context.close()


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def share(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> float:
    return float((np.abs(img - np.array(rgb)).sum(-1) < tol).mean())


def tab_to(page, predicate: str, limit: int = 40) -> None:
    """Press Tab until ``predicate`` (JS on document.activeElement) holds."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(el => {predicate})(document.activeElement)"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate}")


def test_keyboard_only_classify_and_attack_offline(page):
    # no key is configured: no key field; nothing attacked yet: no attack images
    expect(page.locator("#key-row")).to_be_hidden()
    expect(page.locator("#attack-images")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    tab_to(page, "el.name === 'sample'")
    page.keyboard.press("Space")  # the first sample: a Sneaker
    page.wait_for_selector("#standard-clean ol")
    assert page.locator("#standard-clean").get_attribute("data-top") == "Sneaker"
    page.keyboard.press("ArrowRight")  # radio group: the next sample, a Dress
    expect(page.locator("#chosen-caption")).to_contain_text("Dress")
    expect(page.locator("#standard-clean")).to_have_attribute("data-top", "Dress")
    assert page.locator("#robust-clean").get_attribute("data-top") == "Dress"
    tab_to(page, "el.id === 'attack'")
    page.keyboard.press("Enter")
    page.wait_for_selector("#robust-attacked .verdict")
    expect(page.locator("#attack-images")).to_be_visible()
    assert page.locator("#standard-attacked").get_attribute("data-verdict") == "fooled"
    assert page.locator("#robust-attacked").get_attribute("data-verdict") == "held"
    status = page.locator("#status").text_content()
    assert "standard fooled (Dress" in status and "robust held (Dress)" in status
    assert page.locator("#robust-adapter").text_content().startswith("(adapter default, id ")
    assert page.foreign == [] and page.errors == []


def test_screenshots_show_standard_breaking_and_robust_holding(page, tmp_path):
    page.get_by_role("radio", name="Sneaker").check()
    page.wait_for_selector("#standard-clean ol")
    page.get_by_role("button", name="Attack").click()
    page.wait_for_selector("#robust-attacked .verdict")
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    fooled = pixels(page.locator("#standard-attacked .verdict").screenshot())
    held = pixels(page.locator("#robust-attacked .verdict").screenshot())
    assert share(fooled, FOOLED_RGB) > 0.3 and share(fooled, HELD_RGB) == 0
    assert share(held, HELD_RGB) > 0.3 and share(held, FOOLED_RGB) == 0
    # each mode's top bar on the attacked image is as long as its score says, in its mode's colour
    for cell, rgb in (("#standard-attacked", STANDARD_RGB), ("#robust-attacked", ROBUST_RGB)):
        track = page.locator(f"{cell} [role=meter]").first
        score = float(track.get_attribute("aria-valuenow")) / 100
        row = pixels(track.screenshot())
        middle = row[row.shape[0] // 2]
        filled = (np.abs(middle - np.array(rgb)).sum(-1) < 40).mean()
        assert filled == pytest.approx(score, abs=0.03) and score > 0.5
    # the attacked image differs from the original; the magnified perturbation is not flat
    original = pixels(page.locator("#img-original").screenshot())
    attacked = pixels(page.locator("#img-attacked").screenshot())
    noise = pixels(page.locator("#img-perturbation").screenshot())
    assert original.shape == attacked.shape and np.abs(original - attacked).mean() > 1
    assert noise.std() > 40
    assert "×15.88 (max 8/255)" in page.locator("#perturbation-caption").text_content()


def test_the_robust_adapter_can_be_picked_and_the_page_says_which_ran(page):
    page.get_by_role("radio", name="Trouser").check()
    expect(page.locator("#robust-adapter")).to_contain_text("(adapter default, id ")
    default_id = page.locator("#robust-adapter").get_attribute("data-adapter-id")
    assert page.get_by_label("Robust adapter").locator("option").all_text_contents() == ["default", "rplus"]
    page.get_by_label("Robust adapter").select_option("rplus")
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#robust-adapter")).to_contain_text("(adapter rplus, id ")
    rplus_id = page.locator("#robust-adapter").get_attribute("data-adapter-id")
    assert len(rplus_id) == len(default_id) == 32 and rplus_id != default_id
    page.get_by_role("button", name="Attack").click()
    expect(page.locator("#robust-attacked .verdict")).to_be_visible()
    assert page.locator("#robust-adapter").get_attribute("data-adapter-id") == rplus_id  # the attack's answer


def test_on_a_phone_sized_screen_the_bars_still_show(page):
    page.set_viewport_size({"width": 400, "height": 800})
    page.get_by_role("radio", name="Bag").check()
    expect(page.locator("#robust-clean")).to_have_attribute("data-top", "Bag")
    for cell in ("#standard-clean", "#robust-clean"):
        track = page.locator(f"{cell} [role=meter]").first.bounding_box()
        fill = page.locator(f"{cell} .fill").first.bounding_box()
        assert track["width"] >= 40 and fill["width"] > 0.5 * track["width"]  # the top score is over 50%
    grid = page.locator("#results").bounding_box()
    assert grid["x"] >= 0 and grid["x"] + grid["width"] <= 400  # nothing runs off the screen


def test_upload_edit_labels_and_a_bad_file(page):
    from adapters.zoo.fashion_data import TEST_SLICE

    data = np.load(TEST_SLICE)
    buf = io.BytesIO()
    Image.fromarray(data["images"][1]).save(buf, "PNG")  # a Pullover that is not a sample
    page.locator("#labels").fill("Pullover\nTrouser\nBag")
    page.locator("#upload").set_input_files(files=[{"name": "mine.png", "mimeType": "image/png",
                                                    "buffer": buf.getvalue()}])
    expect(page.locator("#standard-clean")).to_have_attribute("data-top", "Pullover")
    assert page.locator("#chosen-caption").text_content() == "Uploaded: mine.png"
    assert page.locator("#standard-clean li").count() == 3
    page.locator("#upload").set_input_files(files=[{"name": "bad.png", "mimeType": "image/png",
                                                    "buffer": b"\x89PNG\r\n\x1a\nnot really"}])
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "invalid_image" in alert.text_content() and page.locator("#status").text_content() == \
        "Classification failed."
    page.locator("#upload").set_input_files(files=[{"name": "mine.png", "mimeType": "image/png",
                                                    "buffer": buf.getvalue()}])
    page.wait_for_selector("#error", state="hidden")
    expect(page.locator("#standard-clean")).to_have_attribute("data-top", "Pullover")
    assert page.errors == [] or all("400" in e for e in page.errors)  # the browser logs the failed fetch


def test_a_keyed_server_asks_for_the_key_and_attacks_need_the_admin_key(browser, tmp_path):
    cmd = [sys.executable, "-m", "service.cli", "--log-level", "WARNING", "serve", "--port", "{port}",
           "--model", "builtin:fashion-clip", "--device", "cpu", "--dtype", "float32", "--playground"]
    env = {"RADAPT_API_KEY": "user-key", "RADAPT_ADMIN_KEY": "admin-key"}
    with ServerProcess("keyed", cmd, "/health/ready", tmp_path / "server.log", env=env) as srv:
        page = browser.new_page()
        page.goto(srv.url + "/playground")
        key = page.get_by_label("API key")
        expect(key).to_be_visible()
        expect(page.locator("#status")).to_have_text("Enter the API key to continue.")
        expect(page.get_by_role("alert")).to_contain_text("needs an API key")
        key.fill("user-key")
        key.press("Tab")  # the key is read on change; the page loads its config with it
        page.get_by_role("radio", name="Sneaker").check()
        expect(page.locator("#standard-clean")).to_have_attribute("data-top", "Sneaker")
        page.get_by_role("button", name="Attack").click()
        expect(page.get_by_role("alert")).to_contain_text("playground attacks (they need the admin key)")
        key.fill("admin-key")
        key.press("Tab")
        page.get_by_role("button", name="Attack").click()
        expect(page.locator("#robust-attacked")).to_have_attribute("data-verdict", "held")
        expect(page.get_by_role("alert")).to_be_hidden()
        page.close()


def test_a_page_opened_while_models_load_waits_and_then_works(browser, server):
    """The first config answer is the server's 503 not_ready (as while loading): the page says so and retries."""
    page = browser.new_page()
    answered: list[int] = []

    def config(route):
        if not answered:
            answered.append(503)
            route.fulfill(status=503, content_type="application/json", headers={"retry-after": "2"},
                          body='{"error": {"message": "models are still loading; retry shortly", '
                               '"type": "server_error", "code": "not_ready"}}')
        else:
            answered.append(200)
            route.continue_()

    page.route("**/playground/api/config", config)
    page.goto(server + "/playground")
    expect(page.locator("#status")).to_have_text("The server is still loading its models…")
    expect(page.locator("#error")).to_be_hidden()
    page.get_by_role("radio", name="Coat").check(timeout=10000)
    expect(page.locator("#standard-clean")).to_have_attribute("data-top", "Coat")
    assert answered == [503, 200]
    page.close()


def test_every_control_has_a_name_and_the_slider_works_by_keyboard(page):
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
        .map(el => el.outerHTML)""")
    assert unnamed == []
    for name in ("Model", "Robust adapter", "Labels, one per line", "Prompt template", "Strength ε", "PGD steps",
                 "Or upload an image"):
        assert page.get_by_label(name).count() == 1, name
    assert page.get_by_role("radio", name="standard mode (transfer to robust)").is_checked()
    assert page.locator("fieldset#samples legend").text_content().startswith("Sample images")
    assert page.locator("html").get_attribute("lang") == "en" and page.locator("h1").count() == 1
    slider = page.get_by_label("Strength ε")
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert page.locator("#eps-value").text_content() == "9/255"
    page.keyboard.press("Home")
    assert page.locator("#eps-value").text_content() == "1/255"
    page.get_by_role("radio", name="Bag").check()
    page.wait_for_selector("#robust-clean [role=meter]")
    meter = page.locator("#robust-clean [role=meter]").first
    assert meter.get_attribute("aria-label") == "robust score of Bag"
    assert meter.get_attribute("aria-valuetext").endswith("%")
