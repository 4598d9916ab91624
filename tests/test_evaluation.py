"""Evaluation metrics on tiny models whose right answers are known: oracle/uncoupled coherence,
a planted linear probe, closed-form log-likelihoods, CCA of identical views, the DReG-vs-IWAE
gradient SNR ordering, shapes, and that no metric changes the model."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from conftest import make_tiny_mm, tiny_batch, tiny_modality
from mmvae_lite import build_model, get_config
from mmvae_lite import evaluation as ev
from mmvae_lite.evaluation import classifiers as ev_classifiers
from mmvae_lite import plotting as pl
from mmvae_lite.distributions import LaplaceLikelihood, Likelihood, Prior
from mmvae_lite.models import Modality, MultimodalVAE, VAE
from mmvae_lite.networks import Decoder, Encoder


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# Tiny hand-set networks
# ---------------------------------------------------------------------------------------------
def softplus_inv(s: float) -> float:
    return math.log(math.expm1(s))


class AffineEncoder(Encoder):
    """loc = x A^T + c; a fixed raw scale per latent dimension (softplus scales)."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor | None = None, raw: torch.Tensor | None = None) -> None:
        super().__init__()
        L, D = A.shape
        self.event_shape = (D,)
        self.A = nn.Parameter(A.clone().float())
        self.c = nn.Parameter(torch.zeros(L) if c is None else c.clone().float())
        self.raw = nn.Parameter(torch.zeros(L) if raw is None else raw.clone().float())

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        loc = x @ self.A.T + self.c
        return torch.stack([loc, self.raw.expand_as(loc)], 1)


class AffineDecoder(Decoder):
    def __init__(self, W: torch.Tensor, b: torch.Tensor | None = None) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone().float())
        self.b = nn.Parameter(torch.zeros(W.shape[0]) if b is None else b.clone().float())

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W.T + self.b


class NormalLikelihood(Likelihood):
    """N(x; params, sigma^2 I) over a vector."""

    event_dims = 1

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(params, self.sigma).log_prob(x).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


class Readout(nn.Module):
    """A 'classifier' that reads logits from fixed positions of its input."""

    def __init__(self, idx: list[int]) -> None:
        super().__init__()
        self.idx = idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.idx]


# ---------------------------------------------------------------------------------------------
# Coherence: an oracle model and an uncoupled one, built from real Modality / MultimodalVAE
# ---------------------------------------------------------------------------------------------
L_COH = 20
PERM = [3, 7, 0, 9, 1, 5, 2, 8, 6, 4]        # modality b stores the one-hot in permuted order, after 2 noise dims


def digit_data(n: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(10, (n,), generator=g)
    onehot = torch.eye(10)[y]
    a = onehot + 0.1 * torch.randn(n, 10, generator=g)
    b = torch.cat([torch.randn(n, 2, generator=g), onehot[:, PERM] + 0.1 * torch.randn(n, 10, generator=g)], 1)
    return {"a": a, "b": b}, y


def coherence_model(coupled: bool, joint: str = "moe") -> MultimodalVAE:
    """Encoders write 4 * one-hot(label) into z[0:10] (a) and z[0:10] or z[10:20] (b, coupled or not);
    decoders read z[0:10] (a) and z[0:10] or z[10:20] (b). Used dims have tiny scales, unused unit ones."""
    inv = torch.argsort(torch.tensor(PERM))
    slot_b = slice(0, 10) if coupled else slice(10, 20)
    A_a = torch.zeros(L_COH, 10)
    A_a[:10] = 4 * torch.eye(10)
    A_b = torch.zeros(L_COH, 12)
    A_b[slot_b, 2:] = 4 * torch.eye(10)[inv]           # class c sits at input 2 + inv[c]
    raw_a = torch.full((L_COH,), softplus_inv(1.0))
    raw_a[:10] = -6.0
    raw_b = torch.full((L_COH,), softplus_inv(1.0))
    raw_b[slot_b] = -6.0
    W_a = torch.zeros(10, L_COH)
    W_a[:, :10] = torch.eye(10)
    W_b = torch.zeros(12, L_COH)
    W_b[2:, slot_b] = torch.eye(10)[PERM]
    kw = dict(family="normal", scale_param="softplus")
    mods = [Modality("a", AffineEncoder(A_a, raw=raw_a), AffineDecoder(W_a), LaplaceLikelihood(0.5, 1), **kw),
            Modality("b", AffineEncoder(A_b, raw=raw_b), AffineDecoder(W_b), LaplaceLikelihood(0.5, 1), **kw)]
    return MultimodalVAE(mods, Prior(L_COH, "normal"), joint=joint)


CLASSIFIERS = {"a": Readout(list(range(10))), "b": Readout([2 + int(i) for i in torch.argsort(torch.tensor(PERM))])}


class Constant(nn.Module):
    """Always predicts class 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x.shape[:-1], 10).index_fill_(-1, torch.tensor([3]), 1.0)


def test_coherence_model_encodes_what_it_should():
    x, y = digit_data(50)
    m = coherence_model(True)
    assert (CLASSIFIERS["a"](x["a"]).argmax(-1) == y).all() and (CLASSIFIERS["b"](x["b"]).argmax(-1) == y).all()
    q = m.encode(x)
    assert (q["a"].mean[:, :10].argmax(-1) == y).all() and (q["b"].mean[:, :10].argmax(-1) == y).all()


@pytest.mark.parametrize("joint", ["moe", "poe"])
def test_coherence_oracle_is_perfect_and_uncoupled_is_chance(joint):
    x, y = digit_data(1500)
    oracle = ev.coherence(coherence_model(True, joint), x, CLASSIFIERS, labels=y, n_joint=1500)
    assert set(oracle) == {"joint", "a->b", "b->a", "a->a", "b->b"}
    assert all(v == 1.0 for v in oracle.values()), oracle
    chance = ev.coherence(coherence_model(False, joint), x, CLASSIFIERS, labels=y, n_joint=1500)
    for key in ("joint", "a->b", "b->a"):
        assert 0.05 < chance[key] < 0.16, chance
    assert chance["a->a"] == chance["b->b"] == 1.0


class FakeDataset:
    """The data-module contract: ``batches(...)`` of dicts and ``labels``."""

    def __init__(self, x: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        self.x, self.labels = x, y

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size, shuffle=False, generator=None, device=None):
        assert not shuffle
        for i in range(0, len(self), batch_size):
            yield {k: v[i:i + batch_size] for k, v in self.x.items()}


def test_coherence_counts_constant_predictions_and_reads_datasets():
    x, y = digit_data(300, seed=3)
    const = {"a": Constant(), "b": Constant()}
    res = ev.coherence(coherence_model(True), FakeDataset(x, y), const, n_joint=200, batch_size=64)
    expected = float((y == 3).float().mean())
    assert res["a->b"] == pytest.approx(expected) and res["b->a"] == pytest.approx(expected)
    assert res["joint"] == 1.0   # a constant model 'agrees with itself': joint coherence alone is not enough
    sub = ev.coherence(coherence_model(True), x, CLASSIFIERS, labels=y, n_joint=0, max_examples=50)
    assert "joint" not in sub and sub["a->b"] == 1.0


def test_cross_coherence_divides_by_the_examples_each_source_had():
    """Batches that lack a modality: each source's fraction is over the examples it was given."""
    x, y = digit_data(120, seed=5)
    batches = [{"a": x["a"][:40], "b": x["b"][:40], "label": y[:40]},
               {"a": x["a"][40:], "label": y[40:]}]                  # b only in the first batch
    res = ev.cross_coherence(coherence_model(True), batches, CLASSIFIERS)
    assert res["a->b"] == 1.0 and res["a->a"] == 1.0
    assert res["b->a"] == 1.0 and res["b->b"] == 1.0, res   # 40 of 40, not 40 of 120


# ---------------------------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------------------------
def probe_model(joint: str = "moe") -> MultimodalVAE:
    g = torch.Generator().manual_seed(0)
    kw = dict(family="normal", scale_param="softplus")
    raw = torch.full((4,), -3.0)
    mods = [Modality("a", AffineEncoder(torch.randn(4, 6, generator=g), raw=raw), AffineDecoder(torch.randn(6, 4)),
                     LaplaceLikelihood(0.5, 1), **kw),
            Modality("b", AffineEncoder(torch.randn(4, 5, generator=g), raw=raw), AffineDecoder(torch.randn(5, 4)),
                     LaplaceLikelihood(0.5, 1), **kw)]
    return MultimodalVAE(mods, Prior(4, "normal"), joint=joint)


def planted(model: MultimodalVAE, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = {"a": torch.randn(n, 6, generator=g), "b": torch.randn(n, 5, generator=g)}
    with torch.no_grad():
        mu = model.encode({"a": x["a"]})["a"].mean
    y = (mu[:, 0] > 0).long() + 2 * (mu[:, 1] - mu[:, 2] > 0).long()      # linear in the posterior mean of a
    return x, y


@pytest.mark.parametrize("joint", ["moe", "poe"])
def test_linear_probe_recovers_a_planted_linear_latent(joint):
    m = probe_model(joint)
    xtr, ytr = planted(m, 1500, 0)
    xte, yte = planted(m, 500, 1)
    acc = ev.latent_accuracy(m, xtr, xte, train_labels=ytr, test_labels=yte, n_train=None)
    assert acc["a"] > 0.95
    assert acc["b"] < 0.6                        # b carries no information about the label
    assert ("a,b" in acc) == (joint == "poe")    # joint posterior probed for PoE by default
    vae = VAE(m.modalities["a"], m.prior)
    assert ev.latent_accuracy(vae, xtr["a"], xte["a"], train_labels=ytr, test_labels=yte)["a"] > 0.95


# ---------------------------------------------------------------------------------------------
# Log-likelihoods
# ---------------------------------------------------------------------------------------------
def linear_gaussian_vae(seed: int = 0):
    """z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_3); q(z|x) = an imperfect Gaussian (shrunk mean, 2x too wide)."""
    g = torch.Generator().manual_seed(seed)
    W, b, s = torch.randn(3, 2, generator=g), torch.randn(3, generator=g), 0.5
    cov = torch.linalg.inv(torch.eye(2) + W.T @ W / s**2)
    A = 0.9 * cov @ W.T / s**2
    raw = torch.tensor([softplus_inv(2 * float(v)) for v in cov.diagonal().sqrt()])
    mod = Modality("x", AffineEncoder(A, -A @ b, raw), AffineDecoder(W, b), NormalLikelihood(s),
                   family="normal", scale_param="softplus")
    vae = VAE(mod, Prior(2, "normal"))
    marginal = torch.distributions.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(3))
    return vae, marginal


def test_iwae_increases_with_K_and_matches_the_closed_form():
    vae, marginal = linear_gaussian_vae()
    torch.manual_seed(0)
    x = marginal.sample((200,))
    exact = marginal.log_prob(x).numpy()
    means = [ev.log_likelihoods(vae, x, K, progress=False, seed=K)["x"].mean() for K in (1, 10, 100)]
    assert means[0] < means[1] - 0.5 < means[2] - 0.5 < exact.mean()
    big = ev.log_likelihoods(vae, x, 2000, samples_per_chunk=700, progress=False)["x"].to_numpy()
    assert abs(big.mean() - exact.mean()) < 0.01
    assert np.abs(big - exact).mean() < 0.03 and np.abs(big - exact).max() < 0.15


@pytest.mark.parametrize("joint,family", [("moe", "laplace"), ("poe", "normal")])
def test_multimodal_likelihood_terms(joint, family):
    m = make_tiny_mm(joint, family)
    b = tiny_batch(40)
    df = ev.log_likelihoods(m, b, K=600, samples_per_chunk=100, progress=False)
    assert list(df.columns) == ["a,b", "a|a,b", "b|a,b", "a|a", "b|a", "a|b", "b|b"]
    assert len(df) == 40 and np.isfinite(df.to_numpy()).all()
    if joint == "moe":
        # "d|d" and "d|a,b" estimate the same log p(x_d), and the mixture contains q(z|x_d): with many
        # samples they agree. (Every "d|S" does in the limit, but q(z|x_e) or a PoE product can be a
        # poor proposal for x_d alone.)
        assert abs(df["a|a"].mean() - df["a|a,b"].mean()) < 0.05
        assert abs(df["b|b"].mean() - df["b|a,b"].mean()) < 0.05
    scaled = ev.log_likelihoods(m, b, K=5, scaled=True, progress=False)
    plain = ev.log_likelihoods(m, b, K=5, scaled=False, progress=False)
    assert not np.allclose(scaled["a,b"], plain["a,b"])
    pd.testing.assert_series_equal(scaled["a|b"], plain["a|b"])      # same seed: only the joint is scaled
    summary = ev.likelihood_summary(df)
    assert list(summary.columns) == ["mean", "sem", "n"] and summary.loc["a,b", "n"] == 40


# ---------------------------------------------------------------------------------------------
# CUB: CCA and sentence embeddings
# ---------------------------------------------------------------------------------------------
def test_cca_of_identical_views_is_one_and_independent_views_near_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    cca = ev.CCA.fit(x, x, k=4)
    assert cca.score(x, x) == pytest.approx(1.0, abs=1e-6)
    assert cca.correlations[0] == pytest.approx(1.0, abs=1e-3)
    y = torch.randn(500, 5, generator=g)
    assert abs(ev.CCA.fit(x, y, k=4).score(x, y)) < 0.2
    z = x[:, :3] @ torch.randn(3, 4, generator=g) + 0.1 * torch.randn(500, 4, generator=g)
    assert ev.CCA.fit(x, z, k=3).score(x, z) > 0.9


def test_sentence_embedder_weights_truncation_and_pc_removal():
    words = ["<exc>", "<pad>", "<eos>", "a", "small", "bird", "red", "blue", "wings", "has"]
    g = np.random.default_rng(0)
    texts = [list(g.choice(words[3:], size=g.integers(3, 7))) for _ in range(200)]
    ids = torch.ones(200, 8, dtype=torch.long)
    for i, t in enumerate(texts):
        row = [words.index(w) for w in t][:7] + [2]
        ids[i, :len(row)] = torch.tensor(row)
    emb = ev.SentenceEmbedder.fit(ids, words, texts=texts, dim=8, epochs=1, min_count=1)
    e = emb(ids)
    assert e.shape == (200, 8) and np.isfinite(e).all()
    assert np.abs(e @ emb.pc).max() < 1e-5                        # first principal direction removed
    assert emb.weights[1] == emb.weights[2] == 0 and (emb.weights[3:] > 0).all()
    junk = ids.clone()
    junk[:, -1] = 5                                                 # after <eos>: ignored
    assert np.allclose(emb(junk[:3]), emb(ids[:3]))


def test_attribute_accuracy():
    acc = ev.attribute_accuracy({"colour": ["red", "blue", "red"], "size": [0, 1, 1]},
                                {"colour": ["red", "red", "red"], "size": [0, 1, 1], "bill": [1, 1, 1]})
    assert acc == {"colour": pytest.approx(2 / 3), "size": 1.0, "mean": pytest.approx(5 / 6)}


def test_plate_polarity_reads_which_way_a_plate_was_drawn():
    """A light square on a dark plate is positive, its negative image the same size negative, a
    flat image zero; uint8 images read like their float copies; bad shapes are refused."""
    light = torch.full((1, 3, 32, 32), 0.2)
    light[:, :, 10:22, 10:22] = 0.9
    images = torch.cat([light, 1 - light, torch.full((1, 3, 32, 32), 0.5)])
    got = ev.plate_polarity(images)
    assert got.shape == (3,)
    assert torch.allclose(got, torch.tensor([0.7, -0.7, 0.0]), atol=1e-6)
    as_bytes = (images * 255).round().to(torch.uint8)
    assert torch.allclose(ev.plate_polarity(as_bytes), got, atol=2 / 255)
    # inverting any image flips the sign: polarity is antisymmetric under 1 - x
    house = torch.rand(16, 3, 32, 32)
    assert torch.allclose(ev.plate_polarity(1 - house), -ev.plate_polarity(house), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ev.plate_polarity(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="at least 8 x 8"):
        ev.plate_polarity(torch.zeros(2, 3, 4, 4))


# ---------------------------------------------------------------------------------------------
# Gradient SNR
# ---------------------------------------------------------------------------------------------
def test_dreg_encoder_snr_beats_iwae_at_large_K(tiny_vae):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    df = ev.gradient_snr(tiny_vae, x, Ks=(1, 64), estimators=("iwae", "dreg"), n_draws=100)
    assert list(df.columns) == ["estimator", "K", "which", "snr", "snr_median", "n_params"]
    assert len(df) == 2 * 2 * 2
    snr = df.set_index(["estimator", "which", "K"])["snr"]
    assert snr["dreg", "encoder", 64] > 2 * snr["iwae", "encoder", 64]
    assert snr["iwae", "encoder", 64] < snr["iwae", "encoder", 1]      # Rainforth et al.: IWAE's encoder SNR falls
    assert snr["iwae", "decoder", 64] > snr["iwae", "decoder", 1]      # ... while the decoder's rises


# ---------------------------------------------------------------------------------------------
# Latent structure: shapes
# ---------------------------------------------------------------------------------------------
def test_kl_traversal_and_embedding_shapes(tiny_mm):
    b = tiny_batch(30)
    kl = ev.kl_per_dimension(tiny_mm, b)
    assert list(kl.columns) == ["dim", "term", "kl"] and len(kl) == 2 * (2 + 1) and (kl["kl"] >= 0).all()
    assert ev.kl_per_dimension(tiny_mm, b, wide=True).shape == (2, 3)
    vae = VAE(tiny_modality("x", 3, 2), Prior(2))
    assert ev.kl_per_dimension(vae, {"x": b["a"]}).shape == (2, 3)
    tr = ev.latent_traversals(tiny_mm, tiny_batch(4), steps=7)
    assert tr["a"]["b"].shape == (4, 2, 7, 5) and tr["b"]["a"].shape == (4, 2, 7, 3)
    # the middle step is the posterior mean; the ends are +-5 prior standard deviations (Laplace: sqrt(2) b)
    mu = tiny_mm.encode(tiny_batch(4))["a"].mean.detach()
    with torch.no_grad():
        torch.testing.assert_close(tr["a"]["a"][:, 0, 3], tiny_mm.modalities["a"].decode(mu))
        z_end = mu.clone()
        z_end[:, 1] += 5 * math.sqrt(2) * tiny_mm.prior().scale[1]
        torch.testing.assert_close(tr["a"]["b"][:, 1, -1], tiny_mm.modalities["b"].decode(z_end))
    emb = ev.latent_embedding(tiny_mm, tiny_batch(6), K=5)
    assert emb.shape == (3 * 5 * 6, 4) and set(emb["source"]) == {"q(z|a)", "q(z|b)", "p(z)"}


# ---------------------------------------------------------------------------------------------
# No metric changes the model
# ---------------------------------------------------------------------------------------------
def test_no_metric_changes_parameters_or_training_flags(tiny_mm):
    tiny_mm.train()
    tiny_mm.modalities["b"].decoder.eval()           # a mixed state must come back exactly
    flags = {n: m.training for n, m in tiny_mm.named_modules()}
    before = {k: v.clone() for k, v in tiny_mm.state_dict().items()}
    b, y = tiny_batch(20), torch.randint(10, (20,))
    clfs = {"a": nn.Linear(3, 10), "b": nn.Linear(5, 10)}
    rng = torch.get_rng_state()
    ev.coherence(tiny_mm, b, clfs, labels=y, n_joint=20)
    ev.latent_accuracy(tiny_mm, b, b, train_labels=y, test_labels=y)
    ev.log_likelihoods(tiny_mm, b, K=3, progress=False)
    ev.kl_per_dimension(tiny_mm, b)
    ev.latent_traversals(tiny_mm, b, steps=3)
    ev.latent_embedding(tiny_mm, b, K=2)
    ev.gradient_snr(tiny_mm, b, Ks=(2,), n_draws=3)
    assert {n: m.training for n, m in tiny_mm.named_modules()} == flags
    for k, v in tiny_mm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in tiny_mm.parameters())
    assert torch.equal(torch.get_rng_state(), rng)   # seeded metrics fork the RNG


# ---------------------------------------------------------------------------------------------
# Digit classifiers: train, cache, reload
# ---------------------------------------------------------------------------------------------
def blocks(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """28x28 images with a bright 6x6 block at a class-specific place."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(10, (n,), generator=g)
    x = 0.1 * torch.rand(n, 1, 28, 28, generator=g)
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 5)
        x[i, 0, 4 + 12 * r:10 + 12 * r, 1 + 5 * col:7 + 5 * col] = 1.0
    return x, y


def test_digit_classifier_trains_caches_and_reloads(tmp_path, monkeypatch):
    xtr, ytr = blocks(640, 0)
    xte, yte = blocks(200, 1)
    clf = ev.train_digit_classifier("mnist", {"mnist": xtr}, 2, labels=ytr, test={"mnist": xte}, test_labels=yte,
                                    batch_size=64, progress=False)
    assert clf.test_accuracy > 0.9
    ds_tr, ds_te = FakeDataset({"mnist": xtr}, ytr), FakeDataset({"mnist": xte}, yte)
    got = ev.get_digit_classifier("mnist", source="synthetic", train=ds_tr, test=ds_te, cache=tmp_path, epochs=1,
                                  progress=False, verbose=False)
    path = tmp_path / "mnist_synthetic.pt"
    assert path.is_file()
    state = torch.load(path, weights_only=True)
    assert state["test_accuracy"] == pytest.approx(got.test_accuracy)
    monkeypatch.setattr(ev_classifiers, "train_digit_classifier", lambda *a, **k: pytest.fail("should reuse the cache"))
    again = ev.get_digit_classifier("mnist", source="synthetic", cache=tmp_path, verbose=False)
    assert again.test_accuracy == pytest.approx(got.test_accuracy)
    torch.testing.assert_close(ev.predict_digits(again, xte), ev.predict_digits(got, xte))
    assert not any(p.requires_grad for p in again.parameters())
    # a request with other training settings does not reuse the cache: it warns and retrains
    monkeypatch.setattr(ev_classifiers, "train_digit_classifier", lambda *a, **k: got)
    with pytest.warns(UserWarning, match=r"trained with epochs=1, max_train=None, not epochs=1, max_train=100"):
        ev.get_digit_classifier("mnist", source="synthetic", train=ds_tr, test=ds_te, cache=tmp_path, max_train=100,
                                verbose=False, progress=False)
    assert torch.load(path, weights_only=True)["max_train"] == 100


# ---------------------------------------------------------------------------------------------
# One-call evaluations and plots, end to end on tiny data
# ---------------------------------------------------------------------------------------------
def test_evaluate_mnist_svhn_end_to_end():
    model = build_model(get_config("mnist-svhn", "quick", latent_dim=4))
    g = torch.Generator().manual_seed(0)
    x = {"mnist": torch.rand(48, 1, 28, 28, generator=g), "svhn": torch.rand(48, 3, 32, 32, generator=g)}
    y = torch.randint(10, (48,), generator=g)
    data = FakeDataset(x, y)
    clfs = {"mnist": ev.DigitClassifier(1, 28), "svhn": ev.DigitClassifier(3, 32)}
    out = ev.evaluate_mnist_svhn(model, data, data, classifiers=clfs, quick=True, K=3, n_joint=50,
                                 n_probe_train=48, n_likelihood=8, progress=False,
                                 baselines={"VAE (mnist)": VAE(model.modalities["mnist"], model.prior)})
    assert set(out) == {"classifiers", "coherence", "latent_accuracy", "likelihoods", "likelihoods_per_example",
                        "timings"}
    assert list(out["coherence"].columns[:3]) == ["joint", "mnist->svhn", "svhn->mnist"]
    assert list(out["latent_accuracy"].index) == ["model", "VAE (mnist)"]
    assert out["likelihoods_per_example"].shape == (8, 7)
    assert out["likelihoods"].shape == (1, 7)


class BagOfWordsEncoder(Encoder):
    def __init__(self, vocab: int, T: int, latent_dim: int) -> None:
        super().__init__()
        self.event_shape = (T,)
        self.emb = nn.Embedding(vocab, 8)
        self.out = nn.Linear(8, 2 * latent_dim)
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(x.long()).mean(1)).view(-1, 2, self.latent_dim)


class LogitsDecoder(Decoder):
    def __init__(self, latent_dim: int, vocab: int, T: int) -> None:
        super().__init__()
        self.net = nn.Linear(latent_dim, T * vocab)
        self.T, self.V = T, vocab

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, self.T, self.V)


def test_evaluate_cub_end_to_end():
    from mmvae_lite.distributions import CategoricalLikelihood
    torch.manual_seed(0)
    words = ["<exc>", "<pad>", "<eos>"] + [f"w{i}" for i in range(9)]
    kw = dict(family="normal", scale_param="softplus")
    model = MultimodalVAE([tiny_modality("image", 16, 4, **kw),
                           Modality("sentence", BagOfWordsEncoder(12, 8, 4), LogitsDecoder(4, 12, 8),
                                    CategoricalLikelihood(), dtype=torch.long, **kw)], Prior(4, "normal"))
    g = torch.Generator().manual_seed(0)
    sent = torch.randint(3, 12, (200, 8), generator=g)
    sent[:, 5] = 2
    sent[:, 6:] = 1
    feats = torch.randn(200, 16, generator=g)
    feats[:, :4] += 3 * torch.nn.functional.one_hot(sent[:, 0] % 4, 4)      # image features tell the first word
    data = {"image": feats, "sentence": sent}
    emb = ev.SentenceEmbedder.fit(sent, words, dim=8, epochs=2, min_count=1)
    out = ev.evaluate_cub(model, data, data, embedder=emb, k=4, n_joint=50, progress=False)
    scores = out["cca"].iloc[0]
    assert list(out["cca"].columns) == ["ground_truth", "joint", "image->sentence", "sentence->image"]
    assert scores["ground_truth"] > 0.3     # related views, CCA fitted on the same pairs
    assert all(-1 <= v <= 1 for v in scores)
    assert len(out["correlations"]) == 4


def test_plots_return_figures(tiny_mm):
    figs = []
    imgs = torch.rand(6, 1, 28, 28)
    assert pl.image_grid(imgs, nrow=3, pad=2).shape == (2 * 30 + 2, 3 * 30 + 2)
    assert pl.image_grid(torch.rand(2, 4, 3, 8, 8)).shape == (2 * 10 + 2, 4 * 10 + 2, 3)
    assert pl.to_rgb(imgs, 32).shape == (6, 3, 32, 32)
    figs.append(pl.show_images(imgs, nrow=3, title="x"))
    figs.append(pl.plot_history([{"epoch": 1, "train": -3.0, "test": -2.5}, {"epoch": 2, "train": -2.0, "test": None}]))
    b = tiny_batch(10)
    figs.append(pl.plot_kl(ev.kl_per_dimension(tiny_mm, b)))
    figs.append(pl.plot_embedding(ev.latent_embedding(tiny_mm, b, K=2)))
    figs.append(pl.plot_snr(pd.DataFrame({"estimator": ["iwae", "dreg"] * 4, "K": [1, 1, 8, 8] * 2,
                                          "which": ["encoder"] * 4 + ["decoder"] * 4, "snr": np.linspace(1, 2, 8)})))
    figs.append(pl.plot_coherence(pd.DataFrame([{"joint": 0.4, "a->b": 0.8}], index=["MMVAE"])))
    ms = build_model(get_config("mnist-svhn", "quick", latent_dim=3))
    batch = {"mnist": torch.rand(4, 1, 28, 28), "svhn": torch.rand(4, 3, 32, 32)}
    figs.append(pl.plot_cross_generation(ms, batch, n=4))
    figs.append(pl.plot_joint_generation(ms, n=4))
    figs.append(pl.plot_traversals(ev.latent_traversals(ms, batch, steps=3), "mnist", "svhn", dims=[0, 2]))
    for f in figs:
        assert isinstance(f, Figure)
        f.savefig(io.BytesIO(), format="png", dpi=40)
    table = pl.caption_table({"in": torch.tensor([[3, 4, 2, 1]]), "out": torch.tensor([[4, 2, 3, 3]])},
                             ["<exc>", "<pad>", "<eos>", "red", "bird"])
    assert table.to_dict("list") == {"in": ["red bird"], "out": ["bird"]}


def test_caption_attribute_scores_read_the_grammar_and_score_per_image():
    from mmvae_lite.data.standins import BIRD_ATTRIBUTES, bird_captions, claimed_attributes
    colours = BIRD_ATTRIBUTES["crown_color"]
    assert claimed_attributes("this bird has a red crown, blue wings and an orange beak.") == {
        "crown_color": colours.index("red"), "wing_color": colours.index("blue"),
        "bill_color": BIRD_ATTRIBUTES["bill_color"].index("orange")}
    assert claimed_attributes("a small bird with a long hooked bill and white wingbars.") == {}
    # a colour the part never has, or one part named in two colours, is a claim wrong for every bird;
    # the same colour named twice is one claim
    assert claimed_attributes("a bird with a red bill.") == {"bill_color": -1}
    assert claimed_attributes("a red crown, a blue crown, a short tail.") == {"crown_color": -1}
    assert claimed_attributes("a red crown, a red crown.") == {"crown_color": colours.index("red")}
    birds = bird_captions(60, seed=2, captions_per_image=3, with_images=False)
    rows = birds.attributes.repeat_interleave(3, 0)             # the bird of each caption
    truth = ev.caption_attribute_scores(birds.captions, rows, birds.attribute_names)
    assert truth["claim_accuracy"] == 1.0 and truth["described"] == truth["with_claims"] > 0.8
    shuffled = ev.caption_attribute_scores(birds.captions, rows.roll(7, 0), birds.attribute_names)
    assert shuffled["claim_accuracy"] < 0.4 and shuffled["described"] < truth["described"] / 2
    mixed = ["a bird with a red crown.", "a bird with a red crown and blue wings.", "a tiny bird."]
    attrs = torch.zeros(3, len(birds.attribute_names), dtype=torch.long)
    crown, wing = birds.attribute_names.index("crown_color"), birds.attribute_names.index("wing_color")
    attrs[:, crown], attrs[:, wing] = colours.index("red"), colours.index("green")
    got = ev.caption_attribute_scores(mixed, attrs, birds.attribute_names)
    assert got["described"] == pytest.approx(1 / 3) and got["with_claims"] == pytest.approx(2 / 3)
    assert got["claims"] == 3 and got["claim_accuracy"] == pytest.approx(2 / 3)
    contradictory = ev.caption_attribute_scores(["a red crown, a green crown."], attrs[:1], birds.attribute_names)
    assert contradictory["described"] == 0 and contradictory["claims"] == 1
    with pytest.raises(ValueError, match=r"attributes must be \(N, A\) = \(3, "):
        ev.caption_attribute_scores(mixed, attrs[:2], birds.attribute_names)


def test_dead_units_counts_exactly_the_units_that_never_fire():
    torch.manual_seed(0)
    model = build_model(get_config("mnist-svhn", "quick"))
    g = torch.Generator().manual_seed(0)
    data = {"mnist": torch.rand(64, 1, 28, 28, generator=g), "svhn": torch.rand(64, 3, 32, 32, generator=g)}
    mnist_hidden = model.modalities["mnist"].encoder.body[1]     # Linear(784, 400) before its ReLU
    svhn_first = model.modalities["svhn"].encoder.body[0]        # Conv2d(3, 32) before its ReLU
    keys = [("mnist", "encoder", "body.2"), ("svhn", "encoder", "body.1")]

    def count(bias):
        with torch.no_grad():
            mnist_hidden.bias[:10] = bias
            svhn_first.bias[3] = bias
        table = ev.dead_units(model, data, batch_size=20)
        assert set(table.network) == {"encoder", "decoder"} and set(table.modality) == {"mnist", "svhn"}
        return table.set_index(["modality", "network", "layer"])

    alive, dead = count(1e4), count(-1e4)                # the same units surely firing, then surely not
    assert alive.loc[keys, "units"].tolist() == [400, 32]
    assert (dead.loc[keys, "dead"] - alive.loc[keys, "dead"]).tolist() == [10, 1]
    assert dead.fraction.loc[keys[0]] == pytest.approx(dead.dead.loc[keys[0]] / 400)
    model.train()
    ev.dead_units(model, data)
    assert model.training                              # train/eval flags restored
    assert not any(m._forward_hooks for m in model.modules())   # no hook left behind
    with pytest.raises(TypeError, match="VAE or a MultimodalVAE"):
        ev.dead_units(torch.nn.Linear(2, 2), data)
