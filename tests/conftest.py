"""Shared fixtures: tiny models whose gradients and likelihoods can be checked exactly."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from mmvae_lite.distributions import LaplaceLikelihood, Prior
from mmvae_lite.models import Modality, MultimodalVAE, VAE
from mmvae_lite.networks import Decoder, Encoder

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture()
def one_thread():
    """For tiny models one intra-op thread is faster, and far faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyEncoder(Encoder):
    """x (D,) -> (loc, raw scale) (L,): one small tanh layer, so gradients are non-trivial."""

    def __init__(self, x_dim: int, latent_dim: int, hidden: int = 8) -> None:
        super().__init__()
        self.event_shape = (x_dim,)
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim))
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1, 2, self.latent_dim)


class TinyDecoder(Decoder):
    def __init__(self, latent_dim: int, x_dim: int, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def tiny_modality(name: str, x_dim: int, latent_dim: int, family: str = "laplace",
                  scale_param: str = "sum_to_d", llik_scale: float = 0.5) -> Modality:
    return Modality(name, TinyEncoder(x_dim, latent_dim), TinyDecoder(latent_dim, x_dim),
                    LaplaceLikelihood(llik_scale, event_dims=1), family=family, scale_param=scale_param)


@pytest.fixture
def tiny_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(tiny_modality("x", 3, 2), Prior(2, "laplace"))


def make_tiny_mm(joint: str = "moe", family: str = "laplace", seed: int = 0) -> MultimodalVAE:
    torch.manual_seed(seed)
    mods = [tiny_modality("a", 3, 2, family), tiny_modality("b", 5, 2, family)]
    return MultimodalVAE(mods, Prior(2, family), joint=joint)


@pytest.fixture
def tiny_mm() -> MultimodalVAE:
    return make_tiny_mm()


def tiny_batch(B: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(B, 3, generator=g), "b": torch.randn(B, 5, generator=g)}


def log_mean_exp_np(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])
