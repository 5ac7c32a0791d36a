"""The generation section of the benchmark on a GPU, in process, on LLaVA-1.5-7B's architecture.

Builds ``LlavaForConditionalGeneration`` with LLaVA-1.5-7B's shapes (CLIP ViT-L/14 at 336 px, 576
image tokens; Llama-2-7B: 32 layers, width 4096) and RANDOM weights directly on the GPU (the GPU
machine has no network), with builtin:tiny-llava's tokenizer (so the vocabulary is small: the LM
head is ~1% of a real one's cost), and serves it through the project's own ``Engine`` (continuous
batching scheduler, R-Adapt per request). Random weights cost what real ones cost.

    python scripts/gpu/generation_bench.py [--dtype bfloat16] [--seconds 8] [--tiny]   # --tiny: CPU smoke test

Prints JSON: head-of-line (4-token chat beside a 400-token one / alone), completion tokens/s with 16
closed-loop clients / 1 client (max_tokens cycling 16, 64, 256), all-robust / all-standard and 50/50
mix / all-standard tokens/s, ms per decode step and KV bytes per token and per running sequence.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.zoo.loading import LoadedModel  # noqa: E402
from service.engine.engine import Engine  # noqa: E402
from service.engine.generation import SamplingRequest  # noqa: E402
from service.settings import load_settings  # noqa: E402

NAME = "llava-1.5-7b-random"


def build(tiny: bool, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from adapters.zoo.vlm import LLAVA_CHAT_TEMPLATE, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, llava_tokenizer

    tok = llava_tokenizer()
    ids = tok.convert_tokens_to_ids
    if tiny:
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                  image_size=56, patch_size=14)
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    else:
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                                  hidden_act="quick_gelu")
        text = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
    llama = LlamaConfig(vocab_size=len(tok), max_position_embeddings=4096, rms_norm_eps=1e-5,
                        num_key_value_heads=text["num_attention_heads"], bos_token_id=ids("<s>"),
                        eos_token_id=ids("</s>"), pad_token_id=ids("<pad>"), **text)
    side = vision.image_size
    tokens = (side // vision.patch_size) ** 2
    config = LlavaConfig(vision_config=vision, text_config=llama, image_token_index=ids("<image>"),
                         image_seq_length=tokens, vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = ids("</s>"), ids("<pad>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                         image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=vision.patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    return LoadedModel(NAME, "llava", model, processor, device, dtype, NAME)


def messages(image) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                         {"type": "text", "text": "Describe the picture in detail."}]}]


async def closed_loop(engine: Engine, image, clients: int, seconds: float, robust) -> dict:
    """``clients`` loops for ``seconds``; tokens counted inside [20%, 100%] of the window from the counter."""
    choices = itertools.cycle([16, 64, 256])
    stop = time.monotonic() + seconds
    counter = engine.metrics.generated_tokens.labels(model=NAME)

    async def client(k: int) -> None:
        n = 0
        while time.monotonic() < stop:
            await engine.generate(messages(image), SamplingRequest(max_tokens=next(choices)), robust=robust(k, n))
            n += 1

    tasks = [asyncio.ensure_future(client(k)) for k in range(clients)]
    await asyncio.sleep(seconds * 0.2)
    t0, c0 = time.monotonic(), counter._value.get()
    await asyncio.sleep(seconds * 0.8)
    t1, c1 = time.monotonic(), counter._value.get()
    await asyncio.gather(*tasks)
    return {"clients": clients, "tokens_per_s": round((c1 - c0) / (t1 - t0), 1)}


async def main(args: argparse.Namespace) -> dict:
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = getattr(torch, args.dtype)
    t = time.monotonic()
    loaded = build(args.tiny, device, dtype)
    built_s = time.monotonic() - t
    settings = load_settings(models=[NAME], device=str(device), dtype=args.dtype, request_timeout_s=600,
                             max_queue=4096, max_running_requests=32, warmup=True)
    from PIL import Image

    image = Image.new("RGB", (336, 336), (120, 60, 30))
    out: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": args.dtype,
                 "model": "LLaVA-1.5-7B architecture, random weights" if not args.tiny else "tiny", "build_s":
                 round(built_s, 1), "torch": torch.__version__}
    async with Engine(settings, loader=lambda *a, **k: loaded) as engine:
        runner = engine.models[NAME].runner
        short, long = SamplingRequest(max_tokens=4), SamplingRequest(max_tokens=args.long_tokens)

        async def timed(**kw) -> float:
            t0 = time.monotonic()
            await engine.generate(messages(image), short, **kw)
            return time.monotonic() - t0

        alone = [await timed() for _ in range(args.samples)]
        beside = []
        for _ in range(args.samples):
            background = asyncio.ensure_future(engine.generate(messages(image), long))
            await asyncio.sleep(0.3)
            beside.append(await timed())
            await background
        a, b = statistics.median(alone), statistics.median(beside)
        out["head_of_line"] = {"alone_ms": round(a * 1e3, 1), "with_long_ms": round(b * 1e3, 1),
                               "ratio": round(b / a, 3)}
        one = await closed_loop(engine, image, 1, args.seconds, lambda k, n: False)
        many = await closed_loop(engine, image, 16, args.seconds, lambda k, n: False)
        out["tokens_per_s"] = {"1": one["tokens_per_s"], "16": many["tokens_per_s"],
                               "ratio": round(many["tokens_per_s"] / one["tokens_per_s"], 3)}
        modes = {"standard": lambda k, n: False, "robust": lambda k, n: True, "mix": lambda k, n: (k + n) % 2 == 1}
        runs: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):  # interleaved, so drift over the run falls on every mode alike
            for m, f in modes.items():
                runs[m].append((await closed_loop(engine, image, 16, args.seconds, f))["tokens_per_s"])
        tps = {m: round(statistics.mean(v), 1) for m, v in runs.items()}
        out["modes_rounds"] = runs
        out["modes_tokens_per_s"] = tps
        out["robust_vs_standard"] = round(tps["robust"] / tps["standard"], 3)
        out["mix_vs_standard"] = round(tps["mix"] / tps["standard"], 3)
        steps = engine.metrics.inference_duration.labels(model=NAME)
        total, count = steps._sum.get(), sum(b.get() for b in steps._buckets)
        out["mean_decode_step_ms"] = round(total / max(count, 1) * 1e3, 2)
        out["kv_bytes_per_token"] = runner.kv_bytes_per_token
        out["kv_mib_per_sequence_at_700_tokens"] = round(runner.kv_bytes_per_token * 700 / 2**20, 1)
        if device.type == "cuda":
            out["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per load point")
    p.add_argument("--samples", type=int, default=3, help="head-of-line samples")
    p.add_argument("--long-tokens", type=int, default=400)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the mode comparison")
    p.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (smoke test of this script)")
    p.add_argument("--switch-interval", type=float, default=0.0005,
                   help="sys.setswitchinterval (seconds) before serving; radapt serve's default is 0.0005")
    args = p.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    result = asyncio.run(main(args))
    result["switch_interval_s"] = sys.getswitchinterval()
    print(json.dumps(result, indent=2), flush=True)
