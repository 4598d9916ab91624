"""Shipped reference models: export/load round trip, checksums, clear errors, recorded coherence."""
from __future__ import annotations

import json

import pytest
import torch

import mmvae_lite as ml
from mmvae_lite import reference as pt
from mmvae_lite.checkpoint import snapshots
from mmvae_lite.reference import registry as shipped


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    """A private registry and an empty checkout results/ so tests never touch the real ones."""
    reg = tmp_path / "reference_models.json"
    monkeypatch.setattr(shipped, "REGISTRY_FILE", reg)
    monkeypatch.setattr(shipped, "checkout_dir", lambda: tmp_path / "results")
    monkeypatch.setenv("MMVAE_LITE_OFFLINE", "1")
    return tmp_path


def _tiny_model():
    cfg = ml.get_config("mnist-svhn", "quick", latent_dim=4)
    return cfg, ml.build_model(cfg)


def test_export_then_load_round_trips_in_float16(registry):
    cfg, model = _tiny_model()
    files = pt.export(model, cfg, "tiny", registry / "results")
    assert [f.name for f in files] == ["weights.pt"]
    assert json.loads(shipped.REGISTRY_FILE.read_text())["tiny"]["files"][0]["sha256"] == files[0].sha256
    loaded = ml.pretrained("tiny")
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2
        if a.is_floating_point():
            torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0)
            assert b.dtype == torch.float32
    assert not loaded.training
    assert loaded.config.latent_dim == 4


def test_large_models_are_split_into_files_below_the_limit(registry):
    cfg, model = _tiny_model()
    files = pt.export(model, cfg, "split", registry / "results", max_file_mb=1.0)
    assert len(files) > 1 and all(f.bytes < 1.05 * 2 ** 20 for f in files)
    with pytest.raises(ValueError, match="over the per-file limit"):
        pt.export(model, cfg, "split", registry / "results", max_file_mb=0.1)
    loaded = ml.pretrained("split")
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_a_corrupt_file_is_refused_naming_it_and_its_checksum(registry):
    cfg, model = _tiny_model()
    f = pt.export(model, cfg, "tiny", registry / "results")[0]
    path = registry / "results" / "tiny" / "weights.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(pt.PretrainedError, match=f"weights.pt.*{f.sha256}"):
        ml.pretrained("tiny")


def test_a_missing_model_says_what_is_missing_and_how_to_get_it(registry):
    cfg, model = _tiny_model()
    f = pt.export(model, cfg, "tiny", registry / "results")[0]
    (registry / "results" / "tiny" / "weights.pt").unlink()
    (registry / "data").mkdir()
    with pytest.raises(pt.PretrainedError, match=f"downloads are off.*{f.sha256}"):
        ml.pretrained("tiny", root=registry / "data")
    with pytest.raises(pt.PretrainedError, match="no shipped model named 'nope'"):
        ml.pretrained("nope")


def test_a_caption_model_ships_its_vocabulary_verified_like_its_weights(registry):
    """The vocabulary that decodes a caption model's sentences is registered beside its weights: it
    loads back equal, a corrupt copy is refused by checksum, a model without one says so."""
    vocab = ml.data.Vocab([*ml.data.Vocab.SPECIALS, "this", "bird", "has", "a", "red", "crown"])
    cfg = ml.get_config("cub-features", "quick", latent_dim=4, vocab_size=len(vocab))
    folder = registry / "results" / "birds"
    folder.mkdir(parents=True)
    vocab.save(folder / "vocab.json")
    files = pt.export(ml.build_model(cfg), cfg, "birds", registry / "results", extra_files=("vocab.json",))
    assert files[-1].name == "vocab.json" and all(f.name.startswith("weights") for f in files[:-1])
    assert json.loads(shipped.REGISTRY_FILE.read_text())["birds"]["files"][-1]["sha256"] == files[-1].sha256
    assert pt.pretrained_vocab("birds").fingerprint() == vocab.fingerprint()
    (folder / "vocab.json").write_text((folder / "vocab.json").read_text().replace("red", "blue"))
    with pytest.raises(pt.PretrainedError, match=f"vocab.json.*{files[-1].sha256}"):
        pt.pretrained_vocab("birds")
    cfg, model = _tiny_model()
    pt.export(model, cfg, "tiny", registry / "results")
    with pytest.raises(pt.PretrainedError, match="not a caption model"):
        pt.pretrained_vocab("tiny")
    with pytest.raises(FileNotFoundError, match="write them before export"):
        pt.export(model, cfg, "tiny", registry / "results", extra_files=("vocab.json",))


def test_a_file_that_is_not_weights_gives_a_clear_error(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(pt.PretrainedError, match="not a readable mmvae_lite weights file"):
        pt.load_weights(tmp_path)


@pytest.mark.parametrize("name", pt.available())
def test_every_shipped_model_loads_and_reproduces_its_recorded_coherence(name):
    """Re-evaluates the deterministic check recorded at export: MNIST-SVHN coherence on the first 1000
    test pairs (trains the two digit classifiers first when none is cached: a few minutes, once);
    CUB stand-in caption scores on the first 500 test images. Seed 0 both."""
    from test_data import SHARED
    model = ml.pretrained(name, download=False)
    record = pt.pretrained_record(name, download=False)
    assert record["config"]["experiment"] == model.config.experiment
    assert all(f["bytes"] <= 8 * 2 ** 20 for f in record["files"])
    if SHARED is None and model.config.experiment == "mnist-svhn":
        pytest.skip("needs the real MNIST files (../shared/data or $MMVAE_LITE_DATA)")
    got = pt.recheck(model, root=SHARED, record=record)
    assert set(got) == set(record["check"])
    for key, want in record["check"].items():
        if want != want:   # NaN: no caption made a claim, then and now
            assert got[key] != got[key], (key, got[key])
            continue
        assert abs(got[key] - want) <= 0.02, (key, got[key], want)


def test_recheck_loads_the_data_the_model_was_measured_on():
    """A model measured on real SVHN is never re-checked on the stand-in (here real SVHN is absent:
    a clear error instead of a wrong comparison); one measured on the stand-in gets the stand-in."""
    from test_data import SHARED
    from mmvae_lite.data.files import DataError
    if SHARED is None:
        pytest.skip("needs the real MNIST files (../shared/data or $MMVAE_LITE_DATA)")
    cfg, model = _tiny_model()
    model.config = cfg
    with pytest.raises(DataError, match="SVHN"):
        pt.recheck(model, root=SHARED, record={"data": {"mnist": "real", "svhn": "real"}})
    assert pt.runs._standin_mode({"data": {"mnist": "real", "svhn": "standin"}}) == "always"
    assert pt.runs._standin_mode({}) == "auto"


def test_an_installed_package_downloads_and_verifies_the_weights(registry, monkeypatch):
    """Without the checkout, the files come from $MMVAE_LITE_WEIGHTS_URL (here a loopback server)."""
    from data_prep.serve_mirror import serving
    cfg, model = _tiny_model()
    served = registry / "served"
    f = pt.export(model, cfg, "tiny", served)[0]
    monkeypatch.delenv("MMVAE_LITE_OFFLINE")
    (registry / "data").mkdir()
    with serving(served) as url:
        monkeypatch.setenv(pt.URL_ENV, url)
        loaded = ml.pretrained("tiny", root=registry / "data", progress=False)
        assert (registry / "data" / "pretrained" / "tiny" / "weights.pt").is_file()
        # a file altered on the server is refused and not kept
        path = served / "tiny" / "weights.pt"
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
        (registry / "data" / "pretrained" / "tiny" / "weights.pt").unlink()
        with pytest.raises(pt.PretrainedError, match=f"weights.pt.*{f.sha256}"):
            ml.pretrained("tiny", root=registry / "data", progress=False)
    assert not (registry / "data" / "pretrained" / "tiny" / "weights.pt").exists()
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_the_time_to_coherence_curve_of_a_warm_started_run_counts_the_earlier_stage(tmp_path, monkeypatch):
    """Two stages (the second from the first's epoch-1 snapshot, by a relative --init-from), then the
    curve measured from another working directory: the earlier stage's snapshots up to the one the
    second started from come first, and its seconds and pairs are added to the second's."""
    from pathlib import Path
    from mmvae_lite.cli import main
    from test_data import SHARED
    if SHARED is None:
        pytest.skip("needs the real MNIST files (../shared/data or $MMVAE_LITE_DATA)")
    monkeypatch.chdir(tmp_path)
    base = ["train", "mnist-svhn", "--preset", "quick", "--train-subset", "64", "--test-subset", "32",
            "--data-root", str(SHARED), "--out", "runs", "--no-progress", "--no-eval", "--snapshots"]
    assert main(base + ["--epochs", "2"]) == 0
    first = Path("runs/mnist-svhn-mmvae-quick-n64-t32")
    assert main(base + ["--epochs", "1", "--K", "2", "--warmup-steps", "3", "--init-from",
                        str(first / "epoch01.pt")]) == 0
    warm = tmp_path / "runs" / "mnist-svhn-mmvae-quick-K2-wu3-n64-t32-warm"
    monkeypatch.chdir(warm)
    rows = pt.coherence_curve(warm, n=40, n_joint=40, root=SHARED)
    assert [(r["run"], r["epoch"], r["K"], r["warmup_steps"]) for r in rows] == [(first.name, 1, 1, 0),
                                                                                  (warm.name, 1, 2, 3)]
    assert [r["pairs_seen"] for r in rows] == [64, 128]
    second = json.loads((warm / "history.json").read_text())[0]["seconds"]
    assert rows[1]["train_seconds"] == pytest.approx(rows[0]["train_seconds"] + second, abs=0.2)
    assert all(0 <= r[k] <= 1 for r in rows for k in ("joint", "mnist->svhn", "svhn->mnist"))


def test_export_run_ships_a_trained_run_that_loads_and_rechecks_to_its_record(registry, monkeypatch):
    """`train` then `export_run` at small sizes: the folder holds what results/README promises, the
    record names the command and the check's size, float16 is chosen only within 0.5 points, and the
    shipped weights, loaded through the registry, re-compute the recorded check exactly."""
    from pathlib import Path
    from mmvae_lite.cli import main
    from test_data import SHARED
    if SHARED is None:
        pytest.skip("needs the real MNIST files (../shared/data or $MMVAE_LITE_DATA)")
    monkeypatch.chdir(registry)
    assert main(["train", "mnist-svhn", "--preset", "quick", "--train-subset", "64", "--test-subset", "32",
                 "--epochs", "1", "--data-root", str(SHARED), "--out", "runs", "--no-progress", "--no-eval",
                 "--snapshots"]) == 0
    run = Path("runs/mnist-svhn-mmvae-quick-n64-t32")
    record = pt.export_run(run, "tiny", registry / "results", n_coherence=40, n_joint=40, check_n=40,
                           root=SHARED, progress=False,
                           evaluation=dict(quick=True, n_probe_train=64, n_probe_test=40, n_likelihood=4, K=3))
    folder = registry / "results" / "tiny"
    assert {"weights.pt", "config.json", "history.json", "metrics.json", "cross_generation.png"} <= {
        p.name for p in folder.iterdir()}
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["check_n"] == 40 and saved["epochs"] == 1
    assert "train mnist-svhn --preset quick" in saved["command"]
    assert [r["epoch"] for r in saved["time_to_coherence"]] == [1]
    assert set(saved["metrics"]) >= {"coherence", "latent_accuracy", "likelihoods"}
    half = saved["float16_max_coherence_change_points"] <= 0.5
    assert torch.load(folder / "weights.pt", weights_only=False)["dtype"] == ("float16" if half else "float32")
    model = ml.pretrained("tiny", download=False)
    assert pt.recheck(model, root=SHARED, record=saved) == pytest.approx(saved["check"], abs=1e-4)

    # a further stage started from the shipped folder (as a reader would continue a shipped model):
    # exactly the shipped weights, and the record counts the shipped model's training and curve
    from mmvae_lite.checkpoint import CheckpointError, read_start, warm_start
    start = read_start("results/tiny/weights.pt")
    assert start["epoch"] == 1 and start["shipped"]["check"] == saved["check"]
    fresh = ml.build_model(ml.Config(**saved["config"]))
    warm_start(fresh, "results/tiny", saved["config"])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="not a shipped model"):
        read_start("runs")
    assert main(["train", "mnist-svhn", "--preset", "quick", "--train-subset", "32", "--test-subset", "32",
                 "--epochs", "1", "--data-root", str(SHARED), "--out", "runs", "--no-progress", "--no-eval",
                 "--snapshots", "--init-from", "results/tiny"]) == 0
    again = pt.export_run(Path("runs/mnist-svhn-mmvae-quick-n32-t32-warm"), "tiny2", registry / "results",
                          n_coherence=40, n_joint=40, check_n=40, root=SHARED, progress=False,
                          evaluation=dict(quick=True, n_probe_train=64, n_probe_test=40, n_likelihood=4, K=3))
    (before,) = again["warm_started_from"]
    assert (before["checkpoint"], before["epochs"], before["pairs"]) == ("results/tiny", 1, 64)
    assert before["train_seconds"] == saved["train_seconds"] and "time_to_coherence" not in before
    assert before["sha256"] == {f["name"]: f["sha256"] for f in saved["files"]}   # which release it started from
    assert again["train_seconds_total"] == pytest.approx(saved["train_seconds"] + again["train_seconds"], abs=0.2)
    rows = again["time_to_coherence"]
    assert rows[0] == saved["time_to_coherence"][0] and [r["pairs_seen"] for r in rows] == [64, 96]
    # the summary a chapter prints: one line per stage, the shipped one first, then the time in all
    lines = pt.training_summary(again).splitlines()
    assert len(lines) == 3 and lines[0].startswith("stage 1 (1 epoch, ") and lines[1].startswith("stage 2 (1 epoch, ")
    assert "--train-subset 64" in lines[0] and "--init-from results/tiny" in lines[1]
    assert lines[2].startswith(f"training time {again['train_seconds_total'] / 60:.0f} min in all")


def test_export_run_ships_a_caption_model_with_its_time_to_captions(registry, monkeypatch):
    """The CUB stand-in's path: `train cub-features` with snapshots, then `export_run`: the vocabulary
    ships beside the weights, the record holds the captions' scores, the curve of caption scores
    over the snapshots (epoch order, cumulative seconds), and the shipped model re-checks exactly."""
    from pathlib import Path
    from mmvae_lite.cli import main
    monkeypatch.chdir(registry)
    (registry / "data").mkdir()
    monkeypatch.setenv("MMVAE_LITE_DATA", str(registry / "data"))   # no CUB files: the stand-in
    import mmvae_lite.data.cub as cub_data                              # a small one: 300 + 100 birds
    monkeypatch.setitem(cub_data.CUB_IMAGES, "train", 300)
    monkeypatch.setitem(cub_data.CUB_IMAGES, "test", 100)
    assert main(["train", "cub-features", "--preset", "quick", "--train-subset", "64", "--test-subset", "32",
                 "--epochs", "2", "--out", "runs", "--no-progress", "--no-eval", "--snapshots"]) == 0
    run = Path("runs/cub-features-mmvae-quick-n64-t32")
    assert run.is_dir(), sorted(p.name for p in Path("runs").iterdir())
    record = pt.export_run(run, "birds", registry / "results", check_n=20, progress=False,
                           evaluation=dict(quick=True, n_train=256, n_test=64))
    saved = json.loads((registry / "results" / "birds" / "metrics.json").read_text())
    assert {"vocab.json", "metrics.json", "history.json"} <= {p.name for p in (registry / "results" / "birds").iterdir()}
    assert set(saved["metrics"]) == {"cca", "captions_from_images"} and saved["check_n"] == 20
    rows = saved["time_to_captions"]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["train_seconds"] < rows[1]["train_seconds"]
    assert rows[-1]["train_seconds"] == pytest.approx(saved["train_seconds"], abs=0.2)
    assert set(rows[-1]) >= {"described", "with_claims", "claim_accuracy", "pairs_seen"}
    assert rows[-1]["pairs_seen"] == 128
    model = ml.pretrained("birds", download=False)
    got = pt.recheck(model, record=saved)
    for key, want in saved["check"].items():
        assert (got[key] != got[key] and want != want) or got[key] == pytest.approx(want, abs=1e-4), key
    assert record["vocab_fingerprint"] == pt.pretrained_vocab("birds").fingerprint()


def test_snapshots_come_in_epoch_order_past_epoch_99(tmp_path):
    for n in (1, 2, 10, 11, 99, 100, 101):
        (tmp_path / f"epoch{n:02d}.pt").write_bytes(b"")
    (tmp_path / "epochs.pt").write_bytes(b"")           # not a snapshot
    names = [p.name for p in snapshots(tmp_path)]
    assert names == ["epoch01.pt", "epoch02.pt", "epoch10.pt", "epoch11.pt", "epoch99.pt", "epoch100.pt",
                     "epoch101.pt"]
