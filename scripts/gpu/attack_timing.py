"""Time the end-to-end LVLM attack of ``radapt eval --task caption|vqa`` on LLaVA-1.5-7B's architecture.

(``--size 13b``: LLaVA-1.5-13B's, the largest LLaVA-1.5 that fits one H100 in bf16.)

Self-contained: builds ``LlavaForConditionalGeneration`` with LLaVA-1.5-7B's configuration
(CLIP ViT-L/14 at 336 px, 576 image tokens, Llama-2-7B: 32 layers, width 4096, vocab 32064) and
RANDOM weights directly on the GPU (no download), injects R-Adapt, and times through the
project's own code (``adapters.lab.lvlm_attacks.LvlmTarget.loss`` + ``adapters.lab.attacks.pgd``):

- one attack step (forward + backward of the teacher-forced loss to the pixels) at batch 1
  (one image) with 1 and 5 references, standard mode and robust mode (white anchor), bf16 and fp32;
- greedy generation of 20 tokens;
- APGD (``apgd_loss``, pyautoattack) for a few iterations when pyautoattack is installed;

and prints the estimate for a 100-step attack and for the paper-style comparison.
Random weights give the same cost as real ones. Runs in about a minute on one H100.

    python scripts/gpu/attack_timing.py            # from the repository root, ~1 min on an H100
    python scripts/gpu/attack_timing.py --size 13b --dtypes bfloat16
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.lab.attacks import pgd  # noqa: E402
from adapters.lab.lvlm_attacks import Example, LvlmTarget  # noqa: E402
from adapters.method.model import RAdaptModel  # noqa: E402

IMAGE_TOKEN = 32000


# LLaVA-1.5's language models: (width, MLP width, layers, heads)
SIZES = {"7b": (4096, 11008, 32, 32), "13b": (5120, 13824, 40, 40)}


def llava_15(size: str, tiny: bool) -> object:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if tiny:  # a CPU smoke test of this script
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                  image_size=56, patch_size=14, projection_dim=32)
        text = LlamaConfig(vocab_size=32064, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096)
    else:
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                                  hidden_act="quick_gelu")
        width, mlp, layers, heads = SIZES[size]
        text = LlamaConfig(vocab_size=32064, hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                           rms_norm_eps=1e-5)
    text.pad_token_id, text.bos_token_id, text.eos_token_id = 0, 1, 2
    tokens = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                       image_seq_length=tokens, vision_feature_select_strategy="default",
                       vision_feature_layer=-2, projector_hidden_act="gelu"), tokens


def example(target: LvlmTarget, side: int, image_tokens: int, refs: int, gen: torch.Generator) -> Example:
    """LLaVA-1.5's prompt shape: BOS, ~35 text tokens around 576 image tokens; captions of 15 tokens."""
    def words(n: int) -> list[int]:
        return torch.randint(100, 31000, (n,), generator=gen).tolist()

    ids = [1] + words(5) + [IMAGE_TOKEN] * image_tokens + words(25) + words(5)
    prompt = {"input_ids": torch.tensor([ids], device=target.device),
              "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=target.device)}
    rows = [words(14) + [2] for _ in range(refs)]
    image = torch.rand(1, 3, side, side, generator=gen).to(target.device)
    return Example(image, prompt, target.forced_batch(prompt, rows))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_steps(target: LvlmTarget, ex: Example, adapter: object, steps: int) -> float:
    """Seconds per attack step (one forward + backward to the pixels), after one warm-up step."""
    loss_fn = target.loss_fn(ex, adapter)
    pgd(loss_fn, ex.image, 4, steps=1)
    sync()
    t = time.perf_counter()
    pgd(loss_fn, ex.image, 4, steps=steps)
    sync()
    return (time.perf_counter() - t) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed attack steps per setting (default 3)")
    parser.add_argument("--size", choices=sorted(SIZES), default="7b", help="LLaVA-1.5-7B (default) or -13B")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma separated (default bfloat16,float32)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test with a tiny configuration")
    args = parser.parse_args()
    import transformers
    from transformers import LlavaForConditionalGeneration

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    config, image_tokens = llava_15(args.size, args.tiny)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    t = time.perf_counter()
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).eval()
    torch.set_default_dtype(previous)
    sync()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"built LLaVA-1.5-{args.size.upper()} architecture, random weights: {n_params / 1e9:.2f} B parameters, "
          f"{time.perf_counter() - t:.1f} s")
    rmodel = RAdaptModel(model)  # OpenAI CLIP mean/std, as LLaVA-1.5's processor
    with torch.no_grad():
        white = rmodel.build_adapter(rmodel.white_anchor(), method="white")
    stub = SimpleNamespace(tokenizer=SimpleNamespace(eos_token_id=2, pad_token_id=0, decode=lambda ids, **kw: ""))
    side = config.vision_config.image_size
    gen = torch.Generator().manual_seed(0)
    results: dict[tuple[str, int, str], float] = {}
    for dtype in (getattr(torch, d.strip()) for d in args.dtypes.split(",")):
        model.to(dtype)
        target = LvlmTarget(rmodel, stub)
        w = white.to(device)
        for refs in (1, 5):
            ex = example(target, side, image_tokens, refs, gen)
            for mode, adapter in (("standard", None), ("robust", w)):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                try:
                    step = time_steps(target, ex, adapter, args.steps)
                except torch.OutOfMemoryError:
                    print(f"{dtype} refs={refs} {mode}: out of memory")
                    torch.cuda.empty_cache()
                    continue
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
                key = (str(dtype).replace("torch.", ""), refs, mode)
                results[key] = step
                print(f"{key[0]:8s} refs={refs} {mode:8s}: {1000 * step:7.1f} ms/step, 100 steps {100 * step:6.1f} s, "
                      f"peak {peak:.1f} GiB (L={ex.forced['input_ids'].shape[1]})")
        ex = example(target, side, image_tokens, 1, gen)
        target.generate(ex.image, ex, w, 2)
        sync()
        t = time.perf_counter()
        target.generate(ex.image, ex, w, 20)
        sync()
        gen_s = time.perf_counter() - t
        print(f"{str(dtype).replace('torch.', ''):8s} greedy generation, 20 tokens (robust): {gen_s:.2f} s")
        results[(str(dtype).replace("torch.", ""), 0, "generate")] = gen_s
        if importlib.util.find_spec("pyautoattack") is not None:
            from adapters.lab.attacks import apgd_loss

            ex = example(target, side, image_tokens, 5, gen)
            sync()
            t = time.perf_counter()
            apgd_loss(target.loss_fn(ex, w), ex.image, 4, steps=args.steps)
            sync()
            per = (time.perf_counter() - t) / (args.steps + 1)  # + its initial forward
            name = str(dtype).replace("torch.", "")
            print(f"{name:8s} APGD (pyautoattack) refs=5 robust: {1000 * per:7.1f} ms/iteration")
        else:
            print("pyautoattack not installed: APGD not timed (its iteration costs one PGD step)")
    for dt in (d.strip() for d in args.dtypes.split(",")):
        if (dt, 5, "robust") not in results:
            continue
        step, g = results[(dt, 5, "robust")], results[(dt, 0, "generate")]
        # per image and configuration: clean generation + clean loss, then per eps (2, 4): 100 steps,
        # the attacked loss and the attacked generation (a forward counted as a step: an upper bound)
        per_image = g + step + 2 * (101 * step + g)
        total = 500 * 3 * per_image  # 500 COCO images; standard, white and one adapter
        print(f"estimate {dt}: one image, one configuration, eps 2 and 4 (100 APGD steps each, 5 refs): "
              f"{per_image:.0f} s; 500 images x 3 configurations: {total / 3600:.1f} h")

if __name__ == "__main__":
    main()
