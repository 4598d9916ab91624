"""Training: the objective improves, checkpoints round-trip, resume is exact, NaNs stop training cleanly."""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_mm
from mmvae_lite import objectives as O
from mmvae_lite.training import NonFiniteError, Trainer, select_device


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g)
    return {"a": z @ torch.randn(2, 3, generator=g) + 0.1 * torch.randn(n, 3, generator=g),
            "b": z @ torch.randn(2, 5, generator=g) + 0.1 * torch.randn(n, 5, generator=g)}


def _trainer(tmp_path=None, seed=0, **kw):
    model = make_tiny_mm(seed=seed)
    return Trainer(model, O.m_dreg_stratified, K=4, batch_size=16, seed=3, device="cpu", progress=False,
                   verbose=False, checkpoint=None if tmp_path is None else tmp_path / "ckpt.pt",
                   eval_objective=O.m_iwae_stratified, **kw)


def test_training_improves_the_bound():
    tr = _trainer()
    data = _data()
    before = tr.evaluate(data, K=20)
    tr.fit(data, epochs=15)
    after = tr.evaluate(data, K=20)
    assert after > before + 1.0
    assert len(tr.history) == 15 and tr.history[-1].epoch == 15


def test_exact_resume(tmp_path):
    data, test = _data(), _data(32, seed=9)
    a = _trainer()
    a.fit(data, epochs=2, test=test)

    b = _trainer(tmp_path)
    b.fit(data, epochs=1, test=test)
    c = _trainer(seed=123)            # different init: everything must come from the checkpoint
    c.load(tmp_path / "ckpt.pt")
    assert c.epoch == 1
    c.fit(data, epochs=2, test=test)
    for (n, p), (_, q) in zip(a.model.state_dict().items(), c.model.state_dict().items()):
        torch.testing.assert_close(p, q, msg=f"parameter {n} differs after resume")
    assert a.history.train == pytest.approx(c.history.train)
    assert a.history.test == pytest.approx(c.history.test)


def test_warmup_raises_the_learning_rate_linearly_and_resumes_exactly(tmp_path):
    data, test = _data(), _data(32, seed=9)          # 4 steps per epoch: the warm-up spans 2.5 epochs
    a = _trainer(lr=1e-2, warmup_steps=10)
    seen = []
    for batch in [{k: v[i:i + 16] for k, v in data.items()} for i in range(0, 64, 16)] * 3:
        seen.append(a.optimizer.param_groups[0]["lr"])
        a.train_step(batch)
    assert seen == pytest.approx([1e-2 * (i + 1) / 10 for i in range(10)] + [1e-2, 1e-2])
    assert a.settings()["warmup_steps"] == 10

    a = _trainer(lr=1e-2, warmup_steps=10)
    a.fit(data, epochs=4, test=test)
    b = _trainer(tmp_path, lr=1e-2, warmup_steps=10)
    b.fit(data, epochs=1, test=test)                  # stops inside the warm-up (step 4 of 10)
    c = _trainer(seed=123, lr=1e-2, warmup_steps=10).load(tmp_path / "ckpt.pt")
    assert c.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 5 / 10)
    c.fit(data, epochs=4, test=test)
    for (n, p), (_, q) in zip(a.model.state_dict().items(), c.model.state_dict().items()):
        torch.testing.assert_close(p, q, msg=f"parameter {n} differs after resuming inside the warm-up")
    assert a.history.train == pytest.approx(c.history.train)
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0"):
        _trainer(warmup_steps=-1)


def test_checkpoint_round_trip_uses_weights_only(tmp_path):
    tr = _trainer()
    tr.fit(_data(), epochs=1)
    path = tr.save(tmp_path / "x" / "t.pt")
    state = torch.load(path, weights_only=True)   # loads without unpickling code
    assert state["epoch"] == 1 and state["format"] == "mmvae_lite.trainer" and state["version"] == 1
    assert state["model_info"]["kind"] == "mmvae" and state["trainer"]["K"] == 4
    other = _trainer(seed=5).load(path)
    for p, q in zip(tr.model.parameters(), other.model.parameters()):
        torch.testing.assert_close(p, q)
    with pytest.raises(FileNotFoundError):
        other.load(tmp_path / "missing.pt")
    assert not list((tmp_path / "x").glob("*.tmp"))


def test_non_finite_loss_stops_training_and_keeps_last_checkpoint(tmp_path):
    tr = _trainer(tmp_path)
    data = _data()
    tr.fit(data, epochs=1)
    good = (tmp_path / "ckpt.pt").read_bytes()
    with torch.no_grad():
        next(tr.model.modalities["b"].decoder.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"epoch 2, step \d+"):
        tr.fit(data, epochs=2)
    assert (tmp_path / "ckpt.pt").read_bytes() == good


def test_non_finite_gradient_names_the_parameter():
    tr = _trainer()

    def objective(model, batch, K):
        t = model.modalities["a"].decoder.net[0].weight * 1.0
        t.register_hook(lambda g: g * float("inf"))       # finite value, non-finite gradient
        return O.m_iwae_stratified(model, batch, K) + (t * 0.0).sum()
    tr.objective = objective
    with pytest.raises(NonFiniteError, match="modalities.a.decoder"):
        tr.fit(_data(), epochs=1)


def test_deferred_checks_change_nothing_on_a_finite_run():
    """check_every > 1 (the accelerator default) only delays the host's look at the flags."""
    data = _data()
    eager, deferred = _trainer(), _trainer()
    assert eager.check_every == 1                      # CPU default: check every step
    deferred.check_every = 3
    torch.manual_seed(7)                               # latent samples come from the global RNG
    eager.fit(data, epochs=2)
    torch.manual_seed(7)
    deferred.fit(data, epochs=2)
    assert deferred.history.train == eager.history.train
    for p, q in zip(eager.model.parameters(), deferred.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert deferred._pending == []


def _nan_from_step(first_bad: int, on_gradient: bool = False):
    """An objective that turns non-finite (its value, or only its gradient) from a given step on."""
    def objective(model, batch, K):
        value = O.m_iwae_stratified(model, batch, K)
        if objective.trainer.step < first_bad:
            return value
        if on_gradient:
            t = next(model.parameters()) * 1.0
            t.register_hook(lambda g: g * float("nan"))
            return value + (t * 0.0).sum()
        return value * float("nan")
    return objective


@pytest.mark.parametrize("on_gradient", [False, True])
def test_deferred_check_reports_the_first_bad_step(tmp_path, on_gradient):
    tr = _trainer(tmp_path)
    data = _data()                                      # 64 rows, batch 16: 4 steps per epoch
    tr.fit(data, epochs=1)
    good = (tmp_path / "ckpt.pt").read_bytes()
    tr.check_every = 3
    tr.objective = _nan_from_step(5, on_gradient)
    tr.objective.trainer = tr
    kind = "gradient" if on_gradient else "objective"
    # steps 4, 5, 6 are checked together after step 6: the report names step 5, found 1 step later
    with pytest.raises(NonFiniteError, match=rf"non-finite {kind} .*epoch 2, step 5\b.*found 1 step later"):
        tr.fit(data, epochs=2)
    assert tr.step == 7
    assert (tmp_path / "ckpt.pt").read_bytes() == good
    assert tr._pending == []


def test_eager_check_stops_at_the_bad_step():
    tr = _trainer()
    tr.objective = _nan_from_step(5)
    tr.objective.trainer = tr
    with pytest.raises(NonFiniteError, match=r"epoch 2, step 5:"):
        tr.fit(_data(), epochs=2)
    assert tr.step == 5                                 # no update from the bad step


def test_check_every_must_be_positive():
    with pytest.raises(ValueError, match="check_every"):
        Trainer(make_tiny_mm(), O.m_iwae_stratified, device="cpu", check_every=0)


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert select_device().type == "cuda"
    else:
        assert select_device().type in ("cpu", "mps")


def test_make_adam_is_amsgrad_adam():
    """The (fused where available) optimiser follows torch's reference AMSGrad Adam step for step."""
    import torch
    from mmvae_lite.training import make_adam
    torch.manual_seed(0)
    ps = [torch.randn(20, 7, requires_grad=True), torch.randn(7, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    start = [p.detach().clone() for p in ps]
    ours = make_adam(ps, lr=1e-2)
    ref = torch.optim.Adam(qs, lr=1e-2, amsgrad=True, foreach=False)
    assert ours.defaults["amsgrad"] is True
    for _ in range(10):
        for p, q in zip(ps, qs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours.step()
        ref.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert all((p - s).abs().max() > 1e-3 for p, s in zip(ps, start))   # the steps did move the parameters


def test_heap_trimmer_trims_only_when_the_heap_crept_up():
    """The policy: remember the resident size after a trim; trim when it grows by more than the slack."""
    from mmvae_lite.training import HeapTrimmer
    rss = iter([900.0, 950.0, 1020.0, 1040.0, 850.0, 860.0, 700.0, 827.0, 830.0, 640.0])
    calls = []
    h = HeapTrimmer(slack_mb=128, rss_mb=lambda: next(rss), trim=lambda: calls.append(1))
    assert h.active
    assert [h.after_step() for _ in range(3)] == [False, False, False]   # base 900; 950, 1020 within 128 MB
    assert h.after_step() and calls == [1] and h.base_mb == 850.0          # 1040 > 900 + 128: trim, re-read 850
    assert not h.after_step()                                              # 860
    assert not h.after_step() and h.base_mb == 700.0                       # it shrank: new base
    assert not h.after_step()                                              # 827 <= 700 + 128
    assert h.after_step() and h.base_mb == 640.0 and h.trims == 2          # 830 > 828: trim, re-read 640


def test_heap_trimmer_is_a_no_op_without_malloc_trim():
    from mmvae_lite.training import HeapTrimmer
    h = HeapTrimmer(rss_mb=lambda: 1e9)
    h._trim = None   # as on a platform without glibc's malloc_trim
    assert not h.active and not h.after_step() and h.trims == 0
