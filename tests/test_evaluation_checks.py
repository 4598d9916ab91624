"""Evaluation entry points refuse bad input with a message that names it; single-modality VAEs either
work or are refused by kind; coherence is vectorised and reports progress; output names no absolute path."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import make_tiny_mm, tiny_batch, tiny_modality
from mmvae_lite import build_model, get_config
from mmvae_lite import distributions as D
from mmvae_lite import evaluation as ev
from mmvae_lite.distributions import Prior
from mmvae_lite.models import VAE


pytestmark = pytest.mark.usefixtures("one_thread")


class Readout(nn.Module):
    """A 'classifier' reading logits from the first 10 inputs; counts its calls and inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x[..., :2].repeat_interleave(5, -1)


def labelled(n: int = 20):
    return tiny_batch(n), torch.randint(10, (n,), generator=torch.Generator().manual_seed(0))


def clfs():
    return {"a": Readout(), "b": Readout()}


# ---------------------------------------------------------------------------------------------
# Sizes: a ValueError naming the argument and the accepted values
# ---------------------------------------------------------------------------------------------
def _calls(m, vae):
    b, y = labelled()
    return {
        "K=0": (lambda: ev.log_likelihoods(m, b, K=0, progress=False), "K must be an integer >= 1, got 0"),
        "K<0": (lambda: ev.log_likelihoods(vae, b["a"], K=-3, progress=False), "K must be an integer >= 1, got -3"),
        "K float": (lambda: ev.log_likelihoods(m, b, K=2.5, progress=False), "K must be an integer >= 1, got 2.5"),
        "ll batch_size": (lambda: ev.log_likelihoods(m, b, K=2, batch_size=0, progress=False),
                          "batch_size must be an integer >= 1, got 0"),
        "samples_per_chunk": (lambda: ev.log_likelihoods(m, b, K=2, samples_per_chunk=0, progress=False),
                              "samples_per_chunk must be an integer >= 1 or None, got 0"),
        "n_joint": (lambda: ev.coherence(m, b, clfs(), labels=y, n_joint=-1), "n_joint must be an integer >= 0"),
        "coherence batch_size": (lambda: ev.coherence(m, b, clfs(), labels=y, batch_size=-8),
                                 "batch_size must be an integer >= 1, got -8"),
        "max_examples": (lambda: ev.cross_coherence(m, b, clfs(), labels=y, max_examples=0),
                         "max_examples must be an integer >= 1 or None, got 0"),
        "joint n": (lambda: ev.joint_coherence(m, clfs(), 0), "n must be an integer >= 1, got 0"),
        "kl max_examples": (lambda: ev.kl_per_dimension(m, b, max_examples=0), "max_examples must be"),
        "steps": (lambda: ev.latent_traversals(m, b, steps=0), "steps must be an integer >= 1, got 0"),
        "span": (lambda: ev.latent_traversals(m, b, span=0.0), "span must be a finite number > 0"),
        "dims": (lambda: ev.latent_traversals(m, b, dims=[0, 2]), r"dims must be latent dimensions in \[0, 1\]"),
        "sources": (lambda: ev.latent_traversals(m, b, sources=["c"]), r"sources must name some of .*\['a', 'b'\]"),
        "embedding K": (lambda: ev.latent_embedding(m, b, K=0), "K must be an integer >= 1, got 0"),
        "method": (lambda: ev.latent_embedding(m, b, method="umap"), r"method must be one of \['pca', 'tsne'\]"),
        "n_draws": (lambda: ev.gradient_snr(m, b, Ks=(2,), n_draws=1), "n_draws must be an integer >= 2, got 1"),
        "Ks empty": (lambda: ev.gradient_snr(m, b, Ks=()), "Ks must be a non-empty sequence of integers >= 1"),
        "Ks zero": (lambda: ev.gradient_snr(m, b, Ks=(0, 4)), "Ks must be a non-empty sequence of integers >= 1"),
        "estimators": (lambda: ev.gradient_snr(m, b, estimators=("vimco",)), "estimators must be one of"),
        "n_train": (lambda: ev.latent_accuracy(m, b, b, train_labels=y, test_labels=y, n_train=0),
                    "n_train must be an integer >= 1 or None, got 0"),
        "C": (lambda: ev.latent_accuracy(m, b, b, train_labels=y, test_labels=y, C=0), "C must be a finite number > 0"),
        "use": (lambda: ev.posterior_features(m, b, use="mode"), r"use must be one of \['mean', 'sample'\]"),
        "cca k": (lambda: ev.CCA.fit(np.ones((5, 2)), np.ones((5, 2)), k=0), "k must be an integer >= 1, got 0"),
        "cca reg": (lambda: ev.CCA.fit(np.ones((5, 2)), np.ones((5, 2)), reg=-1.0), "reg must be a finite number >= 0"),
        "epochs": (lambda: ev.train_digit_classifier("mnist", {"mnist": torch.rand(4, 1, 28, 28)}, 0,
                                                     labels=torch.zeros(4)), "epochs must be an integer >= 1, got 0"),
        "clf batch_size": (lambda: ev.train_digit_classifier("mnist", {"mnist": torch.rand(4, 1, 28, 28)}, 1,
                                                             labels=torch.zeros(4), batch_size=0),
                           "batch_size must be an integer >= 1, got 0"),
        "predict batch_size": (lambda: ev.predict_digits(nn.Identity(), torch.rand(3, 1, 4, 4), batch_size=0),
                               "batch_size must be an integer >= 1, got 0"),
        "classifier name": (lambda: ev.get_digit_classifier("cifar", verbose=False),
                            r"name must be one of \['mnist', 'svhn'\]"),
        "labels length": (lambda: ev.cross_coherence(m, b, clfs(), labels=y[:5]),
                          "labels has 5 entries but data has 20 examples"),
        "no classifier": (lambda: ev.coherence(m, b, {"c": Readout()}, labels=y),
                          r"classifiers must name at least one of the model's modalities \['a', 'b'\]"),
        "single-class probe": (lambda: ev.latent_accuracy(m, b, b, train_labels=torch.zeros(20),
                                                          test_labels=y), "a single class"),
        "NaN labels": (lambda: ev.cross_coherence(m, b, clfs(), labels=torch.full((20,), float("nan"))),
                       "labels must be whole class numbers"),
        "unequal sizes": (lambda: ev.kl_per_dimension(m, {"a": b["a"], "b": b["b"][:7]}),
                          r"the tensors of data must hold the same number of examples, got \{'a': 20, 'b': 7\}"),
        "CCA NaN": (lambda: ev.CCA.fit(np.full((5, 2), np.nan), np.ones((5, 2))), "CCA views must be finite"),
        "wrong image size": (lambda: ev.predict_digits(ev.DigitClassifier(1, 28), torch.rand(2, 3, 32, 32)),
                             r"this DigitClassifier reads 1x28x28 images \(..., C, H, W\), got shape \(2, 3, 32, 32\)"),
    }


CASES = list(_calls(make_tiny_mm(), VAE(tiny_modality("a", 3, 2), Prior(2))))


@pytest.mark.parametrize("case", CASES)
def test_bad_sizes_raise_value_errors_that_name_the_argument(case):
    call, message = _calls(make_tiny_mm(), VAE(tiny_modality("a", 3, 2), Prior(2)))[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_coherence_names_a_classifier_for_the_wrong_images():
    model = build_model(get_config("mnist-svhn", "quick", latent_dim=2))
    data = {"mnist": torch.rand(4, 1, 28, 28), "svhn": torch.rand(4, 3, 32, 32)}
    wrong = {"mnist": ev.DigitClassifier(3, 32), "svhn": ev.DigitClassifier(3, 32)}
    with pytest.raises(ValueError, match=r"classifiers\['mnist'\] reads 3x32x32 images but modality 'mnist' has "
                                         r"events of shape 1x28x28"):
        ev.coherence(model, data, wrong, labels=torch.arange(4))


def test_evaluate_mnist_svhn_refuses_bad_sizes_before_any_work():
    model = build_model(get_config("mnist-svhn", "quick", latent_dim=2))
    data = {"mnist": torch.rand(4, 1, 28, 28), "svhn": torch.rand(4, 3, 32, 32), "label": torch.arange(4)}
    for kwargs, message in (({"K": 0}, "K must be an integer >= 1 or None, got 0"),
                            ({"n_coherence": -1}, "n_coherence must be"),
                            ({"n_likelihood": 0}, "n_likelihood must be an integer >= 1, .all. or None, got 0"),
                            ({"n_joint": -5}, "n_joint must be an integer >= 0")):
        with pytest.raises(ValueError, match=message):
            ev.evaluate_mnist_svhn(model, data, classifiers={"mnist": Readout()}, progress=False, verbose=False,
                                   **kwargs)


# ---------------------------------------------------------------------------------------------
# Empty or unreadable data
# ---------------------------------------------------------------------------------------------
EMPTY = {"a": torch.zeros(0, 3), "b": torch.zeros(0, 5)}


@pytest.mark.parametrize("call", [
    lambda m: ev.coherence(m, EMPTY, clfs(), labels=torch.zeros(0), n_joint=0),
    lambda m: ev.log_likelihoods(m, EMPTY, K=2, progress=False),
    lambda m: ev.kl_per_dimension(m, []),                        # an empty iterable of batches
    lambda m: ev.latent_accuracy(m, EMPTY, EMPTY),
], ids=["coherence", "log_likelihoods", "kl_per_dimension", "latent_accuracy"])
def test_empty_data_is_refused_by_name(call, tiny_mm):
    with pytest.raises(ValueError, match=r"(data|train) holds no examples"):
        call(tiny_mm)


def test_empty_batches_and_data_of_no_known_kind(tiny_mm):
    with pytest.raises(ValueError, match="latent_traversals: batch holds no examples"):
        ev.latent_traversals(tiny_mm, EMPTY)
    with pytest.raises(ValueError, match=r"batch holds none of the model's modalities \['a', 'b'\]"):
        ev.latent_embedding(tiny_mm, {"c": torch.zeros(3, 2)})
    with pytest.raises(TypeError, match="data must be a dataset .* got int"):
        ev.kl_per_dimension(tiny_mm, 7)
    with pytest.raises(ValueError, match=r"data yields \(inputs, labels\) pairs, which need a single-modality model"):
        ev.kl_per_dimension(tiny_mm, [(torch.zeros(2, 3), torch.zeros(2))])
    with pytest.raises(TypeError, match="data must yield dict batches name -> Tensor, got a str"):
        ev.kl_per_dimension(tiny_mm, ["a", "b"])


# ---------------------------------------------------------------------------------------------
# Model kinds: a single-modality VAE works where it makes sense, else a TypeError naming the kinds
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(tiny_modality("a", 3, 2), Prior(2))


@pytest.mark.parametrize("call", [
    lambda v, b, y: ev.coherence(v, b, clfs(), labels=y),
    lambda v, b, y: ev.cross_coherence(v, b, clfs(), labels=y),
    lambda v, b, y: ev.joint_coherence(v, clfs(), 10),
    lambda v, b, y: ev.cub_coherence(v, b, None, None),
    lambda v, b, y: ev.evaluate_mnist_svhn(v, b, progress=False),
    lambda v, b, y: ev.evaluate_cub(v, b, b, progress=False),
], ids=["coherence", "cross_coherence", "joint_coherence", "cub_coherence", "evaluate_mnist_svhn", "evaluate_cub"])
def test_multimodal_metrics_refuse_a_vae_by_kind(call, vae):
    b, y = labelled()
    with pytest.raises(TypeError, match=r"takes a MultimodalVAE \(MMVAE or MVAE\), got a single-modality VAE"):
        call(vae, {"a": b["a"]}, y)


def test_latent_metrics_work_on_a_vae(vae):
    x, y = labelled(40)
    x = x["a"]
    kl = ev.kl_per_dimension(vae, x)
    assert set(kl["term"]) == {"KL(q(z|a) || p(z))"} and (kl["kl"] >= 0).all()
    tr = ev.latent_traversals(vae, x[:3], steps=5)               # a bare tensor is the VAE's one modality
    assert tr["a"]["a"].shape == (3, 2, 5, 3)
    emb = ev.latent_embedding(vae, x[:4], K=3)
    assert set(emb["source"]) == {"q(z|a)", "p(z)"} and len(emb) == 2 * 3 * 4
    feats, labels = ev.posterior_features(vae, x, labels=y)
    assert feats["a"].shape == (40, 2) and (labels == y.numpy()).all()


def test_non_models_are_refused_by_kind(tiny_mm):
    with pytest.raises(TypeError, match=r"takes a VAE or a MultimodalVAE \(MMVAE or MVAE\), got a Linear"):
        ev.kl_per_dimension(nn.Linear(3, 2), tiny_batch(4))
    poe = make_tiny_mm("poe", "normal")
    with pytest.raises(TypeError, match="mixture-of-experts posterior"):
        ev.gradient_snr(poe, tiny_batch(4), Ks=(2,), n_draws=2)


# ---------------------------------------------------------------------------------------------
# Coherence: one classifier call per target per batch, progress bars, torch's closed-form KLs
# ---------------------------------------------------------------------------------------------
def test_cross_coherence_classifies_all_sources_in_one_call_per_target(tiny_mm):
    b, y = labelled(300)
    c = clfs()
    ev.cross_coherence(tiny_mm, b, c, labels=y, batch_size=100)
    # 3 batches; each target's classifier sees both sources' generations (2 x 100) at once
    assert c["a"].calls == [200, 200, 200] and c["b"].calls == [200, 200, 200]
    c = clfs()
    ev.joint_coherence(tiny_mm, c, 250, batch_size=100)
    assert c["a"].calls == [100, 100, 50]


def test_joint_coherence_of_given_latents_is_the_agreement_of_their_decoded_digits(tiny_mm):
    from mmvae_lite.evaluation.latent import decoded_mean
    L = tiny_mm.prior().mean.shape[-1]
    z = torch.randn(70, L, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        digits = [decoded_mean(tiny_mm, t, z)[..., :2].argmax(-1) for t in ("a", "b")]  # Readout's argmax
    want = float((digits[0] == digits[1]).float().mean())
    c = clfs()
    assert ev.joint_coherence(tiny_mm, c, n=5, latents=z, batch_size=32) == pytest.approx(want)
    assert c["a"].calls == [32, 32, 6]                            # all 70 latents, n ignored
    assert 0 < want < 1                                           # the check compares something
    with pytest.raises(ValueError, match=rf"latents must be a tensor of shape \(N, {L}\)"):
        ev.joint_coherence(tiny_mm, clfs(), latents=z[:, :-1])


def test_coherence_progress_bars(tiny_mm, capsys):
    b, y = labelled(50)
    quiet = ev.coherence(tiny_mm, b, clfs(), labels=y, n_joint=40)
    assert capsys.readouterr().err == ""
    loud = ev.coherence(tiny_mm, b, clfs(), labels=y, n_joint=40, progress=True)
    err = capsys.readouterr().err
    assert "joint coherence" in err and "cross coherence" in err
    assert loud == quiet                                          # the bar changes nothing


@pytest.mark.parametrize("family", ["laplace", "normal"])
def test_kl_per_dimension_is_the_closed_form(family):
    m = make_tiny_mm("moe", family)
    b = tiny_batch(16)
    kl = ev.kl_per_dimension(m, b, wide=True)
    with torch.no_grad():
        q = m.encode(b)["a"]
        expected = D.kl_divergence(q, m.prior()).mean(0).double().numpy()
    np.testing.assert_allclose(kl["KL(q(z|a) || p(z))"].to_numpy(), expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Output names no absolute path of the machine
# ---------------------------------------------------------------------------------------------
def test_classifier_messages_name_paths_from_the_data_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MMVAE_LITE_CACHE", raising=False)
    root = tmp_path / "mydata"
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(10, (64,), generator=g)
    data = {"mnist": x, "label": y}
    ev.get_digit_classifier("mnist", root, source="synthetic", train=data, test=data, epochs=1, progress=False)
    ev.get_digit_classifier("mnist", root, source="synthetic")
    (root / "derived" / "classifiers" / "mnist_synthetic.pt").write_bytes(b"not a checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev.get_digit_classifier("mnist", root, source="synthetic", train=data, test=data, epochs=1, progress=False)
    out = capsys.readouterr().out + "".join(str(w.message) for w in caught)
    assert out.count("mydata/derived/classifiers/mnist_synthetic.pt") == 4, out
    assert str(tmp_path) not in out and not re.search(r"(^|\s)/\S*mnist_synthetic", out), out


# ---------------------------------------------------------------------------------------------
# Data types and DataLoader-style batches
# ---------------------------------------------------------------------------------------------
def test_digit_classifier_reads_8bit_and_float64_images():
    torch.manual_seed(0)
    clf = ev.DigitClassifier(1, 28).eval()
    x8 = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    x = x8.float() / 255
    expected = ev.predict_digits(clf, x)
    assert torch.equal(ev.predict_digits(clf, x8), expected)
    assert torch.equal(ev.predict_digits(clf, x.double()), expected)


def test_image_label_pairs_as_a_dataloader_yields_them():
    torch.manual_seed(0)
    clf = ev.DigitClassifier(1, 28).eval()
    x, y = torch.rand(10, 1, 28, 28), torch.randint(10, (10,))
    pairs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    assert ev.classifier_accuracy(clf, pairs, "mnist") == ev.classifier_accuracy(clf, {"mnist": x}, "mnist", labels=y)


def test_labels_length_is_checked_against_examples_not_batches(tiny_mm):
    b, y = labelled(12)
    batches = [{k: v[i:i + 4] for k, v in b.items()} for i in range(0, 12, 4)]   # 3 batches of 4
    kw = dict(labels=y, mean_latent=True)
    assert ev.cross_coherence(tiny_mm, batches, clfs(), **kw) == ev.cross_coherence(tiny_mm, b, clfs(), **kw)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(b["a"], y), batch_size=5)
    assert ev.examples.num_examples(loader) == 12
