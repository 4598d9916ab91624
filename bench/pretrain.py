"""Make a briefly trained MNIST-SVHN state for benchmarking training steps as they run after warm-up.

    python -m bench.pretrain --out bench/.state/mnist_svhn_pretrained.pt --steps 60 --data-root /work/shared/data

A freshly initialised model decodes every latent to about the same image, so all K importance
weights are comparable; after a few dozen steps the log-weights of one modality's K samples spread
over hundreds of nats and most normalised weights underflow to exactly zero, which
``networks._RowSparseRecompute`` exploits. This trains the paper's MNIST-SVHN networks for
``--steps`` Adam steps (K=4 DReG stratified, batch 128: cheap) on MNIST-SVHN training pairs
(real MNIST; SVHN, or the package's stand-in where SVHN is missing) and saves the state_dict.
``.pt`` files are git-ignored.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench/.state/mnist_svhn_pretrained.pt")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    from mmvae_lite import build_model, data, get_config
    from mmvae_lite.objectives import get_objective
    from mmvae_lite.training import Trainer
    cfg = get_config("mnist-svhn", "paper", K=args.K, seed=args.seed)
    model = build_model(cfg)
    train = data.load_mnist_svhn("train", root=args.data_root, subset=args.steps * args.batch, seed=args.seed)
    tr = Trainer(model, get_objective(cfg.objective), K=args.K, batch_size=args.batch, seed=args.seed,
                 device="cpu", progress=False, verbose=True)
    t0 = time.perf_counter()
    tr.fit(train, epochs=1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"saved {out} after {tr.step} steps ({time.perf_counter() - t0:.0f} s)")
    return out


if __name__ == "__main__":
    main()
