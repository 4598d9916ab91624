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
