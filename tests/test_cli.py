"""The command line: a tiny real run writes its history and metrics; bad input exits 2 with a message."""
from __future__ import annotations

import json

import pytest
import torch

from mmvae_lite.cli import main
from test_data import SHARED, needs_real_mnist


@needs_real_mnist
def test_train_writes_history_metrics_and_results(tmp_path, capsys):
    argv = ["train", "mnist", "--preset", "quick", "--epochs", "1", "--train-subset", "256", "--test-subset", "64",
            "--data-root", str(SHARED), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--no-progress"]
    assert main(argv) == 0
    run = tmp_path / "runs" / "mnist-vae-quick-n256-t64"
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1 and history[0]["train"] < 0
    record = json.loads((tmp_path / "results" / "mnist-vae-quick-n256-t64" / "metrics.json").read_text())
    assert record["command"] == "python -m mmvae_lite " + " ".join(argv)
    assert record["config"]["train_subset"] == 256 and record["train_pairs"] == 256
    assert record["data"] == "real" or "real" in json.dumps(record["data"])
    assert set(record["seconds"]) == {"train", "evaluate"}
    (bound,) = record["metrics"]["likelihoods"].values()
    assert bound < 0
    assert "metrics in" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "mnist", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "mnist-svhn", "--model", "vae"], "needs a single-modality experiment"),
    (["train", "mnist", "--K", "0", "--no-eval"], "K must be >= 1"),
    (["train", "mnist", "--device", "tpu", "--no-eval"], "device 'tpu' is not a device torch knows"),
    (["train", "mnist", "--device", "cuda:99", "--no-eval"], "device 'cuda:99'"),
    (["train", "mnist", "--resume", "--overwrite", "--no-eval"], "give one of them"),
    (["train", "cub-features", "--llik-scaling", "image"], "give modality=weight with a positive weight"),
    (["train", "cub-features", "--llik-scaling", "image=-2"], "give modality=weight with a positive weight"),
    (["train", "cub-features", "--llik-scaling", "imgae=0.01"], "its modalities are ['image', 'sentence']"),
])
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    assert e.value.code not in (0, None)
    err = capsys.readouterr()
    assert message in err.err + err.out + str(e.value.code)


def test_tables_flatten_to_json_values():
    import math

    import pandas as pd

    from mmvae_lite.evaluation.reports import flat_table as _flat
    one = pd.DataFrame([{"joint": 0.25, "mnist->svhn": float("nan")}], index=["model"])
    assert _flat(one) == {"joint": 0.25, "mnist->svhn": None}
    clfs = pd.DataFrame({"source": ["real", "standin"], "test_accuracy": [0.987, None]}, index=["mnist", "svhn"])
    flat = _flat(clfs)
    assert flat == {"mnist/source": "real", "mnist/test_accuracy": 0.987, "svhn/source": "standin",
                    "svhn/test_accuracy": None}
    json.dumps(flat)
    assert not any(isinstance(v, float) and math.isnan(v) for v in flat.values())


def test_run_names_separate_modelling_choices():
    from mmvae_lite import get_config
    from mmvae_lite.cli import run_name
    assert run_name(get_config("mnist-svhn", "paper")) == "mnist-svhn-mmvae-paper"
    assert run_name(get_config("mnist-svhn", "paper", gradient="stl")) == "mnist-svhn-mmvae-paper-stl"
    assert run_name(get_config("mnist-svhn", "paper", model="mvae")) == "mnist-svhn-mvae-paper"
    assert (run_name(get_config("mnist-svhn", "quick", model="mvae", scales="softplus", K=3))
            == "mnist-svhn-mvae-quick-K3-softplus")
    # what changes the data or the optimisation gets a tag too; epochs do not (--resume --epochs continues)
    assert (run_name(get_config("mnist", "quick", seed=2, batch_size=64, train_subset=None, test_subset=500))
            == "mnist-vae-quick-b64-seed2-nall-t500")
    assert run_name(get_config("mnist-svhn", "reference", epochs=40)) == "mnist-svhn-mmvae-reference"
    # a likelihood weight other than the preset's is a modelling choice: its own folder
    assert (run_name(get_config("cub-features", "reference", llik_scaling={"image": 32 / 2048}))
            == "cub-features-mmvae-reference-ll-image0.015625")
    assert run_name(get_config("cub-features", "reference", llik_scaling={})) == "cub-features-mmvae-reference-ll-none"
    assert run_name(get_config("mnist-svhn", "reference", llik_scaling="auto")) == "mnist-svhn-mmvae-reference"


def test_llik_scaling_flag_reaches_the_model():
    """--llik-scaling sets the weights the model multiplies each log p(x_m | z) by; 'none' is all ones,
    'auto' the authors' size ratio, and an unnamed modality keeps weight 1."""
    from mmvae_lite import build_model
    from mmvae_lite.cli import _train_parser, config_from_args
    import argparse
    parser = argparse.ArgumentParser()
    _train_parser(parser.add_subparsers(dest="command"))

    def weights(*flags):
        cfg = config_from_args(parser.parse_args(["train", "mnist-svhn", *flags]))
        return build_model(cfg.replace(latent_dim=2)).llik_scaling

    assert weights() == pytest.approx({"mnist": 3 * 32 * 32 / (28 * 28), "svhn": 1.0})
    assert weights("--llik-scaling", "none") == {"mnist": 1.0, "svhn": 1.0}
    assert weights("--llik-scaling", "svhn=0.5") == {"mnist": 1.0, "svhn": 0.5}
    assert weights("--llik-scaling", "mnist=2, svhn=0.25") == {"mnist": 2.0, "svhn": 0.25}


def _run_folder(tmp_path, epochs=1, **overrides):
    """A run folder as the command line leaves it after ``epochs`` epochs (a tiny model, no data)."""
    from conftest import make_tiny_mm
    from mmvae_lite import get_config
    from mmvae_lite.cli import run_name
    from mmvae_lite.objectives import m_iwae_stratified
    from mmvae_lite.training import Trainer
    cfg = get_config("mnist-svhn", "quick", **overrides)
    run = tmp_path / run_name(cfg)
    tr = Trainer(make_tiny_mm(), m_iwae_stratified, device="cpu", progress=False, verbose=False,
                 config=cfg.to_dict(), batch_size=8)
    g = torch.Generator().manual_seed(0)
    tr.fit({"a": torch.randn(16, 3, generator=g), "b": torch.randn(16, 5, generator=g)}, epochs)
    tr.save(run / "checkpoint.pt")
    (run / "config.json").write_text(json.dumps(cfg.to_dict(), default=str))
    return cfg, run


def test_a_run_is_never_overwritten_without_overwrite(tmp_path, capsys):
    from mmvae_lite.cli import RunFolderError, prepare_run_folder
    cfg, run = _run_folder(tmp_path)
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(RunFolderError, match=r"already holds a run \(checkpoint at epoch 1\).*--resume.*--overwrite"):
        prepare_run_folder(run, cfg, resume=False, overwrite=False)
    (run / "metrics.json").write_text("{}")
    with pytest.raises(RunFolderError, match="finished and evaluated"):
        prepare_run_folder(run, cfg, resume=False, overwrite=False)
    assert (run / "checkpoint.pt").read_bytes() == before
    assert prepare_run_folder(run, cfg, resume=False, overwrite=True) is None
    assert not (run / "checkpoint.pt").exists() and not (run / "metrics.json").exists()
    assert "overwriting the run" in capsys.readouterr().out


def test_a_folder_of_a_run_from_other_weights_says_so_instead_of_offering_resume(tmp_path):
    """Two warm starts that differ only in --init-from share a folder name (the tag is ``warm``): the
    second is refused naming the difference, and not sent to --resume, which would refuse it too."""
    from mmvae_lite.cli import RunFolderError, prepare_run_folder
    cfg, run = _run_folder(tmp_path, init_from="a/epoch01.pt")
    with pytest.raises(RunFolderError, match=r"other settings: init_from \(saved 'a/epoch01.pt', now 'b/epoch09.pt'\)"
                                             r".*--out DIR") as e:
        prepare_run_folder(run, cfg.replace(init_from="b/epoch09.pt"), resume=False, overwrite=False)
    assert "--resume" not in str(e.value)


def test_resume_refuses_changed_settings_and_a_missing_checkpoint(tmp_path, capsys):
    from mmvae_lite.cli import RunFolderError, prepare_run_folder
    cfg, run = _run_folder(tmp_path, epochs=2)
    assert prepare_run_folder(run, cfg.replace(epochs=10), resume=True, overwrite=False) == 2   # more epochs: fine
    with pytest.raises(RunFolderError, match=r"other settings: K \(saved 1, now 3\); lr \(saved 0.002, now 0.01\)"):
        prepare_run_folder(run, cfg.replace(K=3, lr=0.01), resume=True, overwrite=False)
    with pytest.raises(RunFolderError, match="the checkpoint is at epoch 2, past --epochs 1"):
        prepare_run_folder(run, cfg.replace(epochs=1), resume=True, overwrite=False)
    prepare_run_folder(run, cfg.replace(device="cpu"), resume=True, overwrite=False)            # device may change
    assert "resuming on device cpu" in capsys.readouterr().out
    other = tmp_path / "mnist-svhn-mmvae-quick-seed5"
    with pytest.raises(RunFolderError, match=r"no checkpoint at .*seed5.* mnist-svhn-mmvae-quick \(differs in seed\)"):
        prepare_run_folder(other, cfg.replace(seed=5), resume=True, overwrite=False)
    (run / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(RunFolderError, match="is not a readable checkpoint"):
        prepare_run_folder(run, cfg, resume=True, overwrite=False)


@needs_real_mnist
def test_cli_refuses_a_second_run_and_resumes_for_more_epochs(tmp_path, capsys):
    argv = ["train", "mnist", "--preset", "quick", "--epochs", "1", "--train-subset", "128", "--test-subset", "32",
            "--data-root", str(SHARED), "--out", str(tmp_path), "--no-progress", "--no-eval"]
    assert main(argv) == 0
    run = tmp_path / "mnist-vae-quick-n128-t32"
    first = (run / "checkpoint.pt").read_bytes()
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == first
    assert main(argv[:5] + ["2"] + argv[6:] + ["--resume", "--snapshots"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 2
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    # --snapshots keeps the checkpoint of each epoch it trains, named by the epoch it holds
    from mmvae_lite.checkpoint import read_checkpoint
    assert sorted(p.name for p in run.glob("epoch*.pt")) == ["epoch02.pt"]
    assert (run / "epoch02.pt").read_bytes() == (run / "checkpoint.pt").read_bytes()
    assert read_checkpoint(run / "epoch02.pt")["epoch"] == 2
    assert main(argv + ["--resume", "--seed", "3"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0            # the replaced run's snapshots go with it
    assert len(json.loads((run / "history.json").read_text())) == 1
    assert not list(run.glob("epoch*.pt")) and "epoch02.pt" in capsys.readouterr().out


@needs_real_mnist
def test_warm_start_takes_the_weights_and_new_settings_and_counts_the_earlier_training(tmp_path, capsys):
    from mmvae_lite.checkpoint import read_checkpoint
    from mmvae_lite.config import Config
    from mmvae_lite.reference import PretrainedError, warm_start_chain
    base = ["train", "mnist", "--preset", "quick", "--epochs", "1", "--train-subset", "128", "--test-subset", "32",
            "--data-root", str(SHARED), "--out", str(tmp_path), "--no-progress", "--no-eval"]
    assert main(base) == 0
    first = tmp_path / "mnist-vae-quick-n128-t32" / "checkpoint.pt"
    before = read_checkpoint(first)
    # K=2 and another lr: a warm start, not a resume, so other settings are allowed; zero epochs are not
    # possible, so compare the weights the second run saw by training it with a learning rate of ~0
    assert main(base + ["--init-from", str(first), "--K", "2", "--lr", "1e-12"]) == 0
    out = capsys.readouterr().out
    assert "after 1 epochs of its run; a fresh optimiser" in out
    warm = tmp_path / "mnist-vae-quick-K2-lr1e-12-n128-t32-warm"
    after = read_checkpoint(warm / "checkpoint.pt")
    for k, v in before["model"].items():
        assert torch.allclose(v, after["model"][k], atol=1e-6), k
    cfg = Config(**json.loads((warm / "config.json").read_text()))
    assert cfg.init_from == str(first) and cfg.K == 2
    (chain,) = warm_start_chain(cfg)
    assert chain["epochs"] == 1 and chain["pairs"] == 128
    assert chain["train_seconds"] == round(sum(r["seconds"] for r in before["history"]), 1)
    assert chain["command"].startswith("python -m mmvae_lite " + " ".join(base))
    # a relative --init-from (as typed in the folder train ran from) is found from the run folder
    rel = cfg.replace(init_from=str(first.relative_to(tmp_path)))
    chain["checkpoint"] = rel.init_from
    with pytest.raises(PretrainedError, match="not here"):
        warm_start_chain(rel)
    assert warm_start_chain(rel, warm) == [chain]
    # a checkpoint of another experiment is refused before anything is trained, naming both
    before["config"]["experiment"] = "svhn"
    torch.save(before, tmp_path / "svhn.pt")
    assert main(base + ["--init-from", str(tmp_path / "svhn.pt"), "--seed", "3"]) == 2
    captured = capsys.readouterr()
    assert "--init-from" in captured.err and "'svhn'" in captured.err and "'mnist'" in captured.err
    # refused before the data are loaded (nothing said about MNIST) and before the run folder exists
    assert "MNIST" not in captured.out + captured.err
    assert not (tmp_path / "mnist-vae-quick-seed3-n128-t32-warm").exists()
    assert main(base + ["--init-from", str(tmp_path / "nothing.pt"), "--seed", "4"]) == 2
    assert "nothing.pt" in capsys.readouterr().err
    assert not (tmp_path / "mnist-vae-quick-seed4-n128-t32-warm").exists()
    # --overwrite with a wrong --init-from refuses before it removes the run it would replace
    kept = (warm / "checkpoint.pt").read_bytes()
    assert main(base + ["--init-from", str(tmp_path / "nothing.pt"), "--K", "2", "--lr", "1e-12", "--overwrite"]) == 2
    assert (warm / "checkpoint.pt").read_bytes() == kept
