#!/usr/bin/env python
"""Can the CUB sentence VAE alone carry its captions' colours? A diagnosis run for results/README.md.

Trains the CUB model's sentence encoder and decoder (the paper's networks, Table 6(d), the CUB
MMVAE's latent size and prior) as a single-modality VAE with DReG at ``--K`` samples, and every
``--every`` steps scores its self-reconstructions: the first caption of each of the first 300
test images is encoded, decoded from the posterior mean and from one sample (most likely word
per position), and scored by :func:`mmvae_lite.evaluation.caption_attribute_scores` against the
stand-in bird's attributes ("described": names at least one part colour, every one right).
A caption the MMVAE writes from an image cannot name colours that the sentence side cannot even
reconstruct, so this bounds what the CUB chapter's captions can show after the same training.

    python tools/cub_sentence_vae.py --K 4 --minutes 50 --every 300 --out sentence_vae.jsonl
    python tools/cub_sentence_vae.py --K 1 --beta 0.1 --minutes 12 --every 150 --out sentence_vae.jsonl

``--beta B`` trains the ELBO with its KL weighted by B instead (one sample per caption; a β-VAE,
not the paper's objective): a diagnosis of whether the networks *can* carry the colours in the
time given when information in the latent code costs less.

One JSON line per scoring (step, training seconds, the scores, an example) goes to ``--out`` and
to the terminal. Training seconds exclude the scoring.
"""
from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch

import mmvae_lite as ml
from mmvae_lite.batches import iterate_batches
from mmvae_lite.data import experiment_data
from mmvae_lite.evaluation import caption_attribute_scores


def first_caption_rows(test, n: int) -> torch.Tensor:
    """Row of the first caption of each of the first ``n`` test images."""
    image = torch.unique(test.image_index, sorted=True, return_inverse=True)[1]
    first = torch.full((int(image.max()) + 1,), len(image), dtype=torch.long)
    return first.scatter_reduce(0, image, torch.arange(len(image)), reduce="amin")[:n]


def reconstruction_scores(vae: ml.VAE, sentences: torch.Tensor, attributes: torch.Tensor, test) -> dict:
    """Scores of the captions decoded from the posterior mean and from one sample of each sentence."""
    out = {}
    was_training = vae.training
    vae.eval()
    with torch.no_grad():
        q = vae.encode(sentences)
        for name, z in (("mean", q.mean), ("sample", q.sample())):
            texts = [test.vocab.decode(t) for t in vae.modality.likelihood.mean(vae.decode(z))]
            s = caption_attribute_scores(texts, attributes, test.attribute_names)
            out[name] = {k: round(float(s[k]), 4) for k in ("described", "with_claims", "claim_accuracy")}
            out[name]["claims"] = int(s["claims"])
            out[name]["example"] = texts[0]
    vae.train(was_training)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--K", type=int, default=4, help="importance samples of the DReG objective")
    ap.add_argument("--minutes", type=float, default=50.0, help="training time (scoring excluded)")
    ap.add_argument("--beta", type=float, help="train the ELBO with KL weight BETA (K=1) instead of DReG")
    ap.add_argument("--every", type=int, default=300, help="steps between scorings")
    ap.add_argument("--images", type=int, default=300, help="test images scored")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file (appended to)")
    ap.add_argument("--data-root", default=None, help="data directory (default: $MMVAE_LITE_DATA or the usual places)")
    args = ap.parse_args()

    cfg = ml.get_config("cub-features", "reference", K=args.K)
    train, test, cfg = experiment_data(cfg.replace(test_subset=None), root=args.data_root)
    multimodal = ml.build_model(cfg)   # the CUB MMVAE; its sentence side and its prior become the VAE
    vae = ml.VAE(multimodal.modalities["sentence"], multimodal.prior)
    rows = first_caption_rows(test, args.images)
    sentences, attributes = test.get_batch(rows)["sentence"], test.caption_attributes()[rows]
    if args.beta is not None and args.K != 1:
        raise SystemExit("--beta trains the one-sample ELBO: give --K 1")
    objective = ml.get_objective("dreg") if args.beta is None else partial(ml.objectives.elbo, beta=args.beta)
    trainer = ml.Trainer(vae, objective, K=args.K, lr=cfg.lr, batch_size=cfg.batch_size,
                         progress=False, verbose=False, device="cpu")

    def report(step: int, seconds: float) -> None:
        line = json.dumps({"step": step, "seconds": round(seconds, 1), "K": args.K, "beta": args.beta,
                           **reconstruction_scores(vae, sentences, attributes, test)})
        print(line, flush=True)
        with open(args.out, "a") as f:
            f.write(line + "\n")

    g = torch.Generator().manual_seed(cfg.seed)
    step, seconds = 0, 0.0
    report(0, 0.0)
    while seconds < args.minutes * 60:
        for batch in iterate_batches(train, cfg.batch_size, shuffle=True, generator=g):
            t = time.perf_counter()
            trainer.train_step(batch)
            seconds += time.perf_counter() - t
            step += 1
            if step % args.every == 0:
                report(step, seconds)
            if seconds >= args.minutes * 60:
                break
    if step % args.every:
        report(step, seconds)


if __name__ == "__main__":
    main()
