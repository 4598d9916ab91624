#!/usr/bin/env python
"""When do the MNIST-SVHN MMVAE's ReLU units die? A diagnosis run for results/README.md.

Trains an MNIST-SVHN model with a preset's objective and networks (``--preset``, from scratch or
from a run's weights with ``--init-from``, a fresh optimiser as in ``train --init-from``) on
``--pairs`` training pairs, and every ``--every`` steps counts the dead units of each encoder
(:func:`mmvae_lite.evaluation.dead_units` on 1000 test pairs: units that output zero for all of
them). With ``--warmup-steps`` the learning rate rises linearly over the first steps, as
``train --warmup-steps`` does. For example, the first steps of stage 1 of the previous MMVAE release
(the quick preset, lr 2e-3, no warm-up), and of the shipped model's stage 1 (lr 1e-3 with a warm-up):

    python tools/dead_units_during_training.py --preset quick --steps 3000 --every 150
    python tools/dead_units_during_training.py --preset quick --lr 1e-3 --steps 6000 --every 500 --warmup-steps 1000

One line per count: step, training seconds (the counts excluded), the batch's objective and the
percentage of dead units in each encoder layer.
"""
from __future__ import annotations

import argparse
import time

import torch

import mmvae_lite as ml
from mmvae_lite.batches import iterate_batches
from mmvae_lite.data import experiment_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--preset", default="reference", help="the MNIST-SVHN preset whose recipe to run")
    p.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    p.add_argument("--K", type=int, help="importance samples (default: the preset's)")
    p.add_argument("--warmup-steps", type=int, help="linear lr warm-up steps (default: the preset's)")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="start from this run's weights (else a fresh model)")
    p.add_argument("--pairs", type=int, default=20000, help="training pairs")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    overrides = {k: v for k, v in (("lr", args.lr), ("K", args.K), ("warmup_steps", args.warmup_steps))
                 if v is not None}
    cfg = ml.get_config("mnist-svhn", args.preset, train_subset=args.pairs, test_subset=1000, **overrides)
    train, test, cfg = experiment_data(cfg)
    torch.manual_seed(args.seed)
    model = ml.build_model(cfg)
    if args.init_from:   # weights only, as train --init-from does
        ml.checkpoint.load_weights(model, args.init_from)
    trainer = ml.Trainer(model, ml.get_objective(cfg.objective, cfg.gradient), K=cfg.K, lr=cfg.lr,
                         batch_size=cfg.batch_size, warmup_steps=cfg.warmup_steps, progress=False, verbose=False)

    def report(step: int, seconds: float, value: float) -> None:
        dead = ml.evaluation.dead_units(model, test, max_examples=1000)
        enc = dead[dead.network == "encoder"]
        layers = "  ".join(f"{r.modality}/{r.layer} {100 * r.fraction:4.1f}%" for r in enc.itertuples())
        print(f"step {step:6d}  {seconds:7.1f} s  objective {value:9.1f}  dead: {layers}", flush=True)

    report(0, 0.0, float("nan"))
    step, seconds = 0, 0.0
    while step < args.steps:
        for batch in iterate_batches(train, cfg.batch_size):
            t0 = time.perf_counter()
            value = trainer.train_step(batch)
            seconds += time.perf_counter() - t0
            step += 1
            if step % args.every == 0:
                report(step, seconds, value)
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
