"""tiny-llava: the data-driven anchor trained on pooled vs LVLM (layer -2 patch token) features.

Trains both (and keeps the white anchor) on 64 smooth random images, then on 16 held-out ones
measures the attacked FARE loss on either feature, and end to end the reference loss and the
self-CIDEr (references = standard mode's own clean captions) under APGD (eps 4/255, 20 steps).
CPU, about 20 s:  OMP_NUM_THREADS=1 .venv/bin/python scripts/llava_anchor_features.py
"""

import time

import torch
from PIL import Image

from adapters import RAdaptModel
from adapters.lab.captioning_metrics import CiderD
from adapters.lab.lvlm_attacks import LvlmTarget, attack_example
from adapters.lab.train import TrainSettings, attacked_fare_loss, train_anchor
from adapters.method.acquire import white_adapter
from adapters.zoo.loading import load_model

torch.set_num_threads(1)


def synthetic(n, seed):
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


def mean(v):
    return sum(v) / len(v)


L = load_model("builtin:tiny-llava", device="cpu", dtype="float32")
r = RAdaptModel.from_loaded(L)
train, held = synthetic(64, 0), synthetic(16, 1)
base = dict(eps=4, steps=3, epochs=3, batch_size=16, lr=3e-2, seed=0)
t0 = time.time()
ads = {"white": white_adapter(r)}
for f in ("pooled", "lvlm"):
    ads[f"data/{f}"] = train_anchor(r, train, TrainSettings(**base, features=f), progress=False)
print(f"training {time.time()-t0:.1f}s")
for f in ("pooled", "lvlm"):
    s = TrainSettings(**base, features=f)
    print(f"attacked FARE loss on {f} features (eps 4, 3 PGD steps, 16 held-out):",
          {k: round(attacked_fare_loss(r, a, held, s), 4) for k, a in ads.items()})
# end to end: references = standard-mode captions of the clean images; APGD 20 steps eps 4 on their LM loss
tgt = LvlmTarget(r, L.processor)
imgs = [Image.fromarray((h.permute(1, 2, 0).numpy() * 255).astype("uint8")) for h in held]
exs0 = [tgt.example(im, "Provide a short caption for this image.", ["x"]) for im in imgs]
refs = [tgt.generate(e.image, e, None, 8) for e in exs0]
exs = [tgt.example(im, "Provide a short caption for this image.", [ref]) for im, ref in zip(imgs, refs, strict=True)]
cider = CiderD([[ref] for ref in refs])
for name, a in [("standard", None)] + list(ads.items()):
    clean_l, adv_l, clean_c, adv_c = [], [], [], []
    for i, e in enumerate(exs):
        with torch.no_grad():
            clean_l.append(float(tgt.loss(e.image, e, a)))
        x = attack_example(tgt, e, a, 4, "apgd", 20, seed=i)
        with torch.no_grad():
            adv_l.append(float(tgt.loss(x, e, a)))
        clean_c.append(cider.score(i, tgt.generate(e.image, e, a, 8)))
        adv_c.append(cider.score(i, tgt.generate(x, e, a, 8)))
    print(f"{name:12s} ref loss clean {mean(clean_l):.3f} attacked {mean(adv_l):.3f} | "
          f"self-CIDEr x100 clean {100 * mean(clean_c):.1f} attacked {100 * mean(adv_c):.1f}")
