"""Engine.attack: PGD crafted on the server, one step per batcher work item, on builtin:fashion-clip
(a model that recognises real images, so "standard breaks, robust holds" is a real claim)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import pytest_asyncio

from adapters.zoo.fashion_data import CLASSES, TEST_SLICE
from service.engine.engine import AttackOutcome, Engine
from service.errors import ServiceError
from service.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
MODEL = "builtin:fashion-clip"
LABELS = list(CLASSES)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine():
    settings = load_settings(models=[MODEL], device="cpu", dtype="float32", attack_max_steps=200,
                             max_wait_ms=1.0)
    async with Engine(settings) as e:
        yield e


def sample(i: int) -> np.ndarray:
    data = np.load(TEST_SLICE)
    return np.repeat(data["images"][i][..., None], 3, axis=-1), CLASSES[int(data["labels"][i])]


def png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


async def top1(engine: Engine, pixels: np.ndarray, robust: bool) -> str:
    return (await engine.classify(png(pixels), LABELS, robust=robust)).value[0][0]


async def test_an_attack_on_standard_mode_fools_it_and_robust_mode_holds(engine):
    pixels, truth = sample(9)  # a Sneaker
    assert await top1(engine, pixels, False) == truth and await top1(engine, pixels, True) == truth
    result = await engine.attack(png(pixels), LABELS, eps=8, steps=10)
    out: AttackOutcome = result.value
    assert (result.model, result.robust, result.adapter, result.adapter_id) == (MODEL, False, None, None)
    assert out.label == truth and max(out.clean, key=out.clean.get) == truth
    assert out.original.shape == out.attacked.shape == (28, 28, 3) and out.original.dtype == np.uint8
    np.testing.assert_array_equal(out.original, pixels)  # 28 px in: the model input is the image itself
    assert int(np.abs(out.attacked.astype(int) - out.original).max()) == 8  # within eps, and it uses it
    assert await top1(engine, out.attacked, False) != truth
    assert await top1(engine, out.attacked, True) == truth
    assert result.inference_time > 0 and result.queue_time >= 0


async def test_the_same_inputs_give_the_same_attacked_image(engine):
    pixels, _ = sample(13)
    a = (await engine.attack(png(pixels), LABELS, eps=4, steps=5)).value
    b = (await engine.attack(png(pixels), LABELS, eps=4, steps=5)).value
    np.testing.assert_array_equal(a.attacked, b.attacked)
    assert not np.array_equal(a.attacked, a.original)


async def test_an_adaptive_attack_differentiates_through_r_adapt(engine):
    pixels, _ = sample(14)
    plain = await engine.attack(png(pixels), LABELS, eps=8, steps=10)
    adaptive = await engine.attack(png(pixels), LABELS, eps=8, steps=10, robust=True)
    default = engine.models[MODEL].adapters.snapshot()["default"]
    assert (adaptive.robust, adaptive.adapter, adaptive.adapter_id) == (True, "default", default.uid)
    assert not np.array_equal(plain.value.attacked, adaptive.value.attacked)
    # attacking robust mode itself hurts it more than the transferred attack does
    robust = await engine.classify(png(adaptive.value.attacked), LABELS, robust=True)
    transferred = await engine.classify(png(plain.value.attacked), LABELS, robust=True)
    truth = sample(14)[1]
    assert dict(robust.value)[truth] < dict(transferred.value)[truth]


@pytest.mark.parametrize("kw, code", [
    (dict(eps=0), "invalid_eps"), (dict(eps=65), "invalid_eps"), (dict(eps=2.5), "invalid_eps"),
    (dict(eps=True), "invalid_eps"), (dict(steps=0), "invalid_steps"), (dict(steps=201), "invalid_steps"),
    (dict(labels=["Bag"]), "too_few_labels"), (dict(labels=["Bag", "Bag"]), "duplicate_labels"),
    (dict(adapter="nope"), "adapter_not_found"), (dict(model="nope"), "model_not_found"),
    (dict(template="no slot"), "invalid_template"), (dict(image=b"not an image"), "invalid_image"),
])
async def test_bad_attacks_are_refused_before_any_work(engine, kw, code):
    args = dict(image=png(sample(0)[0]), labels=LABELS, eps=4, steps=2) | kw
    with pytest.raises(ServiceError) as err:
        await engine.attack(**args)
    assert err.value.code == code and 400 <= err.value.status < 500
    assert not engine._attacking and not any(engine._in_flight.values())


async def test_serving_goes_on_between_attack_steps(engine):
    """200 steps are 200 work items: classifications sent meanwhile finish long before the attack."""
    pixels, _ = sample(19)
    order: list[str] = []

    async def attack() -> None:
        await engine.attack(png(pixels), LABELS, eps=8, steps=200)
        order.append("attack")

    async def classify(k: int) -> None:
        await engine.classify(png(sample(k)[0]), LABELS)
        order.append("classify")

    running = asyncio.ensure_future(attack())
    await asyncio.sleep(0.05)
    assert not running.done()
    await asyncio.gather(*(classify(k) for k in range(5)), running)
    assert order == ["classify"] * 5 + ["attack"]


async def test_one_attack_per_model_at_a_time(engine):
    pixels, _ = sample(28)
    first = asyncio.ensure_future(engine.attack(png(pixels), LABELS, eps=8, steps=100))
    await asyncio.sleep(0.02)
    with pytest.raises(ServiceError) as err:
        await engine.attack(png(pixels), LABELS, eps=8, steps=2)
    assert (err.value.status, err.value.code) == (429, "attack_busy")
    await first
    await engine.attack(png(pixels), LABELS, eps=8, steps=2)  # free again


async def test_an_attack_past_its_deadline_gets_504_and_the_engine_serves_on():
    settings = load_settings(models=[MODEL], device="cpu", dtype="float32", attack_max_steps=200,
                             request_timeout_s=0.2, warmup=False)
    async with Engine(settings) as engine:
        with pytest.raises(ServiceError) as err:
            await engine.attack(png(sample(31)[0]), LABELS, eps=8, steps=200)
        assert err.value.status == 504
        assert not engine._attacking and not any(engine._in_flight.values())
        assert (await engine.classify(png(sample(31)[0]), LABELS)).value[0][0] == "Bag"
        counted = engine.metrics.attacks.labels(model=MODEL, result="error")._value.get()
        assert counted == 1


def test_attack_pause_gives_serving_its_share():
    from service.engine.engine import attack_pause

    assert attack_pause(0, 0.1, 0.25) == 0.0  # nothing else in flight: back to back
    assert attack_pause(3, 0.1, 0.25) == pytest.approx(0.3)  # serving gets 3x the step's time
    assert attack_pause(1, 0.1, 1.0) == 0.0 and attack_pause(1, 0.0, 0.25) == 0.0


async def test_an_attack_beside_other_requests_is_paced_and_alone_is_not():
    """Model time per step is the same either way; wall time per step grows only when others are in flight."""
    settings = load_settings(models=[MODEL], device="cpu", dtype="float32", attack_max_steps=50, warmup=False,
                             attack_share=0.1)
    async with Engine(settings) as engine:
        pixels = png(sample(9)[0])
        alone = await engine.attack(pixels, LABELS, eps=8, steps=20)
        served = engine.models[MODEL]
        engine._admit(served)  # another request in flight for the model for the whole attack
        try:
            paced = await engine.attack(pixels, LABELS, eps=8, steps=20)
        finally:
            engine._release(served)
        # share 0.1: 9x each step's model time waited between steps, so the queue time dwarfs the model time
        assert paced.queue_time > 5 * paced.inference_time
        assert alone.queue_time < 5 * alone.inference_time
        np.testing.assert_array_equal(alone.value.attacked, paced.value.attacked)


async def test_a_cancelled_attack_frees_the_model_at_once(engine):
    """A client that goes away cancels the attack: its queued step never runs and the next attack may start."""
    pixels = png(sample(65)[0])
    running = asyncio.ensure_future(engine.attack(pixels, LABELS, eps=8, steps=200))
    await asyncio.sleep(0.1)
    assert MODEL in engine._attacking
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not engine._attacking and not any(engine._in_flight.values())
    assert engine.metrics.attacks.labels(model=MODEL, result="cancelled")._value.get() == 1
    done = await engine.attack(pixels, LABELS, eps=8, steps=2)
    assert done.value.eps == 8
