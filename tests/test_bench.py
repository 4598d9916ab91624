"""Smoke test of the benchmark harness (bench/): one tiny step of our implementation, in process."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

bench = pytest.importorskip("bench.bench")

FIELDS = {"implementation", "mode", "config", "objective", "K", "batch", "samples_per_s", "step_s_median",
          "step_s", "peak_rss_mb", "rss_before_mb", "threads", "device", "torch", "python"}


def _last_json(capsys) -> dict:
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert lines, "the harness printed no JSON line"
    return json.loads(lines[-1])


def test_train_step_smoke(capsys):
    bench.main(["--config", "mnist-svhn-paper", "--objective", "m_dreg_stratified", "--K", "2", "--batch", "8",
                "--steps", "1", "--warmup", "0", "--impl", "mmvae_lite"])
    r = _last_json(capsys)
    assert FIELDS <= set(r)
    assert r["implementation"] == "mmvae_lite" and r["mode"] == "train"
    assert r["K"] == 2 and r["batch"] == 8 and r["objective"] == "m_dreg_stratified"
    assert r["samples_per_s"] > 0 and r["step_s_median"] > 0 and len(r["step_s"]) == 1
    assert r["peak_rss_mb"] >= r["rss_before_mb"] > 0
    assert r["device"].startswith("cpu")


def test_eval_smoke(capsys):
    bench.main(["--eval", "--eval-K", "6", "--eval-chunk", "4", "--eval-pairs", "4", "--steps", "1", "--warmup", "0"])
    r = _last_json(capsys)
    assert r["mode"] == "eval" and r["K"] == 6 and r["pairs"] == 4
    assert r["s_per_1000_pairs"] > 0 and r["objective_value"] < 0


def test_chunked_iwae_matches_one_shot():
    """Chunking over samples changes only memory, not the estimate (same draws, same order)."""
    import torch
    from mmvae_lite.objectives import log_mean_exp, moe_log_weights
    _, model = bench.build_ours("mnist-svhn-paper", 6, 4, "m_iwae_mixture", 0)
    model.eval()
    batch = bench.synthetic_batch(3, 0)
    torch.manual_seed(0)
    one = bench.iwae_chunked(model, batch, K=6, chunk=6)
    torch.manual_seed(0)
    with torch.no_grad():
        lw, _ = moe_log_weights(model, batch, 6)
    torch.testing.assert_close(one, log_mean_exp(lw, (0, 1)))
    assert one.shape == (3,)


# ---------------------------------------------------------------------------------------------
# The package's CPU fast paths (networks.FAST_PATHS, distributions.FUSED_LIKELIHOOD): same math as
# the plain code (checked in float64, where only summation order could differ).
# ---------------------------------------------------------------------------------------------
def _fast_paths():
    from mmvae_lite import distributions, networks
    return networks, distributions


@pytest.fixture
def fast_flags():
    networks, distributions = _fast_paths()
    saved = networks.FAST_PATHS, distributions.FUSED_LIKELIHOOD, networks.SPARSE_BACKWARD_BELOW
    yield networks, distributions
    networks.FAST_PATHS, distributions.FUSED_LIKELIHOOD, networks.SPARSE_BACKWARD_BELOW = saved


def _run(module, inp, flags, fast):
    import torch
    networks, distributions = flags
    networks.FAST_PATHS = distributions.FUSED_LIKELIHOOD = fast
    module.zero_grad(set_to_none=True)
    inp = inp.detach().requires_grad_(inp.is_floating_point())
    out = module(inp)
    out = out if isinstance(out, torch.Tensor) else torch.cat([o.flatten(1) for o in out], 1)
    weight = torch.linspace(-1, 1, out[0].numel(), dtype=out.dtype).view(out.shape[1:])
    (out * weight).sum().backward()
    return out.detach(), inp.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("name", ["SVHNDecoder", "Image64Decoder", "SVHNEncoder", "Image64Encoder"])
def test_fast_networks_match_plain(fast_flags, name):
    import torch
    from mmvae_lite import networks
    torch.manual_seed(0)
    net = getattr(networks, name)(6).double()
    inp = torch.randn(3, 6, dtype=torch.double) if "Decoder" in name else \
        torch.rand(3, *net.event_shape, dtype=torch.double)
    a, b = _run(net, inp, fast_flags, True), _run(net, inp, fast_flags, False)
    torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a[1], b[1], rtol=1e-10, atol=1e-12)
    for ga, gb in zip(a[2], b[2]):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)


def test_fused_laplace_likelihood_matches_plain(fast_flags):
    import torch
    from mmvae_lite.distributions import LaplaceLikelihood
    _, distributions = fast_flags
    params = torch.rand(4, 2, 3, 5, 5, dtype=torch.double, requires_grad=True)
    x = torch.rand(2, 3, 5, 5, dtype=torch.double, requires_grad=True)
    res = []
    for fused in (True, False):
        distributions.FUSED_LIKELIHOOD = fused
        params.grad = x.grad = None
        lp = LaplaceLikelihood(0.75).log_prob(params, x)
        (lp * torch.arange(8, dtype=lp.dtype).view(4, 2)).sum().backward()
        res.append((lp.detach(), params.grad.clone(), x.grad.clone()))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_row_sparse_backward_is_exact(fast_flags):
    """Rows whose output gradient is exactly zero are skipped; every gradient is unchanged."""
    import torch
    from mmvae_lite.networks import SVHNDecoder
    networks, _ = fast_flags
    torch.manual_seed(0)
    dec = SVHNDecoder(5).double()
    z = torch.randn(2, 4, 5, dtype=torch.double)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.double)[..., None, None, None]
    grads = []
    for below in (0.0, 0.6, 0.6):     # dense (observes 3 of 8 nonzero rows), then twice the sparse recompute
        networks.SPARSE_BACKWARD_BELOW = below
        dec.zero_grad(set_to_none=True)
        zz = z.clone().requires_grad_()
        (dec(zz) * mask).sum().backward()
        grads.append((zz.grad, [p.grad for p in dec.parameters()]))
    assert dec._grad_rows.fraction == pytest.approx(3 / 8)
    for zg, pg in grads[1:]:
        torch.testing.assert_close(zg, grads[0][0], rtol=1e-12, atol=1e-14)
        assert (zg[mask.view(2, 4) == 0] == 0).all()
        for a, b in zip(pg, grads[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_count_gflop_matches_closed_form():
    """FLOP counting (used for the roofline): a linear layer's forward + backward is 3 x 2*N*I*O."""
    import torch
    lin = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(16, 64, requires_grad=True)
    g = bench.count_gflop(lambda: lin(x).sum().backward())
    assert g == pytest.approx(3 * 2 * 16 * 64 * 32 / 1e9)


def test_count_gflop_without_autograd():
    """Under no_grad composite ops (linear, conv2d) reach the counter whole and must still be counted."""
    import torch
    lin, conv = torch.nn.Linear(64, 32, bias=False), torch.nn.Conv2d(3, 8, 3, bias=False)
    x, img = torch.randn(16, 64), torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert bench.count_gflop(lambda: lin(x)) == pytest.approx(2 * 16 * 64 * 32 / 1e9)
        assert bench.count_gflop(lambda: conv(img)) == pytest.approx(2 * 2 * 8 * 8 * 8 * 3 * 9 / 1e9)


def test_flops_field(capsys):
    bench.main(["--objective", "m_dreg_stratified", "--K", "2", "--batch", "8", "--steps", "1", "--warmup", "0",
                "--flops"])
    r = _last_json(capsys)
    assert r["gflop_per_step"] > 0 and r["gflops_achieved"] > 0


# ---------------------------------------------------------------------------------------------
# bench.compare's table and the MultiVae runner (MultiVae itself is optional: never in CI)
# ---------------------------------------------------------------------------------------------
def _row(impl, samples_per_s, cpu_s, gflop=None):
    r = {"implementation": impl, "samples_per_s": samples_per_s, "step_s_median": 128 / samples_per_s,
         "cpu_s_median": cpu_s, "peak_rss_mb": 1000.0, "rss_before_mb": 800.0, "cpu_utilisation": 0.99}
    if gflop:
        r.update(gflop_per_step=gflop, gflops_achieved=gflop * samples_per_s / 128)
    return r


def test_compare_table_ratios_per_implementation():
    """Each other implementation's row carries ours ÷ it (median over repetitions); ours carries none."""
    compare = pytest.importorskip("bench.compare")
    results = {"k30": {"mmvae_lite": [_row("mmvae_lite", 40, 3.0, 170), _row("mmvae_lite", 60, 3.0, 170)],
                       "authors": [_row("authors", 20, 6.0), _row("authors", 20, 9.0)],
                       "multivae": [_row("multivae", 10, 12.0), _row("multivae", 20, 12.0)]},
               "elbo": {"mmvae_lite": [_row("mmvae_lite", 100, 1.0)], "authors": [_row("authors", 50, 1.5)],
                        "multivae": []}}
    meta = {"device": "cpu", "torch": "x", "threads": 2, "reps": 2, "when": "now", "peak_gflops": 170.0}
    table = compare.markdown(results, {"k30": "K=30", "elbo": "ELBO"}, meta)
    rows = {tuple(c.strip() for c in ln.split("|")[1:3]): ln for ln in table.splitlines() if ln.startswith("| K=")
            or ln.startswith("| ELBO")}
    assert set(rows) == {("K=30", "mmvae_lite"), ("K=30", "authors"), ("K=30", "multivae"),
                         ("ELBO", "mmvae_lite"), ("ELBO", "authors")}
    assert "**2.50x** (2.00, 3.00)" in rows["K=30", "authors"] and "**2.50x** (2.00, 3.00)" not in rows["K=30", "mmvae_lite"]
    assert "**3.50x** (4.00, 3.00)" in rows["K=30", "multivae"] and "**4.00x** (4.00, 4.00)" in rows["K=30", "multivae"]
    assert "**2.00x** (2.00) | **1.50x** (1.50)" in rows["ELBO", "authors"]
    # roofline: 170 GFLOP at 170 GFLOP/s is 1 s; the authors' median step is 6.4 s
    assert "the authors' step takes 6400 ms, so no implementation of the same arithmetic can exceed **6.40x** over it" in table


def test_multivae_missing_is_a_clear_error(monkeypatch):
    import importlib.util
    if importlib.util.find_spec("multivae") is not None:
        pytest.skip("multivae is installed here")
    monkeypatch.delenv("MMVAE_MULTIVAE_PATH", raising=False)
    from bench import multivae
    with pytest.raises(SystemExit, match="MMVAE_MULTIVAE_PATH"):
        multivae.build(0, 2, "m_dreg_stratified")
    with pytest.raises(SystemExit, match="no counterpart for 'm_elbo_is'"):
        multivae.build(0, 1, "m_elbo_is")


def test_multivae_gets_our_weights():
    """With MultiVae importable: our weights, converted, give MultiVae's networks our encoder and decoder outputs."""
    import importlib.util
    import os
    import torch
    from bench import multivae
    path = os.environ.get("MMVAE_MULTIVAE_PATH")
    if path and path not in sys.path:
        sys.path.insert(0, path)
    if importlib.util.find_spec("multivae") is None:
        pytest.skip("MultiVae is not installed (see bench/multivae.py)")
    _, ours = bench.build_ours("mnist-svhn-paper", 1, 4, "m_dreg_stratified", 0)
    theirs = multivae.build(1, 1, "m_dreg_stratified")
    sd = bench.authors_state_from_ours(ours.state_dict(), multivae.authors_layout_template(theirs))
    theirs.load_state_dict(multivae.state_from_authors(sd, theirs))
    batch = bench.synthetic_batch(3, 0)
    with torch.no_grad():
        for m in ("mnist", "svhn"):
            q = ours.modalities[m].encoder(batch[m])
            out = theirs.encoders[m](batch[m])
            torch.testing.assert_close(out.embedding, q[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out.log_covariance, q[1], rtol=1e-5, atol=1e-5)   # scale logits (sum-to-D)
            z = torch.randn(5, 20)
            torch.testing.assert_close(theirs.decoders[m](z).reconstruction,
                                       ours.modalities[m].decoder(z).reshape(5, *batch[m].shape[1:]),
                                       rtol=1e-5, atol=1e-5)
