#!/usr/bin/env python
"""Where does an MNIST-SVHN MMVAE lose coherence? A diagnosis run for results/README.md.

Four measurements on a shipped model (``--name``, default ``mnist-svhn-mmvae``) or a run's weights
(``--checkpoint``):

1. **Joint coherence from four sets of latents** (:func:`mmvae_lite.evaluation.joint_coherence`
   with ``latents=``): samples of the prior; one sample of each expert's posterior for each of the
   first ``--pairs`` test pairs (the aggregate posterior); the same samples with every latent
   dimension shuffled on its own across them (the product of the aggregate posterior's marginals:
   the best any factorised prior could do, since it keeps each dimension's distribution and drops
   only the dependence between dimensions); and prior samples whose dimension ``--swap-dim``
   (counted from 1) is taken from the posterior samples.
2. **Cross coherence on seen and unseen pairs**: the first ``--pairs`` pairs of the training subset
   the run trained on (``--train-subset``, default the model's) against the same number of test pairs.
3. **What the cross-generated images look like to the classifier**: per direction (one latent sample
   each), the coherence per digit class, how often each class is read, the share of the wrong answers
   that are a 0 or a 1 (the classes the classifiers give faint images), and the images' contrast
   (pixel standard deviation within an image; the test images' own for comparison).

4. **The polarity switch** (MNIST->SVHN): the SVHN test images' pixel-wise median per digit over
   both polarities (light digit on a darker plate, or dark on lighter) and over each alone, as the
   classifier reads them (what a decoder that knows only the digit would draw); then the MNIST
   expert's widest latent dimension, and the coherence and polarity of one MNIST->SVHN sample per
   test pair by how far that sample's coordinate lies from the posterior mean there, and the
   polarity of the image decoded from the posterior mean moved by fixed offsets along it.

5. With ``--split-curve RUN_DIR ...`` instead: for every epoch snapshot of the run folders, in
   order, the latent dimension where the two experts' median posterior means lie furthest apart
   (in units of the prior's scale), the two medians, and each expert's largest median scale.

    python tools/coherence_diagnosis.py                       # the shipped MMVAE
    python tools/coherence_diagnosis.py --checkpoint refruns/amd2/<run>/checkpoint.pt
    python tools/coherence_diagnosis.py --split-curve refruns/amd/<stage 1> refruns/amd/<stage 2> ...
    python tools/coherence_diagnosis.py --switch-curve refruns/amd/<stage 1> refruns/amd/<stage 2> ...

6. With ``--switch-curve RUN_DIR ...`` instead: for every epoch snapshot, measurement 4 in brief:
   the MNIST expert's widest dimension, MNIST->SVHN from one sample, from the posterior mean, and
   from the posterior mean moved by -15 and +15 along that dimension, and the share of the
   MNIST->SVHN samples that are hedged (|centre - border| < 0.03: no polarity chosen).

Prints one line per measurement.
"""
from __future__ import annotations

import argparse

import torch

import mmvae_lite as ml
from mmvae_lite.checkpoint import snapshots
from mmvae_lite.data import experiment_data
from mmvae_lite.evaluation import cross_coherence, get_digit_classifier, joint_coherence, plate_polarity, predict_digits
from mmvae_lite.reference.runs import load_run


def split_curve(run_dirs: list[str], pairs: int) -> None:
    """Per snapshot: the dimension where the experts' medians lie furthest apart, in prior scales."""
    batch = None
    for run in run_dirs:
        for snap in snapshots(run):
            cfg, model, _ = load_run(snap)
            if batch is None:
                _, test, _ = experiment_data(cfg.replace(test_subset=pairs, train_subset=1), verbose=False)
                batch = test.get_batch(torch.arange(len(test)))
            with torch.no_grad():
                present, z = model.unimodal_samples(batch, 1, mean=True)
                zm, zs = z[present.index("mnist"), 0], z[present.index("svhn"), 0]
                gap = (zs.median(0).values - zm.median(0).values).abs() / model.prior().scale.reshape(-1)
                d = int(gap.argmax())
                big = {n: model.modalities[n].encode(batch[n]).scale.median(0).values for n in present}
            print(f"{snap}: dimension {d + 1}, {gap[d]:.2f} prior scales apart (medians {zm[:, d].median():.2f} "
                  f"MNIST, {zs[:, d].median():.2f} SVHN); largest scale "
                  + ", ".join(f"{n} {float(v.max()):.1f} (dimension {int(v.argmax()) + 1})" for n, v in big.items()),
                  flush=True)


def svhn_images(model, z: torch.Tensor) -> torch.Tensor:
    """The SVHN decoder's mean images for latents z (B, L)."""
    return model.modalities["svhn"].likelihood.mean(model.decode(z, ["svhn"])["svhn"])


def polarity_switch(model, clfs, batch: dict, labels: torch.Tensor) -> None:
    """Measurement 4: the class medians of the SVHN test images, and the MNIST expert's switch."""
    svhn = ml.data.load_svhn("test", verbose=False)
    images = svhn.get_batch(torch.arange(len(svhn.labels)))[svhn.key]
    images = images.float() / 255 if images.dtype == torch.uint8 else images
    light = plate_polarity(images) > 0
    print(f"SVHN test images: {100 * light.float().mean():.1f} % light digits on a darker plate")
    for name, keep in (("both polarities", torch.ones_like(light)), ("light digits", light), ("dark digits", ~light)):
        med = torch.stack([images[keep & (svhn.labels == c)].median(0).values for c in range(10)])
        said = predict_digits(clfs["svhn"], med)
        print(f"median per digit over {name}: read as {said.tolist()} ({int((said == torch.arange(10)).sum())} of 10 "
              f"right), contrast {med.flatten(1).std(1).mean():.3f}", flush=True)
    with torch.no_grad():
        q = model.modalities["mnist"].encode(batch["mnist"])
        wide = int(q.stddev.mean(0).argmax())
        z = q.sample()
        x = svhn_images(model, z)
        off = (z[:, wide] - q.mean[:, wide]).abs()
        right = predict_digits(clfs["svhn"], x) == labels
        pol = plate_polarity(x)
        print(f"widest MNIST dimension {wide + 1} (posterior std {q.stddev.mean(0)[wide]:.1f} on average); "
              f"MNIST->SVHN of these samples {100 * right.float().mean():.1f} %")
        for lo, hi in ((0, 5), (5, 15), (15, float("inf"))):
            s = (off >= lo) & (off < hi)
            print(f"  |offset| {lo}-{hi}: {100 * s.float().mean():.1f} % of samples, coherence "
                  f"{100 * right[s].float().mean():.1f} %, mean |polarity| {pol[s].abs().mean():.3f}", flush=True)
        for shift in (-30, -15, -5, 0, 5, 15, 30):
            zz = q.mean.clone()
            zz[:, wide] += shift
            xs = svhn_images(model, zz)
            ok = predict_digits(clfs["svhn"], xs) == labels
            print(f"  posterior mean {shift:+d} on dimension {wide + 1}: mean polarity {plate_polarity(xs).mean():+.3f}, "
                  f"coherence {100 * ok.float().mean():.1f} %", flush=True)


def switch_curve(run_dirs: list[str], pairs: int) -> None:
    """Measurement 6: the polarity switch of measurement 4 on every snapshot of the runs."""
    batch = clfs = None
    for run in run_dirs:
        for snap in snapshots(run):
            cfg, model, _ = load_run(snap)
            if batch is None:
                _, test, _ = experiment_data(cfg.replace(test_subset=pairs, train_subset=1), verbose=False)
                batch, labels = test.get_batch(torch.arange(len(test))), test.labels
                clfs = {m: get_digit_classifier(m, progress=False, verbose=False) for m in ("mnist", "svhn")}
            torch.manual_seed(0)
            with torch.no_grad():
                q = model.modalities["mnist"].encode(batch["mnist"])
                wide = int(q.stddev.mean(0).argmax())
                out = {}
                for name, z in (("sample", q.sample()), ("mean", q.mean)):
                    x = svhn_images(model, z)
                    out[name] = 100 * (predict_digits(clfs["svhn"], x) == labels).float().mean().item()
                    if name == "sample":
                        hedged = 100 * (plate_polarity(x).abs() < 0.03).float().mean().item()
                for shift in (-15, 15):
                    z = q.mean.clone()
                    z[:, wide] += shift
                    x = svhn_images(model, z)
                    out[f"{shift:+d}"] = 100 * (predict_digits(clfs["svhn"], x) == labels).float().mean().item()
            print(f"{snap}: widest dimension {wide + 1} (std {q.stddev.mean(0)[wide]:.1f}); MNIST->SVHN from a sample "
                  f"{out['sample']:.1f} % ({hedged:.1f} % hedged), the mean {out['mean']:.1f} %, the mean -15 "
                  f"{out['-15']:.1f} %, +15 {out['+15']:.1f} %", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--name", default="mnist-svhn-mmvae", help="a shipped model (ml.pretrained)")
    src.add_argument("--checkpoint", help="a run's checkpoint or epoch snapshot instead")
    src.add_argument("--split-curve", nargs="+", metavar="RUN_DIR", help="the experts' split over these runs' snapshots")
    src.add_argument("--switch-curve", nargs="+", metavar="RUN_DIR",
                     help="the polarity switch (measurement 4) over these runs' snapshots")
    p.add_argument("--pairs", type=int, default=2000, help="test (and training) pairs")
    p.add_argument("--train-subset", type=int, help="the training subset the run saw (default: the model's)")
    p.add_argument("--swap-dim", type=int, default=10, help="latent dimension (from 1) taken from the posteriors")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.split_curve:
        split_curve(args.split_curve, args.pairs)
        return
    if args.switch_curve:
        switch_curve(args.switch_curve, args.pairs)
        return

    if args.checkpoint:
        cfg, model, _ = load_run(args.checkpoint)
    else:
        model = ml.pretrained(args.name)
        cfg = model.config
    if cfg.experiment != "mnist-svhn" or not isinstance(model, ml.MultimodalVAE):
        raise SystemExit(f"this diagnosis is for MNIST-SVHN multimodal models, got {cfg.experiment} {cfg.model}")
    model.eval()
    clfs = {m: get_digit_classifier(m, progress=False, verbose=False) for m in model.names}
    train, test, _ = experiment_data(cfg.replace(test_subset=args.pairs,
                                                 train_subset=args.train_subset or cfg.train_subset), verbose=False)
    L, d = model.latent_dim, args.swap_dim - 1
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        batch = test.get_batch(torch.arange(len(test)))
        _, z = model.unimodal_samples(batch, 1)            # each modality's own posterior (PoE: times the prior)
        post = z.reshape(-1, L)
        shuffled = torch.stack([post[torch.randperm(len(post), generator=g), k] for k in range(L)], 1)
        prior = model.prior().sample((len(post),)).reshape(-1, L)
        swapped = prior.clone()
        swapped[:, d] = post[:, d]
    for label, z in (("prior samples", prior), ("aggregate posterior samples", post),
                     ("product of the aggregate posterior's marginals", shuffled),
                     (f"prior samples, dimension {args.swap_dim} from the posteriors", swapped)):
        print(f"joint coherence, {label}: {100 * joint_coherence(model, clfs, latents=z):.1f} %", flush=True)
    for label, data in (("training pairs (seen)", train), ("test pairs", test)):
        c = cross_coherence(model, data, clfs, max_examples=args.pairs, seed=args.seed)
        print(f"cross coherence, {label}: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in c.items()), flush=True)
    labels = test.labels
    for name in model.names:
        x = batch[name].float() / 255 if batch[name].dtype == torch.uint8 else batch[name]
        print(f"{name} test images: contrast {x.flatten(1).std(1).mean():.3f}")
    recon = model.cross_reconstruct(batch)               # recon[source][target]: (1, B, *event)
    for source in model.names:
        for target in model.names:
            x = recon[source][target][0]
            said = predict_digits(clfs[target], x)
            wrong = said != labels
            per_class = [round(100 * (said[labels == c] == c).float().mean().item()) for c in range(10)]
            read_as = [round(100 * (said == c).float().mean().item()) for c in range(10)]
            print(f"{source}->{target}: coherence {100 * (~wrong).float().mean():.1f} %, per class {per_class}, "
                  f"read as {read_as} %, wrong answers read as 0 or 1 {100 * (said[wrong] <= 1).float().mean():.0f} %, "
                  f"contrast {x.flatten(1).std(1).mean():.3f}", flush=True)
    if "mnist" in model.names and "svhn" in model.names:
        polarity_switch(model, clfs, batch, labels)


if __name__ == "__main__":
    main()
