"""Bad input sweep (issue 16): each misuse gives an error of a stated type whose message names the problem.

Checkpoints (unreadable, foreign, of another model, bare weights, old format), Trainer arguments,
empty and non-finite data, DataLoader batches, dtypes and shapes, the authors' loader and devices.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from conftest import make_tiny_mm, tiny_modality
from mmvae_lite import objectives as O
from mmvae_lite.checkpoint import CheckpointError, load_weights, read_checkpoint
from mmvae_lite.distributions import Prior
from mmvae_lite.models import VAE
from mmvae_lite.official import load_official
from mmvae_lite.training import NonFiniteError, Trainer, model_batch, select_device


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, 3, generator=g), "b": torch.randn(n, 5, generator=g)}


def _trainer(joint="moe", family="laplace", seed=0, config=None, **kw):
    objective = O.mvae_elbo if joint == "poe" else O.m_iwae_stratified
    kw = {"K": 2, "batch_size": 8, "device": "cpu", "progress": False, "verbose": False, **kw}
    return Trainer(make_tiny_mm(joint, family, seed=seed), objective, config=config, **kw)


@pytest.fixture
def saved(tmp_path):
    """A trainer after one epoch, and its checkpoint."""
    tr = _trainer(config={"experiment": "toy", "model": "mmvae"})
    tr.fit(_data(), 1)
    return tr, tr.save(tmp_path / "ckpt.pt")


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- unreadable files ----------------------------------------------------------------------------
@pytest.mark.parametrize("content, says", [
    ("truncated", "truncated or corrupt"),
    (os.urandom(300), "not a readable checkpoint"),
    (b"", "empty"),
    (b"hello, I am a text file\n", "not a readable checkpoint"),
])
def test_unreadable_checkpoint_names_the_file(saved, tmp_path, content, says):
    _, path = saved
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:2000] if content == "truncated" else content)
    tr = _trainer(seed=4)
    before = _params(tr.model)
    with pytest.raises(CheckpointError, match=says) as e:
        tr.load(bad)
    assert str(bad) in str(e.value) and "weights_only=False" not in str(e.value)
    assert _unchanged(tr.model, before) and tr.epoch == 0


def test_missing_file_and_directory(tmp_path):
    tr = _trainer()
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        tr.load(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        tr.load(tmp_path)


def test_pickled_python_objects_and_non_dicts_are_refused(tmp_path):
    import numpy as np
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not an mmvae_lite trainer checkpoint"):
        _trainer().load(tmp_path / "list.pt")
    torch.save({"format": "something/else", "x": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format 'something/else'"):
        _trainer().load(tmp_path / "other.pt")
    torch.save({"x": np.zeros(3)}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match="Python objects"):
        _trainer().load(tmp_path / "obj.pt")


# -- checkpoints that do not fit -----------------------------------------------------------------
def test_checkpoint_of_another_experiment_is_refused(saved):
    _, path = saved
    tr = _trainer(seed=3, config={"experiment": "other", "model": "mmvae"})
    before = _params(tr.model)
    with pytest.raises(CheckpointError, match="experiment: the checkpoint is of 'toy', this trainer's config of 'other'"):
        tr.load(path)
    assert _unchanged(tr.model, before)


def test_mmvae_checkpoint_into_an_mvae_trainer_names_both(tmp_path):
    mm = _trainer("moe", "normal")
    path = mm.save(tmp_path / "mmvae.pt")
    mv = _trainer("poe", "normal", seed=2)
    before = _params(mv.model)
    with pytest.raises(CheckpointError, match=r"holds an MMVAE \('mmvae'\), this trainer's model is an MVAE \('mvae'\)"):
        mv.load(path)
    assert _unchanged(mv.model, before)


def test_shape_mismatch_names_the_parameters(saved):
    _, path = saved
    from mmvae_lite.models import MultimodalVAE
    torch.manual_seed(0)
    model = MultimodalVAE([tiny_modality("a", 3, 2), tiny_modality("b", 6, 2)], Prior(2, "laplace"))
    tr = Trainer(model, O.m_iwae_stratified, K=2, device="cpu", progress=False, verbose=False)
    before = _params(model)
    with pytest.raises(CheckpointError, match=r"modalities.b.decoder.net.2.weight: saved \(5, 8\), model \(6, 8\)"):
        tr.load(path)
    assert _unchanged(model, before)


def test_optimizer_mismatch_is_refused_before_the_model_is_touched(saved, tmp_path):
    _, path = saved
    state = torch.load(path, weights_only=True)
    state["optimizer"]["param_groups"][0]["params"] = state["optimizer"]["param_groups"][0]["params"][:-1]
    torch.save(state, tmp_path / "bad_opt.pt")
    tr = _trainer(seed=7)
    before = _params(tr.model)
    with pytest.raises(CheckpointError, match="optimiser group 0 holds 16 parameters, this model trains 17"):
        tr.load(tmp_path / "bad_opt.pt")
    assert _unchanged(tr.model, before) and tr.epoch == 0
    state = torch.load(path, weights_only=True)
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(2, 2)
    torch.save(state, tmp_path / "bad_moment.pt")
    with pytest.raises(CheckpointError, match=r"optimiser 'exp_avg' of parameter 0: saved \(2, 2\)"):
        tr.load(tmp_path / "bad_moment.pt")
    assert _unchanged(tr.model, before)


def test_bare_weights_point_to_load_weights_which_exists(saved, tmp_path):
    tr, _ = saved
    torch.save(tr.model.state_dict(), tmp_path / "weights.pt")
    other = _trainer(seed=9)
    with pytest.raises(CheckpointError, match=r"bare model weights .* mmvae_lite\.checkpoint\.load_weights\(model, path\)"):
        other.load(tmp_path / "weights.pt")
    load_weights(other.model, tmp_path / "weights.pt")
    assert _unchanged(other.model, tr.model.state_dict())
    wrong = make_tiny_mm("moe")
    wrong.modalities["a"].decoder.net[2] = torch.nn.Linear(8, 4)
    with pytest.raises(CheckpointError, match=r"shapes differ: modalities.a.decoder.net.2.weight"):
        load_weights(wrong, tmp_path / "weights.pt")


def test_version_0_checkpoints_load_with_a_note(saved, tmp_path, capsys):
    """The unversioned format written before (format 'mmvae_lite/1', no version) still resumes exactly."""
    tr, path = saved
    state = torch.load(path, weights_only=True)
    for k in ("version", "model_info", "trainer"):
        del state[k]
    state["format"] = "mmvae_lite/1"
    torch.save(state, tmp_path / "v0.pt")
    assert read_checkpoint(tmp_path / "v0.pt")["version"] == 0
    other = _trainer(seed=11, verbose=True, config={"experiment": "toy", "model": "mmvae"})
    other.load(tmp_path / "v0.pt")
    assert "version-0 checkpoint" in capsys.readouterr().out
    assert other.epoch == 1 and _unchanged(other.model, tr.model.state_dict())
    mvae = _trainer("poe", "laplace", config={"experiment": "toy", "model": "mvae"})
    with pytest.raises(CheckpointError, match="holds an MMVAE"):     # the kind comes from the saved config
        mvae.load(tmp_path / "v0.pt")


def test_newer_version_is_refused(saved, tmp_path):
    _, path = saved
    state = torch.load(path, weights_only=True)
    state["version"] = 99
    torch.save(state, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="version-99 checkpoint, written by a newer mmvae_lite"):
        _trainer().load(tmp_path / "v99.pt")


def test_changed_training_settings_warn(saved):
    _, path = saved
    tr = _trainer(K=3, config={"experiment": "toy", "model": "mmvae"})
    with pytest.warns(UserWarning, match=r"K: saved 2, now 3"):
        tr.load(path)


# -- Trainer arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw, name", [
    ({"K": 0}, "K"), ({"K": -1}, "K"), ({"K": 2.5}, "K"), ({"K": True}, "K"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": -4}, "batch_size"),
    ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"eval_K": 0}, "eval_K"), ({"check_every": 0}, "check_every"),
])
def test_bad_trainer_arguments_name_the_argument(kw, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        _trainer(**kw)


def test_objective_must_be_a_function():
    with pytest.raises(TypeError, match=r"objective must be a function .* get_objective\('elbo'\)"):
        Trainer(make_tiny_mm(), "elbo", device="cpu")


@pytest.mark.parametrize("epochs", [0, -2, 1.5, None])
def test_bad_epochs(epochs):
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        _trainer().fit(_data(), epochs)


def test_epochs_below_those_done_is_refused():
    tr = _trainer()
    tr.fit(_data(), 2)
    with pytest.raises(ValueError, match="epochs=1 is fewer than the 2 epochs"):
        tr.fit(_data(), 1)


@pytest.mark.parametrize("empty", [
    {"a": torch.zeros(0, 3), "b": torch.zeros(0, 5)}, [], DataLoader(TensorDataset(torch.zeros(0, 3), torch.zeros(0, 5))),
])
def test_empty_training_data(empty):
    tr = _trainer()
    with pytest.raises(ValueError, match="no examples"):
        tr.fit(empty, 1)
    with pytest.raises(ValueError, match="no examples"):
        tr.evaluate(empty)
    assert tr.epoch == 0 and len(tr.history) == 0


def test_generator_that_yields_nothing_is_refused_before_a_checkpoint(tmp_path):
    tr = _trainer(checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="yielded no batches"):
        tr.fit(iter([]), 1)
    assert not (tmp_path / "c.pt").exists()


def test_non_finite_test_value_is_not_recorded_nor_checkpointed(tmp_path):
    tr = _trainer(checkpoint=tmp_path / "c.pt")
    tr.fit(_data(), 1, test=_data(8, seed=1))
    good = (tmp_path / "c.pt").read_bytes()
    tr.eval_objective = lambda model, batch, K: O.m_iwae_stratified(model, batch, K) * float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite test objective \(nan\) after epoch 2.*Not recorded"):
        tr.fit(_data(), 2, test=_data(8, seed=1))
    assert len(tr.history) == 1 and tr.epoch == 1
    assert (tmp_path / "c.pt").read_bytes() == good


# -- DataLoader batches --------------------------------------------------------------------------
class _DictItems(Dataset):
    """Items as dicts {modality: tensor} with the label under the reserved key."""

    def __init__(self, data, labels):
        self.data, self.labels = data, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {**{k: v[i] for k, v in self.data.items()}, "label": self.labels[i]}


class _PairItems(_DictItems):
    """Items as ((a, label), (b, label)), as the MNIST-SVHN dataset returns them."""

    def __getitem__(self, i):
        return tuple((v[i], self.labels[i]) for v in self.data.values())


def _loaders(data, labels):
    return {
        "tensors": DataLoader(TensorDataset(data["a"], data["b"]), batch_size=8),
        "tensors+labels": DataLoader(TensorDataset(data["a"], data["b"], labels), batch_size=8),
        "dict items": DataLoader(_DictItems(data, labels), batch_size=8),
        "pair items": DataLoader(_PairItems(data, labels), batch_size=8),
    }


def test_dataloaders_with_default_collate_give_the_same_bound():
    data, labels = _data(), torch.arange(32) % 10
    tr = _trainer()
    loaders = _loaders(data, labels)
    torch.manual_seed(0)            # (a DataLoader draws its base seed from the global RNG: compare loaders)
    reference = tr.evaluate(loaders.pop("tensors"), K=4)
    for name, loader in loaders.items():
        torch.manual_seed(0)
        assert tr.evaluate(loader, K=4) == pytest.approx(reference, rel=1e-6), name
    tr.fit(_loaders(data, labels)["pair items"], 2)
    assert len(tr.history) == 2 and all(v == v for v in tr.history.train)


def test_single_modality_dataloader_of_images_and_labels(tiny_vae):
    x, y = torch.randn(16, 3), torch.arange(16) % 10
    tr = Trainer(tiny_vae, O.elbo, batch_size=4, device="cpu", progress=False, verbose=False)
    tr.fit(DataLoader(TensorDataset(x, y), batch_size=4), 1)
    assert model_batch([x, y], tiny_vae) is x
    assert model_batch({"x": x, "label": y}, tiny_vae) == {"x": x}


def test_batches_that_match_no_modality_layout():
    tr = _trainer()
    with pytest.raises(TypeError, match=r"a batch of 3 entries .* for a model of 2 modalities \['a', 'b'\]"):
        tr.train_step([torch.zeros(4, 3), torch.zeros(4, 5), torch.zeros(4, 5)])
    with pytest.raises(TypeError, match="a batch must be a tensor, a dict"):
        tr.train_step("not a batch")


# -- dtypes and shapes ---------------------------------------------------------------------------
def test_uint8_and_float64_images_name_the_modality():
    from mmvae_lite import build_model, get_config
    model = build_model(get_config("mnist-svhn", "quick"))
    good = {"mnist": torch.rand(2, 1, 28, 28), "svhn": torch.rand(2, 3, 32, 32)}
    with pytest.raises(TypeError, match=r"modality 'mnist': expected torch.float32 data, got torch.uint8; .*x.float\(\) / 255"):
        O.m_elbo_is(model, {**good, "mnist": (good["mnist"] * 255).to(torch.uint8)}, 1)
    with pytest.raises(TypeError, match=r"modality 'svhn': expected torch.float32 data .* got torch.float64"):
        model.encode({"svhn": good["svhn"].double()})
    with pytest.raises(ValueError, match=r"modality 'svhn': expected shape \(B, 3, 32, 32\), got \(2, 1, 32, 32\)"):
        model.encode({"svhn": torch.rand(2, 1, 32, 32)})
    enc = model.modalities["mnist"].encoder
    with pytest.raises(TypeError, match="MNISTEncoder: expected torch.float32 input .* got torch.uint8"):
        enc(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"MNISTEncoder: expected input of shape \(\*batch, 1, 28, 28\), got \(2, 784\)"):
        enc(torch.zeros(2, 784))
    with pytest.raises(TypeError, match="modality 'mnist'"):
        model.modalities["mnist"].encode(torch.zeros(2, 1, 28, 28, dtype=torch.float64))
    assert torch.isfinite(O.m_elbo_is(model, good, 1))      # float32 in [0, 1] still works


def test_float_token_ids_are_refused():
    from mmvae_lite import build_model, get_config
    model = build_model(get_config("cub-features", "quick", vocab_size=50))
    with pytest.raises(TypeError, match="modality 'sentence': expected integer token ids"):
        model.encode({"sentence": torch.zeros(2, 32)})


# -- the authors' loader and devices -------------------------------------------------------------
def test_load_official_on_files_that_are_not_the_authors(saved, tmp_path):
    _, ckpt = saved
    rand = tmp_path / "random.bin"
    rand.write_bytes(os.urandom(500))
    with pytest.raises(CheckpointError, match="random.bin is not a readable authors' checkpoint") as e:
        load_official(rand)
    assert "weights_only=False" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"is an mmvae_lite trainer checkpoint, .* Trainer.load"):
        load_official(ckpt)
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"w.pt: not an authors' mnist-svhn checkpoint: missing"):
        load_official(tmp_path / "w.pt")


def test_bad_devices_are_one_clear_error():
    with pytest.raises(ValueError, match="device 'tpu' is not a device torch knows"):
        select_device("tpu")
    with pytest.raises(ValueError, match="device 'tpu'"):
        _trainer(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': this machine has no usable CUDA GPU"):
            select_device("cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            select_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ValueError, match="type 'meta' is not supported"):
        select_device("meta")


def test_vae_rejects_a_multimodal_checkpoint(saved, tiny_vae):
    _, path = saved
    tr = Trainer(tiny_vae, O.elbo, device="cpu", progress=False, verbose=False)
    with pytest.raises(CheckpointError, match=r"holds an MMVAE .* this trainer's model is a VAE"):
        tr.load(path)


def test_single_modality_trainer_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    vae = VAE(tiny_modality("x", 3, 2), Prior(2, "laplace"))
    tr = Trainer(vae, O.elbo, batch_size=4, device="cpu", progress=False, verbose=False)
    tr.fit(torch.randn(8, 3), 1)
    state = read_checkpoint(tr.save(tmp_path / "v.pt"))
    assert state["model_info"] == {"class": "VAE", "kind": "vae", "modalities": ["x"], "event_shapes": {"x": [3]},
                                   "latent_dim": 2, "family": "laplace"}


# -- found by the fresh sweep --------------------------------------------------------------------
def test_sweep_findings(tmp_path):
    tr = _trainer()
    with pytest.raises(ValueError, match=r"different lengths \{'a': 8, 'b': 12\}"):
        tr.fit({"a": torch.randn(8, 3), "b": torch.randn(12, 5)}, 1)
    with pytest.raises(ValueError, match="an empty batch"):
        tr.train_step({"a": torch.zeros(0, 3), "b": torch.zeros(0, 5)})
    with pytest.raises(TypeError, match="must return a 0-d tensor .* got float"):
        Trainer(make_tiny_mm(), lambda m, b, K: 1.0, device="cpu", progress=False, verbose=False).train_step(_data(4))
    with pytest.raises(ValueError, match="is a directory"):
        _trainer(checkpoint=tmp_path)
    with pytest.raises(ValueError, match="snapshots=True keeps copies of the checkpoint: give checkpoint="):
        _trainer(snapshots=True)
    with pytest.raises(TypeError, match="checkpoint path must be a str or pathlib.Path, got NoneType"):
        tr.load(None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="a parent of it is a file"):
        tr.save(tmp_path / "file" / "c.pt")
    assert list(tr.history.to_frame().columns) == ["train", "test", "seconds"]     # empty history: empty frame
    # one modality and labels given to a two-modality model: the message counts them
    with pytest.raises(TypeError, match=r"a batch of 2 entries \(Tensor\(4, 3\), Tensor\(4,\)\) for a model of 2"):
        tr.train_step([torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)])


def test_encoders_that_do_not_declare_float_input_take_any_dtype():
    """A user's token encoder (an Encoder subclass) is not refused integer input by the base class."""
    from mmvae_lite.networks import Encoder

    class Tokens(Encoder):
        event_shape = (4,)

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def _body(self, x):
            return self.emb(x).mean(1).view(-1, 2, 2)

    loc, _ = Tokens()(torch.randint(10, (3, 4)))
    assert loc.shape == (3, 2)
    with pytest.raises(ValueError, match=r"Tokens: expected input of shape \(\*batch, 4\)"):
        Tokens()(torch.randint(10, (3, 5)))


def test_a_partial_objective_is_named_the_same_in_every_process():
    """Resuming compares the saved training settings; a partial objective (DReG) must not differ from
    itself because its repr carries a memory address (checkpoints written before carry one)."""
    from mmvae_lite.checkpoint import training_differences
    from mmvae_lite.objectives import get_objective
    tr = Trainer(make_tiny_mm(), get_objective("m_dreg_stratified", "dreg"), device="cpu", progress=False,
                 verbose=False)
    now = tr.settings()
    assert now["objective"] == "m_dreg_stratified(gradient='dreg')"
    legacy = dict(now, objective="functools.partial(<function m_dreg_stratified at 0x7f22cac46160>, gradient='dreg')")
    assert training_differences({"trainer": legacy}, now) == []
    other = dict(now, objective="functools.partial(<function m_dreg_stratified at 0x7f22cac46160>, gradient='stl')")
    assert training_differences({"trainer": other}, now) == [
        f"objective: saved {other['objective']!r}, now \"m_dreg_stratified(gradient='dreg')\""]
