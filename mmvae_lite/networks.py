"""Encoders and decoders of the paper's appendix F (Table 6), plus a 64x64 RGB image CNN.

Conventions shared by every network here:

* an **encoder** maps data of shape ``(*lead, *event)`` to ``(loc, raw_scale)``, both
  ``(*lead, L)``; ``raw_scale`` is unconstrained and turned into a scale by the modality's
  :func:`~mmvae_lite.distributions.positive_scale` rule;
* a **decoder** maps latents ``(*lead, L)`` to likelihood parameters ``(*lead, *params)``;
* ``lead`` is any number of sample/batch dimensions, e.g. ``(K, B)`` or ``(M, K, B)``: convolutional
  networks fold them into one batch dimension and unfold them afterwards.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn


def _fold(x: torch.Tensor, event_dims: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` (which wants exactly one batch dim) to ``x`` with arbitrary leading dims."""
    lead = x.shape[: x.dim() - event_dims]
    y = fn(x.reshape(-1, *x.shape[x.dim() - event_dims:]))
    return y.reshape(*lead, *y.shape[1:])


class Encoder(nn.Module):
    """Base class: subclasses set ``event_shape`` and implement ``_body`` (one batch dim)."""

    event_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = _fold(x, len(self.event_shape), self._body)  # (*lead, 2, L)
        return out[..., 0, :], out[..., 1, :]

    def _body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Decoder(nn.Module):
    """Base class: subclasses implement ``_body`` mapping ``(N, L)`` to ``(N, *params)``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _fold(z, 1, self._body)

    def _body(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# MNIST: Table 6(a), an MLP with 400 hidden units.
# --------------------------------------------------------------------------------------------
class MNISTEncoder(Encoder):
    """1x28x28 -> FC 400 ReLU -> (FC L, FC L)."""

    event_shape = (1, 28, 28)

    def __init__(self, latent_dim: int, hidden: int = 400) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(inplace=True))
        self.heads = nn.Linear(hidden, 2 * latent_dim)  # both heads in one matmul
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(x)).view(-1, 2, self.latent_dim)


class MNISTDecoder(Decoder):
    """L -> FC 400 ReLU -> FC 784 Sigmoid, reshaped to 1x28x28 (mean of the pixel likelihood)."""

    def __init__(self, latent_dim: int, hidden: int = 400, eps: float = 1e-6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 784))
        self.eps = eps

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        # The authors clamp the mean to [eta, 1 - eta]; the clamp is kept for checkpoint fidelity.
        return torch.sigmoid(self.net(z)).clamp(self.eps, 1 - self.eps).view(-1, 1, 28, 28)


# --------------------------------------------------------------------------------------------
# SVHN: Table 6(b), a 4-layer CNN with 32-64-128 channels and 4x4 convolutional heads.
# --------------------------------------------------------------------------------------------
class SVHNEncoder(Encoder):
    """3x32x32 -> conv 32, 64, 128 (4x4, stride 2) -> two 4x4 conv heads of L channels."""

    event_shape = (3, 32, 32)

    def __init__(self, latent_dim: int, base: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, base, 4, 2, 1), nn.ReLU(inplace=True),             # 16x16
            nn.Conv2d(base, base * 2, 4, 2, 1), nn.ReLU(inplace=True),      # 8x8
            nn.Conv2d(base * 2, base * 4, 4, 2, 1), nn.ReLU(inplace=True),  # 4x4
        )
        self.heads = nn.Conv2d(base * 4, 2 * latent_dim, 4, 1, 0)           # 1x1
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(x)).view(-1, 2, self.latent_dim)


class SVHNDecoder(Decoder):
    """L -> upconv 128 (4x4) -> 64 -> 32 -> 3 channels (stride 2) -> Sigmoid: 3x32x32."""

    def __init__(self, latent_dim: int, base: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, base * 4, 4, 1, 0), nn.ReLU(inplace=True),  # 4x4
            nn.ConvTranspose2d(base * 4, base * 2, 4, 2, 1), nn.ReLU(inplace=True),    # 8x8
            nn.ConvTranspose2d(base * 2, base, 4, 2, 1), nn.ReLU(inplace=True),        # 16x16
            nn.ConvTranspose2d(base, 3, 4, 2, 1), nn.Sigmoid(),                        # 32x32
        )

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


# --------------------------------------------------------------------------------------------
# CUB image features: Table 6(c), MLPs on 2048-d ResNet-101 features.
# --------------------------------------------------------------------------------------------
def _mlp(sizes: Sequence[int], act: type[nn.Module] = nn.ELU, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class FeatureEncoder(Encoder):
    """2048 -> FC 1024 ELU -> 512 ELU -> 256 ELU -> (FC L, FC L)."""

    def __init__(self, latent_dim: int, in_dim: int = 2048, hidden: Sequence[int] = (1024, 512, 256)) -> None:
        super().__init__()
        self.event_shape = (in_dim,)
        self.body = _mlp([in_dim, *hidden])
        self.heads = nn.Linear(hidden[-1], 2 * latent_dim)
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(x)).view(-1, 2, self.latent_dim)


class FeatureDecoder(Decoder):
    """L -> FC 256 ELU -> 512 ELU -> 1024 ELU -> FC 2048 (features are unbounded: no squashing)."""

    def __init__(self, latent_dim: int, out_dim: int = 2048, hidden: Sequence[int] = (256, 512, 1024)) -> None:
        super().__init__()
        self.net = _mlp([latent_dim, *hidden, out_dim], last_act=False)

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


# --------------------------------------------------------------------------------------------
# CUB sentences: Table 6(d), a CNN over the (T x E) word-embedding matrix.
# --------------------------------------------------------------------------------------------
class SentenceEncoder(Encoder):
    """Token ids (T=32) -> embedding (E) -> 2-D conv stack of Table 6(d) -> two 4x4 conv heads.

    Table 6 prints a 256-d embedding, but its conv stack reduces a 32 x E matrix to 1x1 only for
    E = 128, which is what the authors' code uses; ``emb_dim`` defaults to 128 for that reason.
    The decoder's output layer is tied to this embedding (as in the authors' code).
    """

    def __init__(self, latent_dim: int, vocab_size: int, max_len: int = 32, emb_dim: int = 128,
                 base: int = 32, pad_idx: int = 0) -> None:
        super().__init__()
        if max_len != 32 or emb_dim != 128:
            raise ValueError("the Table 6(d) conv stack needs max_len=32 and emb_dim=128")
        self.event_shape = (max_len,)
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_idx)
        c = base
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),                      # 16x64
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True),              # 8x32
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.BatchNorm2d(4 * c), nn.ReLU(inplace=True),          # 4x16
            nn.Conv2d(4 * c, 8 * c, (1, 4), (1, 2), (0, 1)), nn.BatchNorm2d(8 * c), nn.ReLU(inplace=True),   # 4x8
            nn.Conv2d(8 * c, 16 * c, (1, 4), (1, 2), (0, 1)), nn.BatchNorm2d(16 * c), nn.ReLU(inplace=True),  # 4x4
        )
        self.heads = nn.Conv2d(16 * c, 2 * latent_dim, 4, 1, 0)
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x.long()).unsqueeze(1)
        return self.heads(self.body(e)).view(-1, 2, self.latent_dim)


class SentenceDecoder(Decoder):
    """L -> transposed conv stack of Table 6(d) -> 32 x 128 -> logits over the vocabulary (32 x V)."""

    def __init__(self, latent_dim: int, vocab_size: int, max_len: int = 32, emb_dim: int = 128,
                 base: int = 32) -> None:
        super().__init__()
        c = base
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 16 * c, 4, 1, 0), nn.BatchNorm2d(16 * c), nn.ReLU(inplace=True),          # 4x4
            nn.ConvTranspose2d(16 * c, 8 * c, (1, 4), (1, 2), (0, 1)), nn.BatchNorm2d(8 * c), nn.ReLU(inplace=True),  # 4x8
            nn.ConvTranspose2d(8 * c, 4 * c, (1, 4), (1, 2), (0, 1)), nn.BatchNorm2d(4 * c), nn.ReLU(inplace=True),   # 4x16
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True),                  # 8x32
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),                          # 16x64
            nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.ReLU(inplace=True),                                                 # 32x128
        )
        self.to_vocab = nn.Linear(emb_dim, vocab_size)
        self.max_len, self.emb_dim = max_len, emb_dim

    def tie(self, embedding: nn.Embedding) -> None:
        """Share the output projection with the encoder's word embedding (authors' ``tie_modules``)."""
        self.to_vocab.weight = embedding.weight

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        h = self.net(z[:, :, None, None]).view(-1, self.max_len, self.emb_dim)
        return self.to_vocab(h)


# --------------------------------------------------------------------------------------------
# 64x64 RGB images (CUB raw images or their stand-in): a DCGAN-style CNN.
# --------------------------------------------------------------------------------------------
class Image64Encoder(Encoder):
    """3x64x64 -> conv base, 2b, 4b, 8b (4x4, stride 2) -> two 4x4 conv heads."""

    event_shape = (3, 64, 64)

    def __init__(self, latent_dim: int, base: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(4):  # 32, 16, 8, 4
            layers += [nn.Conv2d(c_in, base * 2 ** i, 4, 2, 1), nn.ReLU(inplace=True)]
            c_in = base * 2 ** i
        self.body = nn.Sequential(*layers)
        self.heads = nn.Conv2d(c_in, 2 * latent_dim, 4, 1, 0)
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(x)).view(-1, 2, self.latent_dim)


class Image64Decoder(Decoder):
    """L -> upconv 8b (4x4) -> 4b -> 2b -> b -> 3 (stride 2) -> Sigmoid: 3x64x64."""

    def __init__(self, latent_dim: int, base: int = 32) -> None:
        super().__init__()
        chans = [base * 8, base * 4, base * 2, base]
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, chans[0], 4, 1, 0), nn.ReLU(inplace=True)]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


def count_parameters(module: nn.Module) -> int:
    """Number of distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters() if p.requires_grad}.values())


__all__ = [
    "Encoder", "Decoder", "MNISTEncoder", "MNISTDecoder", "SVHNEncoder", "SVHNDecoder",
    "FeatureEncoder", "FeatureDecoder", "SentenceEncoder", "SentenceDecoder",
    "Image64Encoder", "Image64Decoder", "count_parameters",
]
