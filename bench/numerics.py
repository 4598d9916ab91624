"""Numerics check: the bound of a fixed batch and seed, optimised path vs the plain fp32 computation.

    python -m bench.numerics                  # K=30, batch 128, paper networks, synthetic batch
    python -m bench.numerics --compile        # also the torch.compile'd path

For each objective the same batch, parameters and random draws (``torch.manual_seed`` before each
call) are evaluated with mmvae_lite's CPU fast paths on (``networks.FAST_PATHS``,
``distributions.FUSED_LIKELIHOOD``) and off (the plain ``nn.Sequential`` and elementwise formula:
"plain fp32"). It prints one JSON line per objective with the relative difference of the bound and
of the whole gradient vector (L2), and exits non-zero if any bound differs by more than ``--tol``
(default 0.1%).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import torch

from bench.bench import CONFIGS, build_ours, maybe_compile, real_batch, set_plain, synthetic_batch


def bound_and_grad(model, objective, batch, K: int, seed: int) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = objective(model, batch, K)
    value.backward()
    grads = [p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()
             if p.requires_grad]
    return float(value.detach()), torch.cat(grads)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="mnist-svhn-paper", choices=sorted(CONFIGS))
    p.add_argument("--K", type=int, default=30)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--objectives", default="m_dreg_stratified,m_iwae_mixture,m_elbo_is")
    p.add_argument("--checkpoint", default=None, help="load these model weights (a state_dict) first")
    p.add_argument("--data", default="synthetic", choices=["synthetic", "mnist-svhn"])
    p.add_argument("--data-root", default=None)
    p.add_argument("--compile", nargs="?", const="default", default=None, help="also check torch.compile")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmvae_lite.objectives import get_objective
    ok = True
    for name in args.objectives.split(","):
        _, model = build_ours(args.config, args.K, args.batch, name, args.seed)
        if args.checkpoint:
            model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
        objective = get_objective(name)
        batch = (synthetic_batch(args.batch, args.seed + 1) if args.data == "synthetic"
                 else real_batch(args.batch, args.seed, args.data_root))
        set_plain(True)
        ref, gref = bound_and_grad(model, objective, batch, args.K, args.seed)
        paths = {"fast": None}
        if args.compile:
            paths["compile"] = args.compile
        for path, mode in paths.items():
            set_plain(False)
            if mode:
                maybe_compile(model, mode)
            bound_and_grad(model, objective, batch, args.K, args.seed)   # first call: decoders observe sparsity
            val, g = bound_and_grad(model, objective, batch, args.K, args.seed)
            rows = {n: getattr(m.decoder.__dict__.get("_grad_rows"), "fraction", None)
                    for n, m in model.modalities.items()}
            rel = abs(val - ref) / abs(ref)
            grel = float((g - gref).norm() / gref.norm().clamp_min(1e-30))
            passed = rel <= args.tol
            ok &= passed
            print(json.dumps({"objective": name, "K": args.K, "batch": args.batch, "path": path,
                              "plain_fp32_bound": ref, "bound": val, "rel_diff": rel, "grad_rel_l2_diff": grel,
                              "nonzero_grad_rows": rows, "tol": args.tol, "pass": passed}), flush=True)
    set_plain(False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
