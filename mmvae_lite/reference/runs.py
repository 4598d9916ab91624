"""Runs made into shipped models: the time-to-coherence (CUB: time-to-captions) curve of a run's
snapshots, the chain of warm starts a run's training time includes, the deterministic check a
shipped model's test re-computes, and :func:`export_run`, which evaluates a finished CLI run and
ships it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from ..checkpoint import snapshots
from ..config import Config, build_model
from .registry import PathLike, PretrainedError, export


def load_run(checkpoint: PathLike) -> tuple[Config, torch.nn.Module, dict[str, Any]]:
    """A run's checkpoint or epoch snapshot (written by the CLI) as ``(config, model in eval mode, state)``."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or not state.get("config"):
        raise PretrainedError(f"{checkpoint} is not a trainer checkpoint with its config (written by the CLI)")
    cfg = Config(**state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return cfg, model.eval(), state


def _rounded(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` whose floating-point parameters went through ``dtype`` and back."""
    import copy
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for t in list(clone.parameters()) + list(clone.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(dtype).to(t.dtype))
    return clone


CHECK_N = {"mnist-svhn": 1000, "cub-features": 500}
"""Default size of a shipped model's check: test pairs (MNIST-SVHN) or test images (CUB); a record
that holds ``check_n`` (every export since it was recorded) uses its own."""


CURVE_KEY = {"mnist-svhn": "time_to_coherence", "cub-features": "time_to_captions"}
"""The ``metrics.json`` key of each experiment's curve over a run's snapshots."""


def check_coherence(model: torch.nn.Module, test: Any, *, n: int = CHECK_N["mnist-svhn"],
                    root: Optional[PathLike] = None) -> dict[str, float]:
    """Coherence on the first ``n`` test pairs with seed 0: the deterministic number a shipped
    model's test re-computes (``metrics.json["check"]``)."""
    from ..evaluation import coherence, get_digit_classifier
    clfs = {m: get_digit_classifier(m, root, progress=False, verbose=False) for m in model.names}
    return {k: round(float(v), 4) for k, v in
            coherence(model, test, clfs, n_joint=n, max_examples=n, seed=0, progress=False).items()}


def check_captions(model: torch.nn.Module, test: Any, *, n: int = CHECK_N["cub-features"]) -> dict[str, float]:
    """Caption scores of the first ``n`` test images with seed 0 (CUB stand-in): the deterministic
    numbers a shipped CUB model's test re-computes (``metrics.json["check"]``)."""
    from ..evaluation import image_caption_scores
    got = image_caption_scores(model, test, n_images=n, seed=0)
    return {k: round(float(got[k]), 4) for k in ("described", "with_claims", "claim_accuracy")}


def _standin_mode(record: Optional[dict[str, Any]]) -> str:
    """The stand-in policy that loads the data a model was evaluated on at export (``record["data"]``:
    field -> ``"real"``/``"standin"``): a model measured on stand-in SVHN is re-checked on the stand-in
    even where the real files exist, and one measured on real data never silently on a stand-in."""
    kinds = set((record or {}).get("data", {}).values())
    if not kinds:
        return "auto"   # records written before the data were recorded
    return "always" if "standin" in kinds else "never"


def recheck(model: torch.nn.Module, *, root: Optional[PathLike] = None,
            record: Optional[dict[str, Any]] = None) -> dict[str, float]:
    """Re-compute a shipped model's ``check`` (its experiment's deterministic numbers) on the test
    data found in ``root``: coherence on MNIST-SVHN, caption scores on the CUB stand-in. With the
    model's ``record`` (:func:`pretrained_record`), the same data (real or stand-in) as at export."""
    from ..data import experiment_data
    cfg: Config = model.config
    _, test, _ = experiment_data(cfg.replace(test_subset=None, train_subset=1), root=root, verbose=False,
                                 standin=_standin_mode(record))
    n = int((record or {}).get("check_n") or CHECK_N.get(cfg.experiment, 1000))
    if cfg.experiment == "mnist-svhn":
        return check_coherence(model, test, n=n, root=root)
    if cfg.experiment == "cub-features":
        return check_captions(model, test, n=n)
    raise PretrainedError(f"no check is defined for {cfg.experiment!r} models")


def _find_init(init: str, run_dir: Optional[PathLike]) -> Path:
    """Where ``--init-from init`` is now. The path is stored as typed, relative to the folder ``train``
    ran from; that folder is the working directory or, when ``run_dir`` is given, one of its parents."""
    path = Path(init)
    if path.exists() or path.is_absolute() or run_dir is None:
        return path
    return next((p / path for p in Path(run_dir).resolve().parents if (p / path).exists()), path)


def warm_start_chain(cfg: Config, run_dir: Optional[PathLike] = None) -> list[dict[str, Any]]:
    """The runs whose weights a run started from (``cfg.init_from``, then theirs...), oldest first:
    ``{"checkpoint", "command", "epochs", "pairs", "train_seconds", "config"}`` each. Empty for a run
    from scratch. ``run_dir`` (the run's folder) lets relative ``--init-from`` paths be found from
    another working directory. A run started from a shipped model (``--init-from results/<name>``)
    takes the chain before it from that model's ``metrics.json``, and the model's entry carries its
    curve rows (``time_to_coherence`` or ``time_to_captions``, :data:`CURVE_KEY`)."""
    from ..checkpoint import read_start
    chain: list[dict[str, Any]] = []
    init, seen = cfg.init_from, set()
    while init:
        path = _find_init(init, run_dir)
        if path.resolve() in seen:
            raise PretrainedError(f"the runs started from one another in a cycle (--init-from {init} again)")
        seen.add(path.resolve())
        if not path.exists():
            raise PretrainedError(f"the run started from {init} (--init-from), which is not here: its training "
                                  f"time and pairs belong to this run's record")
        state = read_start(path)
        saved = state.get("config") or {}
        shipped = state.get("shipped")
        if shipped is not None:   # a shipped model: its record holds the runs it came from
            chain[:0] = list(shipped.get("warm_started_from") or []) + [{
                "checkpoint": str(init), "command": shipped.get("command"), "epochs": int(state["epoch"]),
                "pairs": _pairs(int(state["epoch"]), saved.get("train_subset")),
                "train_seconds": shipped.get("train_seconds", round(sum(r["seconds"] for r in state["history"]), 1)),
                "config": saved, "exported_at_commit": shipped.get("git_commit"),
                "sha256": {f["name"]: f["sha256"] for f in shipped.get("files") or []},   # which release it was
                **{k: shipped.get(k) or [] for k in CURVE_KEY.values()}}]
            break
        cmd = path.parent / "command.txt"   # the commands that trained it, when its run folder is beside it
        chain.insert(0, {"checkpoint": str(init), "command": cmd.read_text().strip() if cmd.is_file() else None,
                         "epochs": int(state["epoch"]),
                         "pairs": _pairs(int(state["epoch"]), saved.get("train_subset")),
                         "train_seconds": round(sum(r["seconds"] for r in state["history"]), 1), "config": saved})
        init = saved.get("init_from")
    return chain


def _pairs(epochs: int, train_subset: Optional[int]) -> Optional[int]:
    """Pairs seen in ``epochs`` epochs of ``train_subset`` pairs; None for all the pairs (the count
    is the dataset's size, which the config does not record)."""
    return epochs * int(train_subset) if train_subset else None


def _total(values: Any) -> Optional[float]:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def coherence_curve(run_dir: PathLike, *, n: int = 1000, n_joint: int = 1000, root: Optional[PathLike] = None,
                    progress: bool = False) -> list[dict[str, Any]]:
    """Coherence of every ``epochNN.pt`` snapshot in ``run_dir`` against cumulative training seconds.

    This is the "time to coherence" of a recipe: what a reader training on a laptop gets for each
    minute of training. MNIST-SVHN only (the digit classifiers define coherence; for the CUB
    stand-in see :func:`caption_curve`). A warm-started run (``--init-from``) counts the seconds and
    pairs of the runs it started from, and their snapshots (when their folders hold ``epochNN.pt``)
    come first in the curve.
    """
    from ..evaluation import coherence, get_digit_classifier
    clfs: dict[str, Any] = {}

    def score(model: torch.nn.Module, test: Any) -> dict[str, float]:
        if not clfs:
            clfs.update({m: get_digit_classifier(m, root, progress=progress, verbose=False) for m in ("mnist", "svhn")})
        return coherence(model, test, clfs, n_joint=n_joint, max_examples=n, seed=0, progress=progress)

    return _snapshot_curve(run_dir, "mnist-svhn", score, root=root)


def caption_curve(run_dir: PathLike, *, n: int = CHECK_N["cub-features"], root: Optional[PathLike] = None
                  ) -> list[dict[str, Any]]:
    """The CUB stand-in's "time to captions": :func:`check_captions` (captions written for the first
    ``n`` test images, scored against their birds' attributes) of every ``epochNN.pt`` snapshot in
    ``run_dir`` against cumulative training seconds, warm starts counted as in :func:`coherence_curve`."""
    return _snapshot_curve(run_dir, "cub-features", lambda model, test: check_captions(model, test, n=n), root=root)


def _snapshot_curve(run_dir: PathLike, experiment: str, score: Any, *, root: Optional[PathLike]
                    ) -> list[dict[str, Any]]:
    """``score(model, test)`` of every snapshot of a run (and of the runs it was warm-started from)."""
    from ..data import experiment_data
    key = CURVE_KEY[experiment]
    rows: list[dict[str, Any]] = []
    test = offset = None
    for snap in snapshots(run_dir):
        cfg, model, state = load_run(snap)
        if cfg.experiment != experiment:
            raise PretrainedError(f"this curve needs a {experiment} run; {snap} is a {cfg.experiment} run")
        if offset is None:
            chain = warm_start_chain(cfg, run_dir)
            offset = {"seconds": sum(c["train_seconds"] for c in chain), "pairs": _total(c["pairs"] for c in chain)}
            if chain and key in chain[-1]:   # a shipped model's curve, as it recorded it
                rows = list(chain[-1][key])
            elif chain:   # the earlier run's snapshots up to the one this run started from
                earlier = _find_init(chain[-1]["checkpoint"], run_dir).parent
                rows = [r for r in _snapshot_curve(earlier, experiment, score, root=root)
                        if r["epoch"] <= chain[-1]["epochs"]]
        if test is None:
            _, test, _ = experiment_data(cfg.replace(test_subset=None, train_subset=1), root=root, verbose=False)
        seconds = sum(r["seconds"] for r in state["history"]) + offset["seconds"]
        got = score(model, test)
        rows.append({"run": Path(run_dir).name, "K": cfg.K, "batch_size": cfg.batch_size, "lr": cfg.lr,
                     "warmup_steps": cfg.warmup_steps, "epoch": int(state["epoch"]),
                     "pairs_seen": _total([_pairs(int(state["epoch"]), cfg.train_subset), offset["pairs"]]),
                     "train_seconds": round(seconds, 1), **{k: round(float(v), 4) for k, v in got.items()}})
    return rows


def training_summary(record: dict[str, Any]) -> str:
    """A shipped model's training as text (its ``metrics.json``, :func:`pretrained_record`): one line
    per stage, earlier runs first, with its epochs, minutes and command(s), then the time in all and
    where the last stage ran."""
    stages = [*record.get("warm_started_from", []), record]
    lines = []
    for i, stage in enumerate(stages, 1):
        epochs = int(stage.get("epochs", 0))
        command = str(stage.get("command") or "(command not recorded)").replace("\n", "\n    ")
        lines.append(f"stage {i} ({epochs} epoch{'' if epochs == 1 else 's'}, {stage['train_seconds'] / 60:.0f} min): "
                     f"{command}")
    total = record.get("train_seconds_total", record["train_seconds"])
    lines.append(f"training time {total / 60:.0f} min in all (last stage on {record.get('machine', '?')}, "
                 f"torch {record.get('torch', '?')}, exported at commit {str(record.get('git_commit'))[:10]})")
    return "\n".join(lines)


def _machine() -> str:
    """``"<cpu model>, <n> cores"`` (or the CUDA device): where a shipped model was evaluated."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = ""
    try:
        name = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    except OSError:
        pass
    import platform
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def export_run(run_dir: PathLike, name: str, out: PathLike = "results", *, n_coherence: int = 5000,
               n_joint: int = 5000, root: Optional[PathLike] = None, command: Optional[str] = None,
               progress: bool = True, check_n: Optional[int] = None,
               evaluation: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Evaluate a finished CLI run and ship it as ``out/<name>/`` (the reference models' path).

    MNIST-SVHN: coherence on ``n_coherence`` test pairs with the float32 weights and with the
    weights rounded to float16; float16 is shipped when every coherence number stays within 0.5
    points, else float32. Also writes ``history.json``, ``metrics.json`` (command, commit, config,
    machine, train seconds, metrics of both precisions, the time-to-coherence curve of the run's
    ``epochNN.pt`` snapshots when present) and a cross-generation figure. CUB stand-in features:
    CCA coherence (Table 4) and the scores of the captions written for every test image
    (:func:`mmvae_lite.evaluation.image_caption_scores`), float16 when they move by at most 0.5
    points.

    ``check_n``: the test pairs (CUB: images) of the deterministic check that the shipped model's
    test re-computes (``metrics.json["check"]``, its size in ``["check_n"]``; default
    :data:`CHECK_N`) and of each point of the time-to-coherence curve. ``evaluation``: keyword
    arguments that override the sizes of the experiment's tables
    (:func:`~mmvae_lite.evaluation.evaluate_mnist_svhn`, :func:`~mmvae_lite.evaluation.evaluate_cub`),
    e.g. for a small export in a test.
    """
    import subprocess
    import sys
    from ..data import experiment_data
    from ..evaluation.reports import flat_table
    run_dir = Path(run_dir)
    cfg, model, state = load_run(run_dir / "checkpoint.pt")
    record: dict[str, Any] = {"name": name, "run": run_dir.name, "config": cfg.to_dict(),
                              "epochs": int(state["epoch"]), "steps": int(state["step"]),
                              "train_seconds": round(sum(r["seconds"] for r in state["history"]), 1),
                              "history": state["history"], "export_command": command or " ".join(sys.argv)}
    chain = warm_start_chain(cfg, run_dir)
    if chain:   # a warm start: the training its weights had before this run counts too
        record["warm_started_from"] = [{k: v for k, v in c.items() if k not in CURVE_KEY.values()} for c in chain]
        record["train_seconds_total"] = round(record["train_seconds"] + sum(c["train_seconds"] for c in chain), 1)
    cmd_file = run_dir / "command.txt"
    if cmd_file.exists():   # every command that trained the run (a resumed run has several)
        record["command"] = cmd_file.read_text().strip()
    try:
        record["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                              timeout=10, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        record["git_commit"] = None
    record["machine"] = _machine()
    record["torch"] = torch.__version__
    dtype = torch.float16
    check_n = int(check_n or CHECK_N.get(cfg.experiment, 1000))
    record["check_n"] = check_n
    if cfg.experiment == "mnist-svhn":
        from ..evaluation import evaluate_mnist_svhn
        train, test, _ = experiment_data(cfg.replace(test_subset=None), root=root, verbose=progress)
        record["data"] = {k: src.kind for k, src in test.source.items()}   # what recheck must load again
        sizes = {"n_likelihood": 200, "K": 100, **(evaluation or {})}
        full = evaluate_mnist_svhn(model, test, train, n_coherence=n_coherence, n_joint=n_joint,
                                   root=root, progress=progress, verbose=progress, **sizes)
        half = evaluate_mnist_svhn(_rounded(model, dtype), test, None, n_coherence=n_coherence, n_joint=n_joint,
                                   likelihoods=False, root=root, progress=False, verbose=False)
        c32 = full["coherence"].iloc[0].to_dict()
        c16 = half["coherence"].iloc[0].to_dict()
        worst = max(abs(c32[k] - c16[k]) for k in c32) * 100
        dtype = torch.float16 if worst <= 0.5 else torch.float32
        record["metrics"] = {k: flat_table(df) for k, df in full.items()
                             if k in ("classifiers", "coherence", "latent_accuracy", "likelihoods")}
        record["coherence_float16"] = c16
        record["float16_max_coherence_change_points"] = round(worst, 3)
        record["n_coherence"], record["n_joint"] = n_coherence, n_joint
        record["check"] = check_coherence(_rounded(model, dtype), test, n=check_n, root=root)
        if snapshots(run_dir):
            record["time_to_coherence"] = coherence_curve(run_dir, n=check_n, n_joint=check_n, root=root,
                                                          progress=False)
    elif cfg.experiment == "cub-features":
        from ..evaluation import evaluate_cub, image_caption_scores
        train, test, _ = experiment_data(cfg.replace(test_subset=None, train_subset=None), root=root,
                                         verbose=progress)
        record["data"] = {k: src.kind for k, src in test.source.items()}
        cub = evaluate_cub(model, test, train, progress=progress,
                           **{"n_train": 20000, "n_test": 5000, **(evaluation or {})})
        full = image_caption_scores(model, test)
        half = image_caption_scores(_rounded(model, dtype), test)
        worst = max(abs(full[k] - half[k]) for k in ("described", "with_claims")) * 100
        dtype = torch.float16 if worst <= 0.5 else torch.float32
        record["metrics"] = {"cca": flat_table(cub["cca"]),
                             "captions_from_images": {k: v for k, v in full.items() if k != "examples"}}
        record["caption_examples"] = full["examples"]
        record["vocab_fingerprint"] = train.vocab.fingerprint()   # vocab.json beside the weights: Vocab.load
        vocab = train.vocab
        record["captions_float16"] = {k: v for k, v in half.items() if k != "examples"}
        record["float16_max_caption_change_points"] = round(worst, 3)
        record["check"] = check_captions(_rounded(model, dtype), test, n=check_n)
        if snapshots(run_dir):
            record["time_to_captions"] = caption_curve(run_dir, n=check_n, root=root)
    folder = Path(out) / name
    extra: tuple[str, ...] = ()
    if cfg.experiment == "cub-features":   # captions are decoded with it: shipped and verified with the weights
        folder.mkdir(parents=True, exist_ok=True)
        vocab.save(folder / "vocab.json")
        extra = ("vocab.json",)
    shipped = export(model, cfg, name, out, dtype=dtype, record=record, extra_files=extra)
    record["files"] = [f.__dict__ for f in shipped]
    (folder / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
    (folder / "metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    if cfg.experiment == "mnist-svhn":
        from ..plotting import plot_cross_generation
        first = torch.stack([torch.nonzero(test.labels == d)[0, 0] for d in range(10)])   # one pair per digit
        plot_cross_generation(model, test.get_batch(first), n=10, seed=0).savefig(
            folder / "cross_generation.png", bbox_inches="tight")
    return record
