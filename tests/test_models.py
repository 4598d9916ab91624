"""Distributions, networks and model composition: shapes, densities, missing modalities, errors."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import make_tiny_mm, tiny_batch
from mmvae_lite import build_model, get_config
from mmvae_lite.distributions import (CategoricalLikelihood, LaplaceLikelihood, Prior, kl_divergence, make_latent,
                                      positive_scale)
from mmvae_lite.models import MixtureOfExpertsPosterior, ProductOfExperts
from mmvae_lite.networks import (FeatureDecoder, FeatureEncoder, Image64Decoder, Image64Encoder, MNISTDecoder,
                                 MNISTEncoder, SentenceDecoder, SentenceEncoder, SVHNDecoder, SVHNEncoder)


def test_sum_to_d_scales_sum_to_d():
    raw = torch.randn(7, 5, 20) * 3
    s = positive_scale(raw, "sum_to_d")
    assert (s > 0).all()
    torch.testing.assert_close(s.sum(-1), torch.full((7, 5), 20.0), atol=20 * 1e-6 + 1e-5, rtol=0)
    assert (positive_scale(raw, "softplus") > 0).all()
    with pytest.raises(ValueError, match="scale parametrisation"):
        positive_scale(raw, "exp")


def test_prior_starts_standard_and_learns_its_scale():
    p = Prior(4, "laplace")
    torch.testing.assert_close(p().scale, torch.ones(4))
    assert p.logits.requires_grad and not Prior(4, learn_scale=False).logits.requires_grad
    torch.testing.assert_close(p().loc, torch.zeros(4))


@pytest.mark.parametrize("family", ["laplace", "normal"])
def test_closed_form_kl_matches_monte_carlo(family):
    torch.manual_seed(0)
    q = make_latent(family, torch.randn(3), torch.rand(3) + 0.3)
    p = make_latent(family, torch.randn(3) * 0.5, torch.rand(3) + 0.5)
    z = q.sample((400000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(kl_divergence(q, p), mc, atol=0.01, rtol=0.01)


def test_laplace_likelihood_matches_torch():
    params, x = torch.rand(4, 2, 1, 3, 3), torch.rand(2, 1, 3, 3)
    ours = LaplaceLikelihood(0.75).log_prob(params, x)
    ref = torch.distributions.Laplace(params, 0.75).log_prob(x).flatten(2).sum(-1)
    torch.testing.assert_close(ours, ref)


def test_categorical_likelihood_matches_torch():
    logits, x = torch.randn(3, 2, 32, 11), torch.randint(11, (2, 32))
    ref = torch.distributions.Categorical(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(CategoricalLikelihood().log_prob(logits, x), ref)


@pytest.mark.parametrize("enc,dec,x,out_shape", [
    (MNISTEncoder(5), MNISTDecoder(5), torch.rand(3, 1, 28, 28), (1, 28, 28)),
    (SVHNEncoder(5), SVHNDecoder(5), torch.rand(3, 3, 32, 32), (3, 32, 32)),
    (FeatureEncoder(5), FeatureDecoder(5), torch.randn(3, 2048), (2048,)),
    (Image64Encoder(5), Image64Decoder(5), torch.rand(3, 3, 64, 64), (3, 64, 64)),
    (SentenceEncoder(5, 40), SentenceDecoder(5, 40), torch.randint(40, (3, 32)), (32, 40)),
])
def test_networks_accept_any_leading_dims(enc, dec, x, out_shape):
    enc.eval(), dec.eval()
    loc, raw = enc(x)
    assert loc.shape == raw.shape == (3, 5)
    x2 = x.unsqueeze(0).expand(2, *x.shape)
    loc2, _ = enc(x2)
    torch.testing.assert_close(loc2[1], loc, atol=1e-5, rtol=1e-4)
    z = torch.randn(4, 2, 3, 5)
    assert dec(z).shape == (4, 2, 3, *out_shape)
    torch.testing.assert_close(dec(z)[1, 0], dec(z[1, 0]), atol=1e-5, rtol=1e-4)


def test_sentence_decoder_is_tied_to_the_embedding():
    m = build_model(get_config("cub-features", "quick", vocab_size=50))
    s = m.modalities["sentence"]
    assert s.decoder.to_vocab.weight is s.encoder.embedding.weight


def test_paper_models_have_the_paper_shapes_and_scaling():
    m = build_model(get_config("mnist-svhn", "paper"))
    assert m.latent_dim == 20 and m.names == ["mnist", "svhn"]
    assert m.llik_scaling["mnist"] == pytest.approx(3072 / 784) and m.llik_scaling["svhn"] == 1.0
    cub = build_model(get_config("cub-features", "paper"))
    assert cub.llik_scaling["image"] == pytest.approx(0.002) and cub.prior.family == "normal"
    assert cub.llik_scaling["sentence"] == 1.0
    cub_images = build_model(get_config("cub-images", "paper"))   # the authors' 32 / (3 * 64 * 64), sentence 1
    assert cub_images.llik_scaling == pytest.approx({"image": 32 / 12288, "sentence": 1.0})
    mvae = build_model(get_config("mnist-svhn", "paper", model="mvae"))
    assert isinstance(mvae.joint_rule, ProductOfExperts) and mvae.prior.family == "normal"


def test_moe_log_density_is_log_mean_exp_of_experts(tiny_mm):
    batch = tiny_batch(4)
    q = tiny_mm.posterior(batch)
    z = torch.randn(6, 4, 2)
    experts = tiny_mm.encode(batch)
    manual = torch.logsumexp(torch.stack([e.log_prob(z).sum(-1) for e in experts.values()]), 0) - math.log(2)
    torch.testing.assert_close(q.log_prob(z), manual)
    assert isinstance(q, MixtureOfExpertsPosterior)
    # ancestral samples come from one expert or the other, and the mean is the experts' average
    assert q.rsample((5,)).shape == (5, 4, 2)
    torch.testing.assert_close(q.mean, (experts["a"].mean + experts["b"].mean) / 2)


def test_poe_of_gaussians_equals_the_normalised_product():
    """The closed form against a numerically normalised product of densities on a grid (1-D)."""
    rule = ProductOfExperts()
    experts = make_latent("normal", torch.tensor([[[0.7]], [[-1.2]]]), torch.tensor([[[0.5]], [[1.5]]]))
    prior = make_latent("normal", torch.zeros(1), torch.ones(1) * 2.0)
    q = rule.joint(experts, prior)
    grid = torch.linspace(-10, 10, 200001, dtype=torch.float64)
    logp = (prior.log_prob(grid[:, None]).double().squeeze(-1)
            + experts.log_prob(grid[:, None, None, None]).double().sum((1, 2, 3)))
    dz = (grid[1] - grid[0]).item()
    log_norm = torch.logsumexp(logp, 0) + math.log(dz)
    numeric = (logp - log_norm)[::20000]
    torch.testing.assert_close(q.log_prob(grid[::20000, None, None].float()).double().squeeze(), numeric,
                               atol=1e-4, rtol=1e-4)


def test_poe_refuses_laplace_experts():
    model = make_tiny_mm("poe", "laplace")
    with pytest.raises(TypeError, match="Normal experts"):
        model.posterior(tiny_batch(2))


@pytest.mark.parametrize("joint,family", [("moe", "laplace"), ("poe", "normal")])
def test_missing_modalities_and_shapes(joint, family):
    model = make_tiny_mm(joint, family)
    batch = tiny_batch(4)
    for sub in ({"a": batch["a"]}, {"b": batch["b"]}, batch):
        q = model.posterior(sub)
        z = q.rsample((3,))
        assert z.shape == (3, 4, 2)
        assert q.log_prob(z).shape == (3, 4)
        out = model.decode(z)
        assert out["a"].shape == (3, 4, 3) and out["b"].shape == (3, 4, 5)
    gen = model.generate(7)
    assert gen["a"].shape == (7, 3) and gen["b"].shape == (7, 5)


def test_cross_reconstruction_equals_the_naive_loop(tiny_mm):
    batch = tiny_batch(4)
    fast = tiny_mm.cross_reconstruct(batch, K=1, mean_latent=True)
    with torch.no_grad():
        for src in ("a", "b"):
            z = tiny_mm.encode({src: batch[src]})[src].mean
            for tgt in ("a", "b"):
                naive = tiny_mm.modalities[tgt].decode(z)
                torch.testing.assert_close(fast[src][tgt][0], naive)


def test_cross_reconstruction_calls_each_decoder_once(tiny_mm):
    calls = []
    for m in tiny_mm.modalities.values():
        m.decoder.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    tiny_mm.cross_reconstruct(tiny_batch(4), K=3)
    assert calls == [(2, 3, 4, 2), (2, 3, 4, 2)]


def test_bad_input_gives_clear_errors(tiny_mm):
    batch = tiny_batch(4)
    with pytest.raises(ValueError, match=r"modality 'a': expected shape \(B, 3\)"):
        tiny_mm.posterior({"a": torch.randn(4, 4)})
    with pytest.raises(ValueError, match="different batch sizes"):
        tiny_mm.posterior({"a": batch["a"], "b": batch["b"][:3]})
    bad = batch["a"].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tiny_mm.posterior({"a": bad})
    with pytest.raises(KeyError, match="unknown modality 'c'"):
        tiny_mm.posterior({"c": batch["a"]})
    with pytest.raises(TypeError, match="dict of modality name"):
        tiny_mm.posterior([batch["a"], batch["b"]])
    with pytest.raises(ValueError, match="needs every modality"):
        from mmvae_lite.objectives import m_iwae_stratified
        m_iwae_stratified(tiny_mm, {"a": batch["a"]}, 2)


def test_config_errors_and_overrides():
    with pytest.raises(ValueError, match="unknown experiment 'cifar'"):
        get_config("cifar")
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("mnist-svhn", "huge")
    with pytest.raises(TypeError, match="unknown config field"):
        get_config("mnist-svhn", "quick", k=3)
    cfg = get_config("mnist-svhn", "quick", model="mvae")
    assert cfg.objective == "mvae_elbo" and cfg.family == "normal"
    paper = get_config("mnist-svhn", "paper")
    assert (paper.latent_dim, paper.K, paper.batch_size, paper.epochs, paper.objective, paper.lr, paper.amsgrad) == \
        (20, 30, 128, 30, "m_dreg_stratified", 1e-3, True)


def test_scale_rule_override():
    """MVAE keeps the experiment's sum-to-D scales unless ``scales`` asks for Wu & Goodman's free ones."""
    x = {"mnist": torch.rand(3, 1, 28, 28), "svhn": torch.rand(3, 3, 32, 32)}
    default = build_model(get_config("mnist-svhn", "quick", model="mvae"))
    free = build_model(get_config("mnist-svhn", "quick", model="mvae", scales="softplus"))
    assert get_config("mnist-svhn", "quick", model="mvae").scale_param == "sum_to_d"
    s_default = default.modalities["mnist"].encode(x["mnist"]).scale
    s_free = free.modalities["mnist"].encode(x["mnist"]).scale
    torch.testing.assert_close(s_default.sum(-1), torch.full((3,), 20.0), rtol=1e-5, atol=1e-4)
    assert not torch.allclose(s_free.sum(-1), torch.full((3,), 20.0), atol=0.5)
    assert free.prior().scale.shape == (20,)
    with pytest.raises(ValueError, match="scales must be"):
        get_config("mnist-svhn", "quick", scales="softmax").validate()


def test_reserved_modality_names_are_rejected():
    import pytest
    from mmvae_lite.config import make_modality
    for bad in ("label", "labels"):
        with pytest.raises(ValueError, match="reserved"):
            make_modality("mnist", 4, name=bad)
