"""The command line: a tiny real run writes its history and metrics; bad input exits 2 with a message."""
from __future__ import annotations

import json

import pytest

from mmvae_lite.cli import main
from test_data import SHARED, needs_real_mnist


@needs_real_mnist
def test_train_writes_history_metrics_and_results(tmp_path, capsys):
    argv = ["train", "mnist", "--preset", "quick", "--epochs", "1", "--train-subset", "256", "--test-subset", "64",
            "--data-root", str(SHARED), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--no-progress"]
    assert main(argv) == 0
    run = tmp_path / "runs" / "mnist-vae-quick"
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1 and history[0]["train"] < 0
    record = json.loads((tmp_path / "results" / "mnist-vae-quick" / "metrics.json").read_text())
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

    from mmvae_lite.cli import _flat
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
