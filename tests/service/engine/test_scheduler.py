"""Continuous batching on the tiny chat models, through the engine (no HTTP).

Exactness: greedy outputs under random interleavings (rows join and leave at every step; robust,
standard and another adapter mixed; text-only and multi-image rows) equal each request run alone,
in float32, for every chat family. Isolation: a row that raises or produces NaN fails alone.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import pytest_asyncio
import torch

from service.engine.engine import Engine
from service.engine.generation import SamplingRequest
from service.errors import BadRequest, InferenceFailed, RequestTimeout
from service.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

FAMILIES = ["builtin:tiny-llava", "builtin:tiny-qwen2-vl", "builtin:tiny-qwen2.5-vl", "builtin:tiny-qwen3-vl"]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine():
    settings = load_settings(models=FAMILIES, device="cpu", dtype="float32", max_new_tokens=8,
                             max_text_chars=100_000)
    async with Engine(settings) as e:
        for name in FAMILIES:  # a second adapter per model: requests mix standard, default and "strong"
            rmodel = e.models[name].rmodel
            e.models[name].adapters.put("strong", rmodel.build_adapter(rmodel.white_anchor(), sigma=2.0, alpha=0.8))
        yield e


async def until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.001)


def messages(images, i: int, n_images: int, words: int) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": images.data_uri(10 * i + k, (20 + 9 * k + 3 * i, 40))}}
               for k in range(n_images)]
    return [{"role": "user", "content": [*content, {"type": "text", "text": "describe " * words}]}]


def case(images, i: int) -> dict:
    """Request ``i``: its images (0-2), mode (standard / default / strong) and length vary."""
    mode = [{"robust": False}, {"robust": True}, {"adapter": "strong"}][i % 3]
    return dict(messages=messages(images, i, i % 3, 1 + i % 4), sampling=SamplingRequest(max_tokens=2 + (5 * i) % 17),
                **mode)


@pytest.mark.parametrize("model", FAMILIES)
async def test_greedy_under_random_interleavings_equals_each_request_alone(engine, images, model):
    cases = [case(images, i) for i in range(9)]
    alone = [(await engine.generate(model=model, **c)).value.text for c in cases]
    assert len(set(alone)) >= 6  # the tiny model's outputs really differ between requests
    sched = engine.models[model].worker
    steps = sched.steps
    together = await asyncio.gather(*(engine.generate(model=model, **c) for c in cases))
    assert [g.value.text for g in together] == alone
    # sent at once, the rows share decoding steps (one at a time they would need ~sum(max_tokens) steps)
    assert sched.steps - steps < 0.75 * sum(c["sampling"].max_tokens for c in cases)
    rng = random.Random(model)
    for _ in range(2):
        order = rng.sample(range(len(cases)), len(cases))
        delays = [rng.uniform(0.0, 0.03) for _ in cases]

        async def late(i: int, delay: float):
            await asyncio.sleep(delay)  # joins whatever is running at that step
            return await engine.generate(model=model, **cases[i])

        got = await asyncio.gather(*(late(i, d) for i, d in zip(order, delays, strict=True)))
        assert {i: g.value.text for i, g in zip(order, got, strict=True)} == dict(enumerate(alone))
    assert sched.running == 0 and sched.depth == 0


async def test_usage_finish_reasons_and_adapter_identity(engine, images):
    model = FAMILIES[0]
    r = await engine.generate(messages(images, 1, 1, 2), SamplingRequest(max_tokens=5), model=model, adapter="strong")
    gen = r.value
    assert (gen.completion_tokens, gen.finish_reason, r.robust, r.adapter) == (5, "length", True, "strong")
    assert r.adapter_id == engine.models[model].adapters.snapshot()["strong"].uid and gen.prompt_tokens > 10
    for stop in ([gen.text[2:4]], gen.text[2:4]):  # a list, or one string as OpenAI also accepts
        cut = await engine.generate(messages(images, 1, 1, 2), SamplingRequest(max_tokens=5, stop=stop),
                                    model=model, adapter="strong")
        assert cut.value.text == gen.text[:gen.text.find(gen.text[2:4])] and cut.value.finish_reason == "stop"


async def test_seed_makes_sampling_reproducible_whatever_runs_beside_it(engine, images):
    model = FAMILIES[1]
    msgs = messages(images, 2, 1, 3)
    sampled = SamplingRequest(max_tokens=12, temperature=1.0, top_p=0.9, seed=1234)
    first = (await engine.generate(msgs, sampled, model=model)).value.text
    crowd = [engine.generate(messages(images, k, 1, 1), SamplingRequest(max_tokens=3 + k, temperature=0.7),
                             model=model) for k in range(5)]
    again, *_ = await asyncio.gather(engine.generate(msgs, sampled, model=model), *crowd)
    assert again.value.text == first
    others = {(await engine.generate(msgs, SamplingRequest(max_tokens=12, temperature=1.0, seed=s),
                                     model=model)).value.text for s in range(4)}
    assert len(others) >= 3  # the seed matters, so the equality above is not vacuous


async def test_penalties_change_greedy_text(engine, images):
    model = FAMILIES[0]
    msgs = messages(images, 3, 0, 2)
    plain = (await engine.generate(msgs, SamplingRequest(max_tokens=16), model=model)).value
    penalised = (await engine.generate(msgs, SamplingRequest(max_tokens=16, frequency_penalty=2.0,
                                                             presence_penalty=2.0), model=model)).value
    assert plain.text != penalised.text


@pytest.mark.parametrize("sampling, code", [
    (SamplingRequest(temperature=1e-40), "invalid_temperature"),
    (SamplingRequest(temperature=float("nan")), "invalid_temperature"),
    (SamplingRequest(top_p=0.0), "invalid_top_p"),
    (SamplingRequest(stop=["a", "b", "c", "d", "e"]), "invalid_stop"),
    (SamplingRequest(stop=["x" * 65]), "invalid_stop"),
    (SamplingRequest(stop=[""]), "invalid_stop"),
    (SamplingRequest(frequency_penalty=3.0), "invalid_penalty"),
    (SamplingRequest(max_tokens=100_000), "max_tokens_too_large"),
    (SamplingRequest(max_tokens=0), "invalid_max_tokens"),
])
async def test_sampling_values_are_refused_before_queueing(engine, images, sampling, code):
    with pytest.raises(BadRequest) as err:
        await engine.generate(messages(images, 0, 1, 1), sampling, model=FAMILIES[0])
    assert err.value.code == code and err.value.status == 400


async def test_a_row_that_raises_or_gives_nan_fails_alone(engine, images, monkeypatch):
    model = FAMILIES[0]
    runner = engine.models[model].runner
    innocents = [case(images, i) for i in range(6)]
    for c in innocents:
        c["messages"] = [{"role": "user", "content": c["messages"][0]["content"][:1] + [
            {"type": "text", "text": "hi"}]}]  # short prompts: their positions stay below 100
    expected = [(await engine.generate(model=model, **c)).value.text for c in innocents]
    real_decode, real_prefill = runner.decode, runner.prefill
    long_text = [{"role": "user", "content": "word " * 200}]  # the poisoned row: positions >= 200

    def decode(batch, tokens):
        if bool((batch.positions >= 200).any()):
            raise RuntimeError("poisoned row")
        return real_decode(batch, tokens)

    def prefill(prompt, adapter):
        scores, row = real_prefill(prompt, adapter)
        if prompt.length == nan_length:
            scores = torch.full_like(scores, float("nan"))
        return scores, row

    nan_length = runner.prepare([{"role": "user", "content": [{"type": "text", "text": "nan " * 30}]}], []).length
    monkeypatch.setattr(runner, "decode", decode)
    monkeypatch.setattr(runner, "prefill", prefill)
    poisoned = engine.generate(long_text, SamplingRequest(max_tokens=30), model=model)
    nan = engine.generate([{"role": "user", "content": "nan " * 30}], SamplingRequest(max_tokens=5), model=model)
    results = await asyncio.gather(poisoned, nan, *(engine.generate(model=model, **c) for c in innocents),
                                   return_exceptions=True)
    assert isinstance(results[0], InferenceFailed) and "poisoned" not in results[0].message
    assert isinstance(results[1], InferenceFailed) and results[1].code == "non_finite_scores"
    assert [r.value.text for r in results[2:]] == expected
    assert engine.models[model].worker.alive


async def test_a_cancelled_generation_frees_its_row_within_one_step(engine, images):
    model = FAMILIES[1]
    sched = engine.models[model].worker
    running = await engine.start_generation(messages(images, 4, 1, 1), SamplingRequest(max_tokens=400), model=model)
    await until(lambda: sched.running == 1)
    running.cancel()  # what a route does when its client disconnects
    at_cancel = sched.steps
    await until(lambda: sched.running == 0)
    assert sched.steps - at_cancel <= 1
    assert (await engine.generate(messages(images, 4, 1, 1), SamplingRequest(max_tokens=3), model=model)).value


async def test_deadline_fires_during_decoding_and_preprocessing(images, monkeypatch):
    settings = load_settings(models=[FAMILIES[0]], device="cpu", dtype="float32", request_timeout_s=0.5,
                             warmup=False)
    async with Engine(settings) as e:
        runner, sched = e.models[FAMILIES[0]].runner, e.models[FAMILIES[0]].worker
        real_decode, real_prepare = runner.decode, runner.prepare

        def slow_decode(batch, tokens):
            time.sleep(0.02)
            return real_decode(batch, tokens)

        monkeypatch.setattr(runner, "decode", slow_decode)
        start = time.monotonic()
        with pytest.raises(RequestTimeout):
            await e.generate(messages(images, 5, 1, 1), SamplingRequest(max_tokens=400))
        assert time.monotonic() - start < 1.0
        await until(lambda: sched.running == 0)  # the expired row leaves the batch
        monkeypatch.setattr(runner, "decode", real_decode)

        def slow_prepare(*args):
            time.sleep(0.8)
            return real_prepare(*args)

        monkeypatch.setattr(runner, "prepare", slow_prepare)
        with pytest.raises(RequestTimeout):
            await e.generate(messages(images, 5, 1, 1), SamplingRequest(max_tokens=2))
        monkeypatch.setattr(runner, "prepare", real_prepare)
        await asyncio.sleep(0.5)  # the pool thread finishes the slow call
        ok = await e.generate(messages(images, 5, 1, 1), SamplingRequest(max_tokens=2))
        assert ok.value.completion_tokens == 2


@pytest.mark.parametrize("model", FAMILIES)
async def test_a_request_alone_equals_transformers_generate(engine, images, model):
    """The reference outside this project: positions (M-RoPE deltas included), caches and R-Adapt
    per image match transformers' own greedy ``generate`` on the same inputs."""
    served = engine.models[model]
    runner = served.runner
    for n_images, adapter in [(0, None), (1, None), (2, "strong")]:
        msgs = messages(images, 7, n_images, 2)
        got = (await engine.generate(msgs, SamplingRequest(max_tokens=12), model=model, adapter=adapter)).value
        pil = [images.image_of(70 + k, (20 + 9 * k + 21, 40)) for k in range(n_images)]
        converted = [{"role": "user", "content": [{"type": "image"}] * n_images + [
            {"type": "text", "text": "describe " * 2}]}]
        prompt = runner.prepare(converted, pil)
        ran = served.adapters.snapshot()[adapter] if adapter else None
        with torch.inference_mode(), served.rmodel.control([ran] * n_images):
            out = served.loaded.model.generate(**prompt.inputs, max_new_tokens=12, do_sample=False)
        tokens = out[0, prompt.length:].tolist()
        eos = next((i for i, t in enumerate(tokens) if t in runner.eos), None)
        expected = runner.tokenizer.decode(tokens[:eos], skip_special_tokens=True)
        assert got.text == expected and got.completion_tokens == (len(tokens) if eos is None else eos + 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
async def test_on_cuda_interleaved_equals_alone_in_float32_and_bfloat16_runs(images):
    models = FAMILIES[:2]
    for dtype in ("float32", "bfloat16"):
        settings = load_settings(models=models, device="cuda", dtype=dtype, max_new_tokens=8)
        async with Engine(settings) as e:
            for model in models:
                assert e.models[model].runner.device.type == "cuda"
                cases = [case(images, i) for i in range(6)]
                for c in cases:
                    c.pop("adapter", None)
                alone = [(await e.generate(model=model, **c)).value for c in cases]
                together = await asyncio.gather(*(e.generate(model=model, **c) for c in cases))
                assert all(g.completion_tokens > 0 for g in alone)
                if dtype == "float32":
                    assert [g.value.text for g in together] == [g.text for g in alone]
                    assert len({g.text for g in alone}) >= 4


async def test_ignore_eos_generates_max_tokens_past_the_end_of_turn(engine, images, monkeypatch):
    model = FAMILIES[0]
    runner = engine.models[model].runner
    monkeypatch.setattr(runner, "eos", frozenset(range(len(runner.tokenizer))))  # every token ends the turn
    msgs = messages(images, 1, 1, 1)
    ended = (await engine.generate(msgs, SamplingRequest(max_tokens=8), model=model)).value
    forced = (await engine.generate(msgs, SamplingRequest(max_tokens=8, ignore_eos=True), model=model)).value
    assert (ended.completion_tokens, ended.finish_reason, ended.text) == (1, "stop", "")
    assert (forced.completion_tokens, forced.finish_reason) == (8, "length") and forced.text
