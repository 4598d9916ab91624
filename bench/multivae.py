"""MultiVae's MMVAE (PyPI ``multivae``, AgatheSenellart/MultiVae) on the paper's MNIST-SVHN networks.

Used by ``python -m bench.bench --impl multivae``. MultiVae is never vendored: install it where this
benchmark can import it, e.g. into the git-ignored ``.multivae/`` folder, and point
``MMVAE_MULTIVAE_PATH`` there (or install it into the environment)::

    pip install --no-deps --target .multivae multivae==1.0.3 pythae==0.1.2 torchmetrics imageio lightning-utilities
    export MMVAE_MULTIVAE_PATH=$PWD/.multivae

The model is MultiVae's ``MMVAE`` configured as the paper's MNIST-SVHN experiment: Laplace prior
and posteriors with the softmax (sum-to-D) scales, learnt prior, the ``dreg_looser`` (DReG,
stratified) or ``iwae_looser`` loss, Laplace likelihoods of scale 0.75, likelihood rescaling
by input size (3072/784 for MNIST). Networks: MultiVae's own ``Encoder_VAE_SVHN`` /
``Decoder_VAE_SVHN`` (appendix F's SVHN networks) and, since its MNIST defaults are a wider MLP,
appendix F's MNIST MLP (784-400-20) written below against its ``BaseEncoder`` / ``BaseDecoder``
interfaces, so all three implementations do the same arithmetic. The step is its trainer's
(``model(inputs)``, ``zero_grad``, ``loss.backward``, ``step``) with the paper's
``Adam(lr=1e-3, amsgrad=True)``.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import torch
from torch import nn

# our objective -> MultiVae's MMVAE loss (it has no importance-sampled ELBO and no mixture bound in training)
LOSSES = {"m_dreg_stratified": "dreg_looser", "m_iwae_stratified": "iwae_looser"}

# the authors' state_dict prefixes (bench.bench.authors_state_from_ours) -> MultiVae's
_RENAME = {
    "_pz_params.0": "prior_mean", "_pz_params.1": "prior_log_var",
    "vaes.0.enc.enc.0.0.": "encoders.mnist.hidden.", "vaes.0.enc.fc21.": "encoders.mnist.fc21.",
    "vaes.0.enc.fc22.": "encoders.mnist.fc22.", "vaes.0.dec.dec.0.0.": "decoders.mnist.hidden.",
    "vaes.0.dec.fc3.": "decoders.mnist.fc3.",
    "vaes.1.enc.enc.": "encoders.svhn.enc.", "vaes.1.enc.c1.": "encoders.svhn.c1.",
    "vaes.1.enc.c2.": "encoders.svhn.c2.", "vaes.1.dec.dec.": "decoders.svhn.dec.",
}


def import_multivae() -> None:
    """Make ``multivae`` importable (``$MMVAE_MULTIVAE_PATH`` first) or exit with how to get it."""
    path = os.environ.get("MMVAE_MULTIVAE_PATH")
    if path:
        sys.path.insert(0, os.path.abspath(path))
    try:
        import multivae  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"MultiVae is not importable ({e}); install it, e.g. `pip install --no-deps --target "
                         ".multivae multivae==1.0.3 pythae==0.1.2 torchmetrics imageio lightning-utilities` and "
                         "set MMVAE_MULTIVAE_PATH=$PWD/.multivae") from None


def build(seed: int, K: int, objective: str):
    """MultiVae's MMVAE with appendix F's MNIST-SVHN networks (random weights from ``seed``)."""
    if objective not in LOSSES:
        raise SystemExit(f"MultiVae's MMVAE has no counterpart for {objective!r}; choose one of {sorted(LOSSES)}")
    import_multivae()
    from multivae.models import MMVAE, MMVAEConfig
    from multivae.models.nn.svhn import Decoder_VAE_SVHN, Encoder_VAE_SVHN
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder

    class MNISTEncoder(BaseEncoder):   # appendix F: 784 -> 400 (ReLU) -> (20, 20)
        def __init__(self, latent_dim: int) -> None:
            BaseEncoder.__init__(self)
            self.hidden, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, latent_dim), nn.Linear(400, latent_dim)

        def forward(self, x: torch.Tensor):
            e = torch.relu(self.hidden(x.reshape(*x.shape[:-3], -1)))
            return ModelOutput(embedding=self.fc21(e), log_covariance=self.fc22(e))

    class MNISTDecoder(BaseDecoder):   # appendix F: 20 -> 400 (ReLU) -> 784 (sigmoid), clamped as the authors'
        def __init__(self, latent_dim: int) -> None:
            BaseDecoder.__init__(self)
            self.hidden, self.fc3 = nn.Linear(latent_dim, 400), nn.Linear(400, 784)

        def forward(self, z: torch.Tensor):
            p = torch.sigmoid(self.fc3(torch.relu(self.hidden(z))))
            return ModelOutput(reconstruction=p.clamp(1e-6, 1 - 1e-6).reshape(*z.shape[:-1], 1, 28, 28))

    dims = {"mnist": (1, 28, 28), "svhn": (3, 32, 32)}
    cfg = MMVAEConfig(n_modalities=2, latent_dim=20, input_dims=dims, uses_likelihood_rescaling=True,
                      decoders_dist={"mnist": "laplace", "svhn": "laplace"},
                      decoder_dist_params={"mnist": {"scale": 0.75}, "svhn": {"scale": 0.75}},
                      K=K, prior_and_posterior_dist="laplace_with_softmax", learn_prior=True,
                      loss=LOSSES[objective])
    torch.manual_seed(seed)
    arch = type("Args", (), {"latent_dim": 20, "input_dim": dims["svhn"]})()
    return MMVAE(cfg, encoders={"mnist": MNISTEncoder(20), "svhn": Encoder_VAE_SVHN(arch)},
                 decoders={"mnist": MNISTDecoder(20), "svhn": Decoder_VAE_SVHN(arch)})


def _renamed(sd: dict[str, torch.Tensor], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """``sd`` with each key's first matching prefix replaced (keys matching none are dropped)."""
    out = {}
    for key, value in sd.items():
        for old, new in prefixes.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
    return out


def state_from_authors(authors_sd: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """An authors'-layout MNIST-SVHN state_dict in MultiVae's layout (every parameter must be covered)."""
    out = _renamed(authors_sd, _RENAME)
    target = model.state_dict()
    missing = sorted(set(target) - set(out))
    if missing:
        raise KeyError(f"no weights for MultiVae parameters {missing[:6]}")
    return {k: out[k].reshape(target[k].shape) for k in target}


def authors_layout_template(model) -> dict[str, torch.Tensor]:
    """MultiVae's tensors under the authors' names: the template bench.bench's converter needs."""
    return _renamed(model.state_dict(), {m: a for a, m in _RENAME.items()})


def dataset(batch: dict[str, torch.Tensor]):
    from multivae.data.datasets.base import MultimodalBaseDataset
    return MultimodalBaseDataset(data={"mnist": batch["mnist"], "svhn": batch["svhn"]},
                                 labels=torch.zeros(len(batch["mnist"]), dtype=torch.long))


def train_step_fn(model, feed: Callable[[], dict[str, torch.Tensor]]) -> Callable[[], float]:
    """One step of MultiVae's trainer on ``feed()``'s batch with the paper's optimiser; returns the per-example objective."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, amsgrad=True)

    def step():
        batch = feed()
        n = len(batch["mnist"])
        model.train()
        out = model(dataset(batch), epoch=1)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        return -out.loss.item() / n   # the loss sums over the batch

    return step


def eval_fn(model, batch: dict[str, torch.Tensor], K: int, pairs_per_call: int, samples_per_call: int) -> Any:
    """Its ``compute_joint_nll_paper`` (the paper's mixture IWAE-K with rescaling), over the pairs in chunks."""
    n = len(batch["mnist"])
    chunks = [dataset({k: v[i:i + pairs_per_call] for k, v in batch.items()}) for i in range(0, n, pairs_per_call)]

    @torch.no_grad()
    def run():
        total = 0.0
        for c in chunks:
            total += -float(model.compute_joint_nll_paper(c, K=K, batch_size_K=samples_per_call).sum())
        return total / n

    return run
