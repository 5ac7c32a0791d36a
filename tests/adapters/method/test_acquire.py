import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from adapters import AdapterMismatchError, RAdaptModel
from adapters.method.acquire import guided_adapter, white_adapter

pytestmark = pytest.mark.unit


def inject(model, processor) -> RAdaptModel:
    ip = processor.image_processor
    return RAdaptModel(model, ip.image_mean, ip.image_std)


def test_guided_anchor_comes_from_the_robust_model(fresh_clip):
    # A "robust" model of the same architecture: same config, other weights.
    torch.manual_seed(123)
    robust_model = CLIPModel(fresh_clip.model.config).eval()
    served = inject(fresh_clip.model, fresh_clip.processor)
    robust = inject(robust_model, fresh_clip.processor)
    guided = guided_adapter(served, robust, sigma=0.5, alpha=0.7, source="guided:test")
    white = white_adapter(served)
    assert guided.config.method == "guided" and guided.config.alpha == 0.7
    assert torch.allclose(guided.anchor, robust.white_anchor())
    assert not torch.allclose(guided.anchor, white.anchor, atol=1e-3)
    px = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), served.control([guided]):
        out = fresh_clip.model.get_image_features(pixel_values=px).pooler_output
    assert torch.isfinite(out).all()


def test_guided_refuses_another_architecture(fresh_clip):
    cfg = CLIPConfig(text_config=fresh_clip.model.config.text_config.to_dict(),
                     vision_config=dict(fresh_clip.model.config.vision_config.to_dict(), image_size=48),
                     projection_dim=16)
    other = inject(CLIPModel(cfg).eval(), fresh_clip.processor)
    served = inject(fresh_clip.model, fresh_clip.processor)
    with pytest.raises(AdapterMismatchError):
        guided_adapter(served, other)
