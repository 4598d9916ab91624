"""Objectives: DReG against its closed form, bounds ordering against an exact log-likelihood."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import make_tiny_mm, tiny_batch, tiny_modality
from mmvae_lite import objectives as O
from mmvae_lite.distributions import Prior, detach_params
from mmvae_lite.models import MixtureOfExpertsPosterior, VAE


def _grads(model, params):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _run(fn, model, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = fn()
    value.backward()
    return value.detach()


# ---------------------------------------------------------------------------------------------
# DReG, single modality
# ---------------------------------------------------------------------------------------------
def _closed_form_encoder_grad(model: VAE, x: torch.Tensor, K: int, seed: int, power: int):
    """sum_k w~_k^power dlogw_k/dz_k dz_k/dphi, averaged over the batch, computed independently."""
    torch.manual_seed(seed)
    q = model.encode(x)
    z = q.rsample((K,))
    zl = z.detach().requires_grad_(True)
    qd = detach_params(q)
    lw = model.prior().log_prob(zl).sum(-1) + model.modality.log_likelihood(model.decode(zl), x) - qd.log_prob(zl).sum(-1)
    dlw_dz, = torch.autograd.grad(lw.sum(), zl)            # each lw_k depends on its own z_k only
    w = torch.softmax(lw.detach(), 0)
    enc = list(model.modality.encoder.parameters())
    g = torch.autograd.grad(z, enc, grad_outputs=w.pow(power).unsqueeze(-1) * dlw_dz / x.shape[0])
    return list(g)


def test_dreg_encoder_gradient_matches_closed_form(tiny_vae):
    x = torch.randn(6, 3)
    K, seed = 7, 3
    enc = list(tiny_vae.modality.encoder.parameters())
    _run(lambda: O.dreg(tiny_vae, x, K), tiny_vae, seed)
    g_dreg = _grads(tiny_vae, enc)
    expected = _closed_form_encoder_grad(tiny_vae, x, K, seed, power=2)
    for a, b in zip(g_dreg, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # ... and it is not the authors' w-weighted (STL) gradient
    _run(lambda: O.dreg(tiny_vae, x, K, gradient="stl"), tiny_vae, seed)
    g_stl = _grads(tiny_vae, enc)
    expected_stl = _closed_form_encoder_grad(tiny_vae, x, K, seed, power=1)
    for a, b in zip(g_stl, expected_stl):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert max((a - b).abs().max().item() for a, b in zip(g_dreg, g_stl)) > 1e-4


def test_dreg_decoder_gradient_equals_iwae_gradient_and_value_is_iwae(tiny_vae):
    x = torch.randn(5, 3)
    dec = list(tiny_vae.modality.decoder.parameters()) + [tiny_vae.prior.logits]
    v_dreg = _run(lambda: O.dreg(tiny_vae, x, 9), tiny_vae, 11)
    g_dreg = _grads(tiny_vae, dec)
    v_iwae = _run(lambda: O.iwae(tiny_vae, x, 9), tiny_vae, 11)
    g_iwae = _grads(tiny_vae, dec)
    torch.testing.assert_close(v_dreg, v_iwae)
    for a, b in zip(g_dreg, g_iwae):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dreg_gradient_check_against_finite_differences(tiny_vae):
    """The decoder gradient of the (fixed-noise) IWAE bound agrees with central finite differences."""
    tiny_vae.double()
    x = torch.randn(3, 3, dtype=torch.float64)
    p = next(tiny_vae.modality.decoder.parameters())

    def f():
        torch.manual_seed(5)
        return O.iwae(tiny_vae, x, 4)

    tiny_vae.zero_grad()
    torch.manual_seed(5)
    O.dreg(tiny_vae, x, 4).backward()
    analytic = p.grad[0, 0].item()
    h = 1e-6
    with torch.no_grad():
        p[0, 0] += h
        up = f().item()
        p[0, 0] -= 2 * h
        down = f().item()
        p[0, 0] += h
    assert analytic == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-7)


def test_unknown_gradient_name_is_rejected(tiny_vae):
    with pytest.raises(ValueError, match="'dreg' or 'stl'"):
        O.dreg(tiny_vae, torch.randn(2, 3), 3, gradient="authors")


# ---------------------------------------------------------------------------------------------
# DReG, mixture of experts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["stratified", "mixture"])
def test_m_dreg_encoder_gradient_matches_closed_form(which):
    model = make_tiny_mm()
    batch = tiny_batch(5)
    K, seed = 6, 2
    fn = O.m_dreg_stratified if which == "stratified" else O.m_dreg_mixture
    enc = [p for m in model.modalities.values() for p in m.encoder.parameters()]
    _run(lambda: fn(model, batch, K), model, seed)
    got = _grads(model, enc)

    torch.manual_seed(seed)
    _, experts = model.experts(batch)
    z = experts.rsample((K,)).transpose(0, 1)
    zl = z.detach().requires_grad_(True)
    lq = MixtureOfExpertsPosterior(detach_params(experts)).log_prob(zl)
    lpx = sum(model.log_likelihood(batch, zl).values())
    lw = model.prior().log_prob(zl).sum(-1) + lpx - lq
    dlw, = torch.autograd.grad(lw.sum(), zl)
    dims = (1,) if which == "stratified" else (0, 1)
    w = (lw - torch.logsumexp(lw, dims, keepdim=True)).exp().detach()
    scale = 1.0 / (5 * (2 if which == "stratified" else 1))     # mean over batch (and strata)
    expected = torch.autograd.grad(z, enc, grad_outputs=w.pow(2).unsqueeze(-1) * dlw * scale, allow_unused=True)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b if b is not None else torch.zeros_like(a), rtol=1e-4, atol=1e-6)


def test_m_dreg_decoder_gradient_is_iwae_gradient():
    model = make_tiny_mm()
    batch = tiny_batch(4)
    dec = [p for m in model.modalities.values() for p in m.decoder.parameters()]
    v1 = _run(lambda: O.m_dreg_stratified(model, batch, 5), model, 4)
    g1 = _grads(model, dec)
    v2 = _run(lambda: O.m_iwae_stratified(model, batch, 5), model, 4)
    g2 = _grads(model, dec)
    torch.testing.assert_close(v1, v2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bounds ordering on a model with an exact log-likelihood (1-D latent, quadrature)
# ---------------------------------------------------------------------------------------------
def _exact_log_px(model: VAE, x: torch.Tensor) -> torch.Tensor:
    grid = torch.linspace(-40, 40, 40001, dtype=torch.float64).unsqueeze(-1)      # (G, 1)
    with torch.no_grad():
        lp = model.prior().log_prob(grid).sum(-1)[:, None] + model.modality.log_likelihood(
            model.decode(grid[:, None, :].expand(-1, x.shape[0], -1)), x)          # (G, B)
    dz = (grid[1] - grid[0]).item()
    return torch.logsumexp(lp, 0) + math.log(dz)


def test_bounds_are_ordered_and_below_exact_log_likelihood():
    torch.manual_seed(0)
    model = VAE(tiny_modality("x", 2, 1, scale_param="softplus", llik_scale=1.0), Prior(1, "laplace")).double()
    x = torch.randn(8, 2, dtype=torch.float64) * 2
    exact = _exact_log_px(model, x).mean().item()
    torch.manual_seed(1)
    with torch.no_grad():
        el = torch.stack([O.elbo(model, x, K=1, analytic_kl=False) for _ in range(400)]).mean().item()
        iw5 = torch.stack([O.iwae(model, x, 5) for _ in range(400)]).mean().item()
        iw50 = torch.stack([O.iwae(model, x, 50) for _ in range(200)]).mean().item()
        iw2000 = O.iwae(model, x, 20000).item()
    assert el < iw5 < iw50 <= exact + 1e-3
    assert iw2000 == pytest.approx(exact, abs=0.02)   # IWAE converges to log p(x)


def test_iwae_with_one_sample_equals_elbo_on_the_same_sample(tiny_vae):
    x = torch.randn(4, 3)
    torch.manual_seed(7)
    a = O.iwae(tiny_vae, x, 1)
    torch.manual_seed(7)
    b = O.elbo(tiny_vae, x, 1, analytic_kl=False)
    torch.testing.assert_close(a, b)


def test_analytic_and_monte_carlo_elbo_agree_in_expectation(tiny_vae):
    x = torch.randn(4, 3)
    torch.manual_seed(0)
    with torch.no_grad():
        mc = O.elbo(tiny_vae, x, K=20000, analytic_kl=False).item()
        an = O.elbo(tiny_vae, x, K=20000).item()
    assert mc == pytest.approx(an, abs=0.05)


def test_beta_weights_only_the_closed_form_kl(tiny_vae):
    """elbo(beta) = E[log p(x|z)] - beta * KL on the same samples: linear in beta, eq. (1) at beta = 1."""
    from mmvae_lite.distributions import kl_divergence
    x = torch.randn(4, 3)
    values = {}
    for beta in (0.0, 0.25, 1.0):
        torch.manual_seed(3)
        values[beta] = O.elbo(tiny_vae, x, K=2, beta=beta)
    kl = kl_divergence(tiny_vae.encode(x), tiny_vae.prior()).sum(-1).mean()
    torch.testing.assert_close(values[0.0] - values[1.0], kl)
    torch.testing.assert_close(values[0.0] - values[0.25], 0.25 * kl)
    torch.manual_seed(3)
    torch.testing.assert_close(O.elbo(tiny_vae, x, K=2), values[1.0])
    with pytest.raises(ValueError, match="beta must be >= 0"):
        O.elbo(tiny_vae, x, beta=-1.0)
    with pytest.raises(ValueError, match="closed-form KL"):
        O.elbo(tiny_vae, x, analytic_kl=False, beta=0.5)


def test_multimodal_bounds_ordering():
    """ELBO <= stratified IWAE (eq. 3) <= mixture IWAE (eq. 5), on average over many draws."""
    model = make_tiny_mm()
    batch = tiny_batch(16)
    torch.manual_seed(0)
    with torch.no_grad():
        s1 = torch.stack([O.m_iwae_stratified(model, batch, 1) for _ in range(300)]).mean()
        s10 = torch.stack([O.m_iwae_stratified(model, batch, 10) for _ in range(300)]).mean()
        mix10 = torch.stack([O.m_iwae_mixture(model, batch, 10) for _ in range(300)]).mean()
    assert s1 < s10 < mix10


def test_stratum_bounds_give_eq3_and_eq5_on_the_same_samples():
    """Mean over strata = eq. (3); log-mean-exp over strata = eq. (5) (same seed, so same samples)."""
    model = make_tiny_mm()
    batch = tiny_batch(6)
    with torch.no_grad():
        torch.manual_seed(4)
        s = O.stratum_bounds(model, batch, 7)
        torch.manual_seed(4)
        eq3 = O.m_iwae_stratified(model, batch, 7)
        torch.manual_seed(4)
        eq5 = O.m_iwae_mixture(model, batch, 7)
    assert s.shape == (2, 6)
    torch.testing.assert_close(s.mean(), eq3)
    torch.testing.assert_close(O.log_mean_exp(s, 0).mean(), eq5)
    assert (O.log_mean_exp(s, 0) >= s.mean(0) - 1e-5).all()     # Jensen, pair by pair
    assert not torch.allclose(s[0], s[1])                          # the strata are different bounds


def test_m_elbo_is_matches_its_expectation():
    """Appendix B is an unbiased estimate of the mean of the unimodal ELBOs E_{q_i}[sum_j log p(x_j|z)] - KL_i."""
    model = make_tiny_mm()
    batch = tiny_batch(4)
    torch.manual_seed(0)
    with torch.no_grad():
        est = O.m_elbo_is(model, batch, K=40000).item()
        experts = model.encode(batch)
        direct = []
        for q in experts.values():
            z = q.sample((40000,))
            rec = sum(model.log_likelihood(batch, z).values()).mean(0)
            kl = O.kl_divergence(q, model.prior()).sum(-1)
            direct.append(rec - kl)
        direct = torch.stack(direct).mean().item()
    assert est == pytest.approx(direct, rel=0.02)


def test_m_elbo_is_calls_each_decoder_once_on_its_own_samples():
    model = make_tiny_mm()
    calls = []
    for m in model.modalities.values():
        m.decoder.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    O.m_elbo_is(model, tiny_batch(4), K=3)
    assert calls == [torch.Size([3, 4, 2]), torch.Size([3, 4, 2])]
    calls.clear()
    O.m_iwae_stratified(model, tiny_batch(4), K=3)  # M x M evaluations in M calls on stacked samples
    assert calls == [torch.Size([2, 3, 4, 2]), torch.Size([2, 3, 4, 2])]


def test_objectives_refuse_the_wrong_model():
    poe = make_tiny_mm("poe", "normal")
    with pytest.raises(TypeError, match="MixtureOfExperts"):
        O.m_iwae_stratified(poe, tiny_batch(2), 2)
    with pytest.raises(TypeError, match="ProductOfExperts"):
        O.mvae_elbo(make_tiny_mm(), tiny_batch(2))
    with pytest.raises(ValueError, match="unknown objective"):
        O.get_objective("m_iwae_tight")


def test_mvae_elbo_is_sum_of_joint_and_unimodal_elbos():
    model = make_tiny_mm("poe", "normal")
    batch = tiny_batch(3)
    torch.manual_seed(0)
    with torch.no_grad():
        v = O.mvae_elbo(model, batch, K=30000).item()
        prior = model.prior()
        total = 0.0
        for subset in (["a", "b"], ["a"], ["b"]):
            sub = {k: batch[k] for k in subset}
            q = model.posterior(sub)
            z = q.sample((30000,))
            rec = sum(model.log_likelihood(sub, z).values()).mean(0)
            total += (rec - O.kl_divergence(q, prior).sum(-1)).mean().item()
    assert v == pytest.approx(total, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Estimators that coincide, appendix B's gradient, argument checks
# ---------------------------------------------------------------------------------------------
def _all_grads(model):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("which", ["vae", "stratified"])
def test_dreg_and_stl_coincide_exactly_at_K1(which, tiny_vae):
    """One sample per normalisation: w~ = 1, so DReG's w~^2 and STL's w~ weight the same path gradient.

    (Not so for eq. (5) or the ancestral bound at K = 1: their one normalisation holds M samples.)"""
    model, batch, fn = ((tiny_vae, torch.randn(4, 3), O.dreg) if which == "vae"
                        else (make_tiny_mm(), tiny_batch(4), O.m_dreg_stratified))
    _run(lambda: fn(model, batch, 1), model, 3)
    g_dreg = _all_grads(model)
    _run(lambda: fn(model, batch, 1, gradient="stl"), model, 3)
    g_stl = _all_grads(model)
    for a, b in zip(g_dreg, g_stl):
        assert torch.equal(a, b)


def test_unbiased_stratified_dreg_value_decoder_gradient_and_K1():
    """Value and decoder gradient are eq. (3)'s; at K = 1 the encoder gradient is STL's (path gradient)."""
    model = make_tiny_mm()
    batch = tiny_batch(5)
    dec = [p for m in model.modalities.values() for p in m.decoder.parameters()] + [model.prior.logits]
    v1 = _run(lambda: O.m_dreg_stratified_unbiased(model, batch, 4), model, 6)
    g1 = [p.grad.clone() for p in dec]
    v2 = _run(lambda: O.m_iwae_stratified(model, batch, 4), model, 6)
    g2 = [p.grad.clone() for p in dec]
    torch.testing.assert_close(v1, v2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    _run(lambda: O.m_dreg_stratified_unbiased(model, batch, 1), model, 7)
    g_unb = _all_grads(model)
    _run(lambda: O.m_dreg_stratified(model, batch, 1, gradient="stl"), model, 7)
    for a, b in zip(g_unb, _all_grads(model)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():                       # evaluation mode returns the bound
        torch.manual_seed(1)
        a = O.m_dreg_stratified_unbiased(model, batch, 3)
        torch.manual_seed(1)
        b = O.m_iwae_stratified(model, batch, 3)
    torch.testing.assert_close(a, b)


def test_m_elbo_is_appendix_gradient():
    """Same value; appendix B's cross terms send phi_j no gradient through z_j; theta gets the same gradient."""
    model = make_tiny_mm()
    batch = tiny_batch(4)
    v_auth = _run(lambda: O.m_elbo_is(model, batch, 3), model, 2)
    g_auth = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    f_app = O.get_objective("m_elbo_is_appendix")
    v_app = _run(lambda: f_app(model, batch, 3), model, 2)
    g_app = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(v_auth, v_app)
    for n in g_auth:
        if ".decoder." in n:
            torch.testing.assert_close(g_auth[n], g_app[n])
    assert any((g_auth[n] - g_app[n]).abs().max() > 1e-6 for n in g_auth if ".encoder." in n)

    # independent construction of appendix B's encoder gradient: cross terms with z_j detached
    model.zero_grad(set_to_none=True)
    torch.manual_seed(2)
    _, experts = model.experts(batch)
    z = experts.rsample((3,)).transpose(0, 1)                  # (M, K, B, L)
    names = model.names
    total = 0.0
    for i in range(2):
        for j in range(2):
            zj = z[j] if i == j else z[j].detach()
            lp = model.llik_scaling[names[j]] * model.modalities[names[j]].log_likelihood(
                model.modalities[names[j]].decode(zj), batch[names[j]])
            ratio = 1.0 if i == j else (experts.log_prob(z[j].detach().unsqueeze(-3)).sum(-1)[:, i]
                                        - experts.log_prob(z[j].detach().unsqueeze(-3)).sum(-1)[:, j].detach()).exp()
            total = total + (ratio * lp).mean(0)
        total = total - O.kl_divergence(experts, model.prior()).sum(-1)[i]
    (total.mean() / 2).backward()
    for n, p in model.named_parameters():
        if p.grad is not None and n in g_app:
            torch.testing.assert_close(p.grad, g_app[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(O.OBJECTIVES))
def test_objectives_validate_K_and_batch(name):
    fn = O.get_objective(name)
    if name in ("elbo", "iwae", "dreg"):
        model, ok, empty = make_tiny_mm(), None, None
        from conftest import tiny_modality as tm
        model = VAE(tm("x", 3, 2), Prior(2, "laplace"))
        ok, empty, mismatched = torch.randn(3, 3), torch.randn(0, 3), None
    else:
        model = make_tiny_mm("poe", "normal") if name == "mvae_elbo" else make_tiny_mm()
        ok = tiny_batch(3)
        empty = {"a": torch.randn(0, 3), "b": torch.randn(0, 5)}
        mismatched = {"a": torch.randn(3, 3), "b": torch.randn(2, 5)}
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="K"):
            fn(model, ok, bad)
    with pytest.raises(ValueError, match="batch|x"):
        fn(model, empty, 2)
    if mismatched is not None:
        with pytest.raises(ValueError, match="batch"):
            fn(model, mismatched, 2)
    assert torch.isfinite(fn(model, ok, 2))


@pytest.mark.parametrize("which", ["dreg", "m_dreg_stratified"])
def test_dreg_surrogate_runs_under_bf16_autocast(which, tiny_vae):
    """--bf16 autocasts the forward pass: z is then bf16 while the DReG weights are float32; the
    gradient hook must hand back z's own dtype, and the gradients must still point the same way."""
    model = tiny_vae if which == "dreg" else make_tiny_mm()
    x = torch.randn(6, 3) if which == "dreg" else tiny_batch(6)
    fn = getattr(O, which)
    params = list(model.parameters())
    _run(lambda: fn(model, x, 5), model, 0)
    exact = _grads(model, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _run(lambda: fn(model, x, 5), model, 0)
    got = _grads(model, params)
    flat = lambda gs: torch.cat([g.flatten().float() for g in gs])
    assert torch.isfinite(flat(got)).all()
    assert torch.nn.functional.cosine_similarity(flat(got), flat(exact), dim=0) > 0.95
