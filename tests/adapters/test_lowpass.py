import math

import pytest
import torch

from adapters.lowpass import gaussian_blur, gaussian_kernel1d, kernel_radius
from tests.helpers import gaussian_reference

pytestmark = pytest.mark.unit



@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_filter_equals_explicit_2d_gaussian(sigma):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 24, dtype=torch.float64)
    got = gaussian_blur(x, sigma)
    assert torch.allclose(got, gaussian_reference(x, sigma), atol=1e-12)
    assert not torch.allclose(got, x)  # it really filters
    x.requires_grad_(True)
    gaussian_blur(x, sigma).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable


def test_kernel_size_and_normalisation():
    assert kernel_radius(1.0) == 3 and kernel_radius(0.4) == 2
    k = gaussian_kernel1d(1.5)
    assert k.numel() == 2 * math.ceil(4.5) + 1
    assert torch.isclose(k.sum(), torch.tensor(1.0))
    assert torch.equal(k, k.flip(0))


def test_low_pass_removes_high_frequencies():
    x = torch.zeros(1, 1, 32, 32)
    x[..., ::2, :] = 1.0  # Nyquist stripes
    y = gaussian_blur(x, 1.0)
    assert y.std() < 0.05 * x.std()
    const = torch.full((1, 3, 16, 16), 0.7)
    assert torch.allclose(gaussian_blur(const, 2.0), const, atol=1e-6)


def test_commutes_with_per_channel_normalisation():
    torch.manual_seed(1)
    x = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    mean = torch.tensor([0.48, 0.45, 0.40], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.27, 0.26, 0.28], dtype=torch.float64).view(1, 3, 1, 1)
    a = (gaussian_blur(x, 1.0) - mean) / std
    b = gaussian_blur((x - mean) / std, 1.0)
    assert torch.allclose(a, b, atol=1e-12)




def test_small_images_cap_the_radius():
    x = torch.rand(1, 3, 4, 4)
    y = gaussian_blur(x, 5.0)  # radius 15 > 3: capped, still a weighted average
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6


@pytest.mark.parametrize("sigma, size", [(1.0, 32), (2.0, 24), (5.0, 8)])  # the last caps the radius
def test_blur_folded_into_the_patch_conv_equals_blur_then_conv(sigma, size):
    from adapters.lowpass import blurred_patch_conv

    torch.manual_seed(4)
    conv = torch.nn.Conv2d(3, 5, kernel_size=4, stride=4, bias=True).double()
    x = torch.rand(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    got = blurred_patch_conv(x, conv, sigma)
    want = conv(gaussian_reference(x, sigma) if kernel_radius(sigma) < size else gaussian_blur(x, sigma))
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-10)
    assert not torch.allclose(got, conv(x), atol=1e-3)
    got.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
