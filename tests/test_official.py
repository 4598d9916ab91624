"""Loading the authors' checkpoints: a state_dict generated in their key layout loads and computes the same."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvae_lite import build_model, get_config
from mmvae_lite.official import convert_official_state_dict, load_official


class _AuthorsLayoutMNISTSVHN(nn.Module):
    """Modules named and nested as iffsid/mmvae's MNIST_SVHN (weights random): only the layout matters."""

    def __init__(self, L: int = 20) -> None:
        super().__init__()
        self._pz_params = nn.ParameterList([nn.Parameter(torch.zeros(1, L)), nn.Parameter(torch.randn(1, L))])
        mnist = nn.Module()
        mnist._pz_params = nn.ParameterList([nn.Parameter(torch.zeros(1, L)), nn.Parameter(torch.zeros(1, L))])
        mnist.enc = nn.Module()
        mnist.enc.enc = nn.Sequential(nn.Sequential(nn.Linear(784, 400), nn.ReLU()))
        mnist.enc.fc21, mnist.enc.fc22 = nn.Linear(400, L), nn.Linear(400, L)
        mnist.dec = nn.Module()
        mnist.dec.dec = nn.Sequential(nn.Sequential(nn.Linear(L, 400), nn.ReLU()))
        mnist.dec.fc3 = nn.Linear(400, 784)
        svhn = nn.Module()
        svhn._pz_params = nn.ParameterList([nn.Parameter(torch.zeros(1, L)), nn.Parameter(torch.zeros(1, L))])
        svhn.enc = nn.Module()
        svhn.enc.enc = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU())
        svhn.enc.c1, svhn.enc.c2 = nn.Conv2d(128, L, 4, 1, 0), nn.Conv2d(128, L, 4, 1, 0)
        svhn.dec = nn.Module()
        svhn.dec.dec = nn.Sequential(nn.ConvTranspose2d(L, 128, 4, 1, 0), nn.ReLU(), nn.ConvTranspose2d(128, 64, 4, 2, 1),
                                     nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Sigmoid())
        self.vaes = nn.ModuleList([mnist, svhn])

    # their forward computations, written from the paper's definitions
    def mnist_posterior(self, x):
        e = self.vaes[0].enc.enc(x.view(x.shape[0], -1))
        lv = self.vaes[0].enc.fc22(e)
        return self.vaes[0].enc.fc21(e), F.softmax(lv, -1) * lv.size(-1) + 1e-6

    def svhn_posterior(self, x):
        e = self.vaes[1].enc.enc(x)
        lv = self.vaes[1].enc.c2(e).flatten(1)
        return self.vaes[1].enc.c1(e).flatten(1), F.softmax(lv, -1) * lv.size(-1) + 1e-6

    def svhn_mean(self, z):
        return self.vaes[1].dec.dec(z[:, :, None, None])


def test_authors_mnist_svhn_checkpoint_loads_and_computes_the_same(tmp_path):
    torch.manual_seed(0)
    theirs = _AuthorsLayoutMNISTSVHN()
    torch.save(theirs.state_dict(), tmp_path / "model.rar")
    ours = load_official(tmp_path / "model.rar", "mnist-svhn")
    xm, xs, z = torch.rand(5, 1, 28, 28), torch.rand(5, 3, 32, 32), torch.randn(5, 20)
    with torch.no_grad():
        q = ours.encode({"mnist": xm, "svhn": xs})
        for name, (mu, sc) in (("mnist", theirs.mnist_posterior(xm)), ("svhn", theirs.svhn_posterior(xs))):
            torch.testing.assert_close(q[name].loc, mu)
            torch.testing.assert_close(q[name].scale, sc)
        torch.testing.assert_close(ours.decode(z)["svhn"], theirs.svhn_mean(z))
        expected_prior = F.softmax(theirs._pz_params[1], -1).flatten() * 20
        torch.testing.assert_close(ours.prior().scale, expected_prior)


def test_wrong_layout_is_rejected_with_names():
    ours = build_model(get_config("mnist-svhn", "paper")).state_dict()
    with pytest.raises(KeyError, match="not an authors' mnist-svhn checkpoint"):
        convert_official_state_dict(ours, "mnist-svhn")
    sd = _AuthorsLayoutMNISTSVHN().state_dict()
    sd["vaes.2.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="vaes.2.extra.weight"):
        convert_official_state_dict(sd, "mnist-svhn")
    with pytest.raises(ValueError, match="no official checkpoint layout"):
        convert_official_state_dict(sd, "cub-images")


def _authors_cub_ft_state_dict(L=64, V=1590):
    """Synthetic tensors in the key layout and shapes of iffsid/mmvae's CUB_Image_Sentence_ft."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    sd = {"_pz_params.0": torch.zeros(1, L), "_pz_params.1": r(1, L),
          "vaes.0._pz_params.0": torch.zeros(1, L), "vaes.0._pz_params.1": torch.zeros(1, L),
          "vaes.1._pz_params.0": torch.zeros(1, L), "vaes.1._pz_params.1": torch.zeros(1, L)}
    for i, (a, b) in enumerate([(2048, 1024), (1024, 512), (512, 256)]):
        sd[f"vaes.0.enc.layer{i}.0.weight"], sd[f"vaes.0.enc.layer{i}.0.bias"] = r(b, a), r(b)
    for k in ("fc21", "fc22"):
        sd[f"vaes.0.enc.{k}.weight"], sd[f"vaes.0.enc.{k}.bias"] = r(L, 256), r(L)
    for name, (a, b) in zip(["out_t", "layer1_t", "layer2_t"], [(L, 256), (256, 512), (512, 1024)]):
        sd[f"vaes.0.dec.dec.{name}.0.weight"], sd[f"vaes.0.dec.dec.{name}.0.bias"] = r(b, a), r(b)
    sd["vaes.0.dec.fc31.weight"], sd["vaes.0.dec.fc31.bias"] = r(2048, 1024), r(2048)
    sd["vaes.1.enc.embedding.weight"] = r(V, 128)
    enc = [(1, 32, (4, 4)), (32, 64, (4, 4)), (64, 128, (4, 4)), (128, 256, (1, 4)), (256, 512, (1, 4))]
    for (cin, cout, k), ci in zip(enc, [0, 3, 6, 9, 12]):
        sd[f"vaes.1.enc.enc.{ci}.weight"], sd[f"vaes.1.enc.enc.{ci}.bias"] = r(cout, cin, *k), r(cout)
        bn = f"vaes.1.enc.enc.{ci + 1}"
        sd[f"{bn}.weight"], sd[f"{bn}.bias"] = 1 + r(cout), r(cout)
        sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"] = r(cout), 1 + r(cout).abs()
        sd[f"{bn}.num_batches_tracked"] = torch.tensor(7)
    for k in ("c1", "c2"):
        sd[f"vaes.1.enc.{k}.weight"], sd[f"vaes.1.enc.{k}.bias"] = r(L, 512, 4, 4), r(L)
    dec = [(L, 512, (4, 4)), (512, 256, (1, 4)), (256, 128, (1, 4)), (128, 64, (4, 4)), (64, 32, (4, 4)), (32, 1, (4, 4))]
    for j, ((cin, cout, k), ci) in enumerate(zip(dec, [0, 3, 6, 9, 12, 15])):
        sd[f"vaes.1.dec.dec.{ci}.weight"], sd[f"vaes.1.dec.dec.{ci}.bias"] = r(cin, cout, *k), r(cout)
        if j < 5:
            bn = f"vaes.1.dec.dec.{ci + 1}"
            sd[f"{bn}.weight"], sd[f"{bn}.bias"] = 1 + r(cout), r(cout)
            sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"] = r(cout), 1 + r(cout).abs()
            sd[f"{bn}.num_batches_tracked"] = torch.tensor(7)
    sd["vaes.1.dec.toVocabSize.weight"] = sd["vaes.1.enc.embedding.weight"]
    sd["vaes.1.dec.toVocabSize.bias"] = r(V)
    return sd


def test_authors_cub_feature_checkpoint_loads():
    sd = _authors_cub_ft_state_dict(V=300)
    model = load_official(sd, "cub-features")
    assert model.modalities["sentence"].encoder.embedding.num_embeddings == 300
    torch.testing.assert_close(model.modalities["image"].decoder.net[6].bias, sd["vaes.0.dec.fc31.bias"])
    torch.testing.assert_close(model.prior().scale, F.softplus(sd["_pz_params.1"].flatten()) + 1e-6)
    s = model.modalities["sentence"]
    assert s.decoder.to_vocab.weight is s.encoder.embedding.weight
    out = model.cross_reconstruct({"image": torch.randn(2, 2048), "sentence": torch.randint(300, (2, 32))})
    assert out["image"]["sentence"].shape == (1, 2, 32)
