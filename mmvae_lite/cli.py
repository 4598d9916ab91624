"""Command line: ``python -m mmvae_lite train mnist-svhn --preset quick`` (see ``--help``)."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .config import PRESETS, Config, build_model, get_config
from .objectives import OBJECTIVES, get_objective


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model and checkpoint it every epoch",
                       description="Train a model of a named experiment and preset; prints the bound per epoch.")
    p.add_argument("experiment", choices=list(PRESETS), help="which experiment")
    p.add_argument("--preset", default="quick", help="quick (CPU, about a minute) or paper (the paper's run)")
    p.add_argument("--model", choices=["mmvae", "mvae", "vae"], help="override the preset's model")
    p.add_argument("--objective", choices=sorted(OBJECTIVES), help="override the preset's objective")
    p.add_argument("--gradient", choices=["dreg", "stl"],
                   help="DReG estimator (eq. 8) or the authors' effective STL gradient")
    p.add_argument("--K", type=int, help="importance samples per modality")
    p.add_argument("--scales", choices=["sum_to_d", "softplus"],
                   help="posterior scale rule (default: the experiment's; softplus = Wu & Goodman's free MVAE scales)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate (paper: 1e-3)")
    p.add_argument("--warmup-steps", type=int,
                   help="raise the learning rate linearly over this many first steps (paper: 0, none); "
                        "keeps Adam's first steps from switching off encoder units")
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--llik-scaling", metavar="NAME=W[,NAME=W]", type=_llik_scaling,
                   help="weights on each modality's log-likelihood, e.g. image=0.0156 (unnamed modalities: 1), "
                        "'auto' (the largest modality's size over each one's) or 'none' (all 1); "
                        "default: the preset's")
    p.add_argument("--train-subset", type=int, help="number of training examples (0: all)")
    p.add_argument("--test-subset", type=int, help="number of test examples (0: all)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, mps (default: cuda > mps > cpu)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--data-root", help="data directory (default: $MMVAE_LITE_DATA or ~/.cache/mmvae_lite)")
    p.add_argument("--standin", choices=["auto", "never", "always"], default="auto",
                   help="use offline stand-ins for missing datasets (auto), refuse (never), or always")
    p.add_argument("--out", default="runs", help="folder for checkpoints and histories (default: runs/)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run folder's checkpoint with the same settings (--epochs may raise the total)")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start from the model weights of another run's checkpoint.pt, or of a shipped model "
                        "(its folder, e.g. results/mnist-svhn-mmvae): a warm start, new optimiser, new settings; "
                        "the run folder gets the tag 'warm'")
    p.add_argument("--snapshots", action="store_true",
                   help="keep a copy of every epoch's checkpoint (epochNN.pt in the run folder): export then "
                        "records the run's time-to-coherence curve")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in the run folder (its checkpoint, history and metrics) instead of refusing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the evaluation after training (default: the paper's tables, written to "
                        "<run folder>/metrics.json)")
    p.add_argument("--results", metavar="DIR",
                   help="also copy metrics.json and the sample figure to DIR/<run name>/ (e.g. results/)")


def _llik_scaling(text: str) -> "str | dict[str, float]":
    """``--llik-scaling``: 'auto', 'none' (every weight 1: an empty dict), or ``modality=weight`` pairs."""
    if text.strip().lower() in ("auto", "none"):
        return {} if text.strip().lower() == "none" else "auto"
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name.strip() or not weight > 0:
            raise argparse.ArgumentTypeError(
                f"{part!r}: give modality=weight with a positive weight (e.g. image=0.0156), 'auto' or 'none'")
        out[name.strip()] = weight
    return out


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {k: v for k, v in dict(model=args.model, objective=args.objective, gradient=args.gradient, K=args.K,
                                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim,
                                        warmup_steps=getattr(args, "warmup_steps", None),
                                        scales=args.scales, seed=args.seed, device=args.device).items() if v is not None}
    for name in ("train_subset", "test_subset"):
        v = getattr(args, name)
        if v is not None:
            overrides[name] = v or None
    if getattr(args, "llik_scaling", None) is not None:
        overrides["llik_scaling"] = args.llik_scaling
    if args.bf16:
        overrides["bf16"] = True
    if getattr(args, "init_from", None):
        overrides["init_from"] = args.init_from
    if overrides.get("model") == "vae" and args.experiment in ("mnist-svhn", "cub-features", "cub-images"):
        raise SystemExit(f"error: model 'vae' needs a single-modality experiment (mnist or svhn), "
                         f"not {args.experiment!r}")
    if "model" in overrides and "objective" not in overrides and overrides["model"] == "mmvae":
        overrides["objective"] = "m_dreg_stratified"
    return get_config(args.experiment, args.preset, **overrides)


#: Config fields that name a run folder when they differ from the preset, and how they are written.
_RUN_TAGS = (("objective", str), ("gradient", str), ("K", "K{}".format), ("latent_dim", "L{}".format),
             ("lr", "lr{:g}".format), ("warmup_steps", "wu{}".format), ("scale_param", str),
             ("batch_size", "b{}".format), ("seed", "seed{}".format),
             ("train_subset", lambda v: f"n{v or 'all'}"), ("test_subset", lambda v: f"t{v or 'all'}"),
             ("llik_scaling", lambda v: "ll-" + ("auto" if v == "auto" else "none" if not v else
                                                 "-".join(f"{k}{w:g}" for k, w in sorted(v.items())))),
             ("bf16", lambda v: "bf16"), ("init_from", lambda v: "warm"))


def run_name(cfg: Config) -> str:
    """``<experiment>-<model>-<preset>``, plus a tag for each setting that differs from the preset
    (objective, gradient, K, latent size, lr, scale rule, batch size ``b``, seed, train/test subset
    ``n``/``t`` with ``all`` for every example, bf16), so e.g. the DReG and STL runs of one preset get
    separate folders: ``mnist-svhn-mmvae-paper-stl``. The epochs are not in the name: ``--resume
    --epochs N`` continues a run in its own folder."""
    name = f"{cfg.experiment}-{cfg.model}-{cfg.preset}"
    try:
        base = get_config(cfg.experiment, cfg.preset, model=cfg.model)
    except (ValueError, TypeError):
        return name
    tags = [fmt(getattr(cfg, field)) for field, fmt in _RUN_TAGS if getattr(cfg, field) != getattr(base, field)]
    return "-".join([name, *tags])


RESUME_MAY_CHANGE = ("epochs", "device", "vocab_size")
"""Config fields ``--resume`` accepts changed: the total epochs (continuing is what resume is for), the
device (where, not what), and the vocabulary size (set from the data; the checkpoint's shapes check it)."""

_RUN_FILES = ("checkpoint.pt", "history.json", "metrics.json", "samples.png")


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked (an existing run, or nothing to resume)."""


def _plain_config(cfg: Config) -> dict:
    return json.loads(json.dumps(cfg.to_dict(), default=str))


def settings_differences(saved: dict, cfg: Config) -> list[str]:
    """The fields of a saved run's config that ``cfg`` changes (but those of :data:`RESUME_MAY_CHANGE`)."""
    now = _plain_config(cfg)
    return [f"{k} (saved {saved[k]!r}, now {now[k]!r})" for k in saved
            if k in now and k not in RESUME_MAY_CHANGE and saved[k] != now[k]]


def _saved_differences(run_dir: Path, cfg: Config) -> list[str]:
    """What :func:`settings_differences` finds against the folder's ``config.json`` (none if unreadable)."""
    try:
        return settings_differences(json.loads((run_dir / "config.json").read_text()), cfg)
    except (OSError, ValueError):
        return []


def _other_runs(run_dir: Path, cfg: Config) -> str:
    """A hint naming the runs of the same experiment, model and preset in the output folder, and what differs."""
    prefix = f"{cfg.experiment}-{cfg.model}-{cfg.preset}"
    hints = []
    parent = run_dir.parent
    for d in sorted(parent.glob(f"{prefix}*")) if parent.is_dir() else []:
        if d == run_dir or not (d / "checkpoint.pt").exists():
            continue
        try:
            saved = json.loads((d / "config.json").read_text())
            differ = settings_differences(saved, cfg)
            hints.append(f"{d.name} (differs in {', '.join(x.split(' (')[0] for x in differ) or 'epochs only'})")
        except (OSError, ValueError):
            hints.append(d.name)
    return f". Runs of {prefix} in {parent}: {'; '.join(hints[:5])}" if hints else ""


def prepare_run_folder(run_dir: Path, cfg: Config, *, resume: bool, overwrite: bool) -> Optional[int]:
    """Check that the run folder may be used as asked; returns the checkpoint's epoch when resuming.

    Without ``resume`` a folder that holds a run (a checkpoint, history or metrics) is refused unless
    ``overwrite`` (which then deletes those files). With ``resume`` the checkpoint must exist, its
    settings (``config.json``, else the checkpoint's config) must equal ``cfg`` but for
    :data:`RESUME_MAY_CHANGE`, and ``cfg.epochs`` must not be below the checkpoint's epoch.
    """
    from .checkpoint import CheckpointError, read_checkpoint, snapshots
    ckpt = run_dir / "checkpoint.pt"
    if resume:
        if overwrite:
            raise RunFolderError("--resume continues a run and --overwrite replaces it: give one of them")
        if not ckpt.exists():
            what = "folder" if not run_dir.exists() else "checkpoint"
            raise RunFolderError(f"--resume: no checkpoint at {ckpt} (no such {what}); nothing to resume. "
                                 f"Start the run without --resume, or check --out and the settings that name the "
                                 f"folder{_other_runs(run_dir, cfg)}")
        try:
            state = read_checkpoint(ckpt)
        except (CheckpointError, OSError) as e:
            raise RunFolderError(f"--resume: {e}") from None
        cfg_file = run_dir / "config.json"
        try:
            saved = json.loads(cfg_file.read_text()) if cfg_file.exists() else dict(state.get("config") or {})
        except (OSError, ValueError) as e:
            raise RunFolderError(f"--resume: {cfg_file} is not readable JSON ({e})") from None
        differ = settings_differences(saved, cfg)
        if differ:
            raise RunFolderError(f"--resume: the run in {run_dir} was made with other settings: {'; '.join(differ)}. "
                                 f"Resume with the saved settings (only --epochs may change), or start a new run "
                                 f"(--overwrite replaces this one, --out DIR writes elsewhere)")
        epoch = int(state["epoch"])
        if cfg.epochs < epoch:
            raise RunFolderError(f"--resume: the checkpoint is at epoch {epoch}, past --epochs {cfg.epochs}; "
                                 f"give --epochs {epoch} or more")
        if saved.get("device") != cfg.device:
            print(f"note: resuming on device {cfg.device or 'auto'} (the run was started with {saved.get('device') or 'auto'})")
        return epoch
    existing = [f for f in _RUN_FILES if (run_dir / f).exists()]
    existing += [p.name for p in snapshots(run_dir)]   # --snapshots of the run
    if existing and not overwrite:
        detail = ""
        if ckpt.exists():
            try:
                detail = f" (checkpoint at epoch {int(read_checkpoint(ckpt)['epoch'])}"
            except (CheckpointError, OSError):
                detail = " (an unreadable checkpoint"
            detail += ", finished and evaluated)" if (run_dir / "metrics.json").exists() else ")"
        differ = _saved_differences(run_dir, cfg)
        if differ:   # settings the folder name does not spell out (e.g. which --init-from): resume cannot help
            raise RunFolderError(f"{run_dir} already holds a run{detail} made with other settings: "
                                 f"{'; '.join(differ)}. Write this one elsewhere with --out DIR, or replace that "
                                 f"one with --overwrite")
        raise RunFolderError(f"{run_dir} already holds a run{detail}: {', '.join(existing)}. Continue it with --resume "
                             f"(--epochs N to train longer), replace it with --overwrite, or write elsewhere "
                             f"with --out DIR")
    for f in existing:
        (run_dir / f).unlink()
    if existing:
        print(f"overwriting the run in {run_dir} (removed {', '.join(existing)})")
    return None


def run_train(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .training import Trainer, select_device
    try:
        cfg = config_from_args(args)
        select_device(cfg.device)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(args.out) / run_name(cfg)
    if cfg.init_from and not args.resume:   # a wrong --init-from fails before data loading and the run folder
        from .checkpoint import config_differences, read_start
        try:
            problems = config_differences(read_start(cfg.init_from), cfg.to_dict())
            if problems:
                raise CheckpointError(f"{cfg.init_from} cannot start this run: " + "; ".join(problems))
        except (CheckpointError, OSError) as e:
            print(f"error: --init-from: {e}", file=sys.stderr)
            return 2
    try:
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise RunFolderError(f"--out {args.out} is a file; give a folder for the runs")
        prepare_run_folder(run_dir, cfg, resume=args.resume, overwrite=args.overwrite)
    except RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from . import data

    try:
        train, test, cfg = data.experiment_data(cfg, root=args.data_root, standin=args.standin)
    except getattr(data, "DataError", RuntimeError) as e:   # missing/corrupt files: the message says what to do
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = build_model(cfg)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create the run folder {run_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    eval_fn = {"m_dreg_stratified": "m_iwae_stratified", "m_dreg_mixture": "m_iwae_mixture", "dreg": "iwae"}
    trainer = Trainer(model, get_objective(cfg.objective, cfg.gradient), K=cfg.K, lr=cfg.lr, amsgrad=cfg.amsgrad,
                      warmup_steps=cfg.warmup_steps,
                      batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, bf16=cfg.bf16,
                      eval_objective=get_objective(eval_fn.get(cfg.objective, cfg.objective)), eval_K=cfg.eval_K,
                      progress=not args.no_progress, checkpoint=run_dir / "checkpoint.pt", config=cfg.to_dict(),
                      snapshots=args.snapshots)
    if cfg.init_from and not args.resume:
        from .checkpoint import warm_start
        try:
            init = warm_start(model, cfg.init_from, cfg.to_dict())
        except (CheckpointError, OSError) as e:
            print(f"error: --init-from: {e}", file=sys.stderr)
            return 2
        print(f"model weights from {cfg.init_from} (after {init['epoch']} epochs of its run; a fresh optimiser)")
    if args.resume:
        try:
            trainer.load(run_dir / "checkpoint.pt")
        except (CheckpointError, OSError) as e:
            print(f"error: --resume: {e}", file=sys.stderr)
            return 2
        print(f"resumed from {run_dir / 'checkpoint.pt'} at epoch {trainer.epoch}")
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    with open(run_dir / "command.txt", "a") as f:   # every command that trained this run, in order
        f.write("python -m mmvae_lite " + " ".join(getattr(args, "argv", None) or sys.argv[1:])
                + f"   # git commit {_git_commit() or 'unknown'}\n")
    print(f"training {cfg.model} on {cfg.experiment} ({cfg.preset} preset): objective {cfg.objective} "
          f"[{cfg.gradient}], K={cfg.K}, batch {cfg.batch_size}, {cfg.epochs} epochs, device {trainer.device}")
    t0 = time.perf_counter()
    history = trainer.fit(train, cfg.epochs, test)
    train_s = time.perf_counter() - t0
    (run_dir / "history.json").write_text(json.dumps(history.to_dicts(), indent=2))
    print(f"trained in {train_s:.1f} s; checkpoint {run_dir / 'checkpoint.pt'}")
    if args.no_eval:
        return 0
    t1 = time.perf_counter()
    metrics, figure = evaluate_run(model, cfg, train, test, progress=not args.no_progress, root=args.data_root)
    eval_s = time.perf_counter() - t1
    record = run_record(cfg, trainer, history, train, test, metrics, train_s=train_s, eval_s=eval_s,
                        argv=getattr(args, "argv", None))
    (run_dir / "metrics.json").write_text(json.dumps(record, indent=2, default=str))
    if figure is not None:
        figure.savefig(run_dir / "samples.png", bbox_inches="tight")
    for table, values in metrics.items():
        print(f"{table}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in values.items()))
    print(f"evaluated in {eval_s:.1f} s; metrics in {run_dir / 'metrics.json'}")
    if args.results:
        dest = Path(args.results) / run_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / "metrics.json", dest / "metrics.json")
        if figure is not None:
            shutil.copy2(run_dir / "samples.png", dest / "samples.png")
        print(f"results copied to {dest}")
    return 0


def evaluate_run(model, cfg: Config, train, test, *, progress: bool = True, root=None):
    """The paper's tables for a trained model (quick sizes for the quick preset) and a sample figure."""
    from . import evaluation, plotting
    from .evaluation.reports import flat_table
    quick = cfg.preset != "paper"
    if cfg.experiment == "mnist-svhn":
        out = evaluation.evaluate_mnist_svhn(model, test, train, quick=quick, root=root, progress=progress)
        metrics = {name: flat_table(out[name]) for name in ("classifiers", "coherence", "latent_accuracy", "likelihoods")
                   if name in out}
        batch = next(iter(evaluation.iterate_examples(test, 8, names=model.names)))[0]
        return metrics, plotting.plot_cross_generation(model, batch)
    if cfg.experiment.startswith("cub"):
        out = evaluation.evaluate_cub(model, test, train, quick=quick, progress=progress)
        return {"cca": flat_table(out["cca"])}, None
    from .objectives import get_objective
    from .training import Trainer
    bound = Trainer(model, get_objective("iwae"), K=cfg.eval_K, progress=False, verbose=False).evaluate(test)
    return {"likelihoods": {f"iwae_{cfg.eval_K}": float(bound)}}, None


def run_record(cfg: Config, trainer, history, train, test, metrics: dict, *, train_s: float, eval_s: float,
               argv=None) -> dict:
    """What ``results/<run>/metrics.json`` holds: command, config, device, data, commit, times, metrics."""
    import platform
    import subprocess

    import torch
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    dev = trainer.device
    device = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{dev.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    source = getattr(train, "source", None)
    data = ({k: str(getattr(v, "kind", v)) for k, v in source.items()} if isinstance(source, dict) else str(source))
    return {"command": "python -m mmvae_lite " + " ".join(argv if argv is not None else sys.argv[1:]),
            "config": cfg.to_dict(), "device": device, "torch": torch.__version__, "data": data,
            "train_pairs": len(train), "test_pairs": len(test), "git_commit": commit,
            "seconds": {"train": round(train_s, 1), "evaluate": round(eval_s, 1)},
            "history": history.to_dicts(), "metrics": metrics}


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="evaluate a finished run and ship it as a reference model (results/<name>/)",
                       description="Evaluate a run folder's checkpoint (coherence on 5000 test pairs, float16 "
                                   "check, time-to-coherence of its epochNN.pt snapshots) and write "
                                   "OUT/NAME/: weights, config, history, metrics, figure; registers the sha256.")
    p.add_argument("run", help="run folder written by `train` (holds checkpoint.pt)")
    p.add_argument("--name", required=True, help="name of the shipped model, e.g. mnist-svhn-mmvae")
    p.add_argument("--out", default="results", help="where to write NAME/ (default: results/)")
    p.add_argument("--data-root", help="data directory (default: $MMVAE_LITE_DATA or ~/.cache/mmvae_lite)")
    p.add_argument("--n-coherence", type=int, default=5000, help="test pairs for coherence (default 5000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _git_commit() -> Optional[str]:
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _portable_command(argv: Sequence[str], run: str) -> str:
    """The command line as recorded in shipped files: the run folder by its name, never by a path
    of the machine it was exported on."""
    shown = str(Path("runs") / Path(run).name)
    return "python -m mmvae_lite " + " ".join(shown if a == run else a for a in argv)


def run_export(args: argparse.Namespace) -> int:
    from .reference import PretrainedError, export_run
    if not (Path(args.run) / "checkpoint.pt").is_file():
        print(f"error: no checkpoint.pt in {args.run}: give the folder of a `train` run", file=sys.stderr)
        return 2
    try:
        record = export_run(args.run, args.name, args.out, n_coherence=args.n_coherence, n_joint=args.n_coherence,
                            root=args.data_root, progress=not args.no_progress,
                            command=_portable_command(args.argv, args.run))
    except PretrainedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key in ("coherence", "latent_accuracy"):
        if key in record.get("metrics", {}):
            print(f"{key}: " + ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"][key].items()
                                          if isinstance(v, float)))
    print(f"shipped {args.name} to {Path(args.out) / args.name}: "
          + ", ".join(f"{f['name']} ({f['bytes'] / 2 ** 20:.1f} MiB)" for f in record["files"]))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmvae_lite",
                                     description="mmvae_lite: multimodal VAEs (MMVAE, MVAE) of Shi et al. (2019)")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _export_parser(sub)
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.command == "train":
        return run_train(args)
    if args.command == "export":
        return run_export(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
