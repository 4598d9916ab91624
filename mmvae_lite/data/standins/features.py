"""Fixed random-convolution image features: the stand-in for ResNet-101 pooled features."""
from __future__ import annotations

import functools
import math

import torch

__all__ = ["STANDIN_FEATURE_DIM", "standin_features"]

#: Dimension of the stand-in image features (same as ResNet-101 pooled features).
STANDIN_FEATURE_DIM = 2048


@functools.lru_cache(maxsize=2)
def _feature_net(seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 48, 5, stride=2, padding=2),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(48, 192, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(192, STANDIN_FEATURE_DIM, 1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def standin_features(images: torch.Tensor, seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
    """Fixed random-convolution features: a stand-in for ResNet-101 pooled features.

    The pretrained ResNet-101 weights used by the paper cannot be downloaded
    everywhere, so this maps each image to a non-negative 2048-d vector with a
    *fixed* (seeded, untrained) three-layer ReLU conv net followed by global average
    pooling. It keeps colour and coarse shape information (so nearest-neighbour
    look-ups find similar birds) but it is *not* a pretrained feature extractor.

    Args:
        images: uint8 (N, 3, H, W) or float in [0, 1].
        seed: seed of the random weights (fixed per dataset).
        batch_size: images per forward pass.

    Returns:
        float32 (N, 2048), non-negative, the ReLU outputs times 0.25. On the CUB stand-in's 8855
        training birds: mean 0.15, 28 % exact zeros, per-dimension standard deviation across images
        0.05 (median over dimensions; 0.23 at the 90th percentile).
    """
    net = _feature_net(int(seed))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            out.append(net((x - mean) / std))
    feats = torch.cat(out) if out else torch.zeros(0, STANDIN_FEATURE_DIM)
    return feats * 0.25
