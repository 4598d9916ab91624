"""Shipped reference models: trained by the package's own CLI, stored under ``results/<name>/``.

``ml.pretrained("mnist-svhn-mmvae")`` returns the trained model, ready to evaluate or plot.
The weights are looked for, in this order,

1. in the checkout the package runs from (``results/<name>/`` beside ``mmvae_lite/``),
2. in the data directory's cache (``<data dir>/pretrained/<name>/``),
3. on the project's repository, downloaded into that cache (unless downloads are off),

and every file is checked against the sha256 recorded in the registry before it is read,
so a truncated or altered file is never loaded. The registry lives inside the package
(``reference_models.json``) so that a ``pip install``-ed copy without the checkout (Colab) knows what
to download and how to check it.

:func:`export` turns a finished CLI run folder (``runs/<run>/``) into such a folder: the model's
weights (float16 by default, split into files of at most ``max_file_mb``), its config, the
per-epoch history, metrics and the command, and records the files in the registry.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch

from .config import Config, build_model
from .data.files import digest

if TYPE_CHECKING:
    from .data import Vocab

PathLike = Union[str, "os.PathLike[str]"]

WEIGHTS_FORMAT = "mmvae_lite/weights"
WEIGHTS_VERSION = 1
REGISTRY_FILE = Path(__file__).with_name("reference_models.json")
#: Where a package installed without the checkout downloads shipped files from
#: (``<base>/<name>/<file>``); ``$MMVAE_LITE_WEIGHTS_URL`` overrides it (e.g. a mirror).
BASE_URL = "https://raw.githubusercontent.com/mmvae-lite/mmvae_lite/main/results"
URL_ENV = "MMVAE_LITE_WEIGHTS_URL"


class PretrainedError(RuntimeError):
    """A shipped model is unknown, missing, or its files do not match their checksums."""


@dataclass(frozen=True)
class ShippedFile:
    name: str
    sha256: str
    bytes: int


def _registry() -> dict[str, dict[str, Any]]:
    if not REGISTRY_FILE.exists():
        return {}
    return json.loads(REGISTRY_FILE.read_text())


def available() -> list[str]:
    """Names of the shipped models, e.g. ``["mnist-svhn-mmvae", ...]``."""
    return sorted(_registry())


def _entry(name: str) -> dict[str, Any]:
    reg = _registry()
    if name not in reg:
        raise PretrainedError(f"no shipped model named {name!r}; available: {sorted(reg) or 'none yet'}")
    return reg[name]


def _files(name: str) -> list[ShippedFile]:
    return [ShippedFile(**f) for f in _entry(name)["files"]]


def checkout_dir() -> Path:
    """``results/`` of the checkout this package runs from (it may not exist)."""
    return Path(__file__).resolve().parent.parent / "results"


def _cache_dir(name: str, root: Optional[PathLike]) -> Path:
    from .data import data_root
    return Path(data_root(root)) / "pretrained" / name


def _matches(path: Path, f: ShippedFile) -> bool:
    return path.is_file() and path.stat().st_size == f.bytes and digest(path, "sha256") == f.sha256


def locate(name: str, *, root: Optional[PathLike] = None, download: Optional[bool] = None,
           progress: bool = True) -> Path:
    """The folder holding ``name``'s verified files: the checkout, the cache, or a fresh download.

    Raises:
        PretrainedError: naming the missing or corrupt file, its expected sha256 and how to get it.
    """
    files = _files(name)
    candidates = [checkout_dir() / name, _cache_dir(name, root)]
    bad: list[str] = []
    for folder in candidates:
        present = [folder / f.name for f in files]
        if all(p.is_file() for p in present):
            wrong = [f for f, p in zip(files, present) if not _matches(p, f)]
            if not wrong:
                return folder
            bad += [f"{folder / f.name} (expected sha256 {f.sha256}, {f.bytes} bytes)" for f in wrong]
    if bad:
        raise PretrainedError(f"shipped model {name!r}: file(s) do not match their checksums: {'; '.join(bad)}. "
                              f"Restore them with `git checkout -- results/{name}` or delete them to re-download.")
    dest = _cache_dir(name, root)
    base = os.environ.get(URL_ENV, BASE_URL).rstrip("/")
    from .data import downloads_enabled, fetch_file
    if not downloads_enabled(download):
        raise PretrainedError(
            f"shipped model {name!r} is not in {candidates[0]} nor {dest}, and downloads are off. Get "
            + ", ".join(f"{f.name} (sha256 {f.sha256})" for f in files)
            + f" from {base}/{name}/ into {dest}, or run from a checkout of the repository.")
    for f in files:
        try:
            fetch_file(f"{base}/{name}/{f.name}", dest / f.name, sha256=f.sha256, progress=progress)
        except Exception as e:  # noqa: BLE001 - re-raised with what to do
            raise PretrainedError(f"shipped model {name!r}: could not download {f.name} from {base}/{name}/ "
                                  f"({e}). Run from a checkout of the repository, or set ${URL_ENV} to a "
                                  f"mirror.") from e
    return dest


def load_weights(folder: PathLike) -> tuple[Config, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, float32 state_dict and metadata of a weights folder written by :func:`export`."""
    folder = Path(folder)
    shards = sorted(folder.glob("weights*.pt"))
    if not shards:
        raise PretrainedError(f"no weights*.pt in {folder}")
    state: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for shard in shards:
        try:
            blob = torch.load(shard, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a clear message instead of torch's unpickling hints
            raise PretrainedError(f"{shard} is not a readable mmvae_lite weights file ({type(e).__name__})") from e
        if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
            raise PretrainedError(f"{shard} is not an mmvae_lite weights file (format {WEIGHTS_FORMAT!r} expected)")
        if int(blob.get("version", -1)) > WEIGHTS_VERSION:
            raise PretrainedError(f"{shard} has weights format version {blob['version']}; this mmvae_lite reads "
                                  f"up to {WEIGHTS_VERSION}: upgrade the package")
        state.update({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
        meta = {k: v for k, v in blob.items() if k != "state_dict"}
    cfg = Config(**meta["config"])
    return cfg, state, meta


def pretrained(name: str, *, device: "str | torch.device | None" = "cpu", root: Optional[PathLike] = None,
               download: Optional[bool] = None, progress: bool = True) -> torch.nn.Module:
    """A shipped reference model, e.g. ``pretrained("mnist-svhn-mmvae")``, in eval mode.

    Args:
        name: one of :func:`available`.
        device: where to put the model (default CPU).
        root: the data directory whose ``pretrained/`` cache is used (default: the usual rules).
        download: allow a download when the files are not found locally (default: unless
            ``$MMVAE_LITE_OFFLINE`` is set).
    """
    folder = locate(name, root=root, download=download, progress=progress)
    cfg, state, _ = load_weights(folder)
    model = build_model(cfg)
    model.load_state_dict(state)
    model.config = cfg
    return model.to(device).eval()


def pretrained_config(name: str, **kwargs: Any) -> Config:
    """The config a shipped model was trained with (without loading the weights)."""
    return load_weights(locate(name, **kwargs))[0]


def pretrained_vocab(name: str, **kwargs: Any) -> "Vocab":
    """The caption vocabulary a shipped caption model (CUB) was trained with, verified like its weights.

    Decode its sentences with it (``vocab.decode(ids)``); ``Vocab.check_compatible`` tells whether
    data built elsewhere index words the same way.
    """
    from .data import Vocab
    if "vocab.json" not in {f.name for f in _files(name)}:
        raise PretrainedError(f"shipped model {name!r} has no vocabulary: it is not a caption model")
    return Vocab.load(locate(name, **kwargs) / "vocab.json")


def pretrained_record(name: str, **kwargs: Any) -> dict[str, Any]:
    """``metrics.json`` of a shipped model: command, config, history, metrics, commit, times, machine."""
    folder = locate(name, **kwargs)
    path = folder / "metrics.json"
    if not path.exists():
        path = checkout_dir() / name / "metrics.json"
    if not path.exists():
        raise PretrainedError(f"no metrics.json for {name!r} (looked in {folder})")
    return json.loads(path.read_text())


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    out: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        b = v.numel() * v.element_size()
        if b > max_bytes:
            raise ValueError(f"tensor {k!r} alone is {b / 2 ** 20:.2f} MiB, over the per-file limit of "
                             f"{max_bytes / 2 ** 20:.2f} MiB: raise max_file_mb")
        if out[-1] and size + b > max_bytes:
            out.append({})
            size = 0
        out[-1][k] = v
        size += b
    return out


def export(model: torch.nn.Module, cfg: Config, name: str, out: PathLike, *, dtype: torch.dtype = torch.float16,
           max_file_mb: float = 7.5, record: Optional[dict[str, Any]] = None, register: bool = True,
           extra_files: Sequence[str] = ()) -> list[ShippedFile]:
    """Write ``model``'s weights to ``out/<name>/weights*.pt`` (``dtype``, files <= ``max_file_mb``).

    ``record`` (the CLI's ``metrics.json`` content) is written beside them. With ``register``
    the files' sha256 are recorded in the package's registry (``mmvae_lite/reference_models.json``),
    with those of ``extra_files``: files the model needs that the caller wrote into ``out/<name>/``
    first (a caption model's ``vocab.json``), so that they are downloaded and verified with it.
    """
    folder = Path(out) / name
    missing = [f for f in extra_files if not (folder / f).is_file()]
    if missing:   # before anything is written: no half-exported folder
        raise FileNotFoundError(f"{[str(folder / f) for f in missing]} (named in extra_files) do not exist: "
                                f"write them before export")
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().clone()
             for k, v in model.state_dict().items()}
    shards = _shards(state, int(max_file_mb * 2 ** 20))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("weights*.pt"):
        old.unlink()
    names: list[str] = []
    for i, shard in enumerate(shards):
        fname = "weights.pt" if len(shards) == 1 else f"weights-{i + 1:02d}-of-{len(shards):02d}.pt"
        blob = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "name": name, "config": cfg.to_dict(),
                "dtype": str(dtype).replace("torch.", ""), "state_dict": shard}
        torch.save(blob, folder / fname)
        names.append(fname)
    shipped = [ShippedFile(f, digest(folder / f, "sha256"), (folder / f).stat().st_size)
               for f in [*names, *extra_files]]
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")
    if record is not None:
        (folder / "metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    if register:
        reg = _registry()
        reg[name] = {"files": [f.__dict__ for f in shipped], "experiment": cfg.experiment, "model": cfg.model,
                     "preset": cfg.preset}
        REGISTRY_FILE.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    return shipped


def _load_run(checkpoint: Path) -> tuple[Config, torch.nn.Module, dict[str, Any]]:
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


def check_coherence(model: torch.nn.Module, test: Any, *, n: int = 1000, root: Optional[PathLike] = None
                    ) -> dict[str, float]:
    """Coherence on the first ``n`` test pairs with seed 0: the deterministic number a shipped
    model's test re-computes (``metrics.json["check"]``)."""
    from .evaluation import coherence, get_digit_classifier
    clfs = {m: get_digit_classifier(m, root, progress=False, verbose=False) for m in model.names}
    return {k: round(float(v), 4) for k, v in
            coherence(model, test, clfs, n_joint=n, max_examples=n, seed=0, progress=False).items()}


def check_captions(model: torch.nn.Module, test: Any, *, n: int = 500) -> dict[str, float]:
    """Caption scores of the first ``n`` test images with seed 0 (CUB stand-in): the deterministic
    numbers a shipped CUB model's test re-computes (``metrics.json["check"]``)."""
    from .evaluation import image_caption_scores
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
    from .data import experiment_data
    cfg: Config = model.config
    _, test, _ = experiment_data(cfg.replace(test_subset=None, train_subset=1), root=root, verbose=False,
                                 standin=_standin_mode(record))
    n = int((record or {}).get("check_n", 1000 if cfg.experiment == "mnist-svhn" else 500))
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
    another working directory."""
    from .checkpoint import read_checkpoint
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
        state = read_checkpoint(path)
        saved = state.get("config") or {}
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
    minute of training. MNIST-SVHN only (the digit classifiers define coherence). A warm-started run
    (``--init-from``) counts the seconds and pairs of the runs it started from, and their snapshots
    (when their folders hold ``epochNN.pt``) come first in the curve.
    """
    from .data import experiment_data
    from .evaluation import coherence, get_digit_classifier
    snaps = sorted(Path(run_dir).glob("epoch*.pt"))
    rows: list[dict[str, Any]] = []
    test = clfs = None
    offset = None
    for snap in snaps:
        cfg, model, state = _load_run(snap)
        if cfg.experiment != "mnist-svhn":
            raise PretrainedError("coherence_curve needs an mnist-svhn run")
        if offset is None:
            chain = warm_start_chain(cfg, run_dir)
            offset = {"seconds": sum(c["train_seconds"] for c in chain), "pairs": _total(c["pairs"] for c in chain)}
            if chain:   # the earlier run's snapshots up to the one this run started from
                earlier = _find_init(chain[-1]["checkpoint"], run_dir).parent
                rows = [r for r in coherence_curve(earlier, n=n, n_joint=n_joint, root=root, progress=progress)
                        if r["epoch"] <= chain[-1]["epochs"]]
        if test is None:
            _, test, _ = experiment_data(cfg.replace(test_subset=None, train_subset=1), root=root, verbose=False)
            clfs = {m: get_digit_classifier(m, root, progress=progress, verbose=False) for m in ("mnist", "svhn")}
        seconds = sum(r["seconds"] for r in state["history"]) + offset["seconds"]
        c = coherence(model, test, clfs, n_joint=n_joint, max_examples=n, seed=0, progress=progress)
        rows.append({"run": Path(run_dir).name, "K": cfg.K, "batch_size": cfg.batch_size, "lr": cfg.lr,
                     "epoch": int(state["epoch"]),
                     "pairs_seen": _total([_pairs(int(state["epoch"]), cfg.train_subset), offset["pairs"]]),
                     "train_seconds": round(seconds, 1), **{k: round(float(v), 4) for k, v in c.items()}})
    return rows


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
    test re-computes (``metrics.json["check"]``, its size in ``["check_n"]``; default 1000 pairs,
    500 images) and of each point of the time-to-coherence curve. ``evaluation``: keyword arguments that override the sizes of the
    experiment's tables (:func:`~mmvae_lite.evaluation.evaluate_mnist_svhn`,
    :func:`~mmvae_lite.evaluation.evaluate_cub`), e.g. for a small export in a test.
    """
    import subprocess
    import sys
    from .data import experiment_data
    run_dir = Path(run_dir)
    cfg, model, state = _load_run(run_dir / "checkpoint.pt")
    record: dict[str, Any] = {"name": name, "run": run_dir.name, "config": cfg.to_dict(),
                              "epochs": int(state["epoch"]), "steps": int(state["step"]),
                              "train_seconds": round(sum(r["seconds"] for r in state["history"]), 1),
                              "history": state["history"], "export_command": command or " ".join(sys.argv)}
    chain = warm_start_chain(cfg, run_dir)
    if chain:   # a warm start: the training its weights had before this run counts too
        record["warm_started_from"] = chain
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
    check_n = int(check_n or (1000 if cfg.experiment == "mnist-svhn" else 500))
    record["check_n"] = check_n
    if cfg.experiment == "mnist-svhn":
        from .evaluation import evaluate_mnist_svhn
        train, test, _ = experiment_data(cfg.replace(test_subset=None), root=root, verbose=progress)
        record["data"] = {k: src.kind for k, src in test.source.items()}   # what recheck must load again
        sizes = dict(dict(n_likelihood=200, K=100), **(evaluation or {}))
        full = evaluate_mnist_svhn(model, test, train, n_coherence=n_coherence, n_joint=n_joint,
                                   root=root, progress=progress, verbose=progress, **sizes)
        half = evaluate_mnist_svhn(_rounded(model, dtype), test, None, n_coherence=n_coherence, n_joint=n_joint,
                                   likelihoods=False, root=root, progress=False, verbose=False)
        c32 = full["coherence"].iloc[0].to_dict()
        c16 = half["coherence"].iloc[0].to_dict()
        worst = max(abs(c32[k] - c16[k]) for k in c32) * 100
        dtype = torch.float16 if worst <= 0.5 else torch.float32
        from .cli import flat_table
        record["metrics"] = {k: flat_table(df) for k, df in full.items()
                             if k in ("classifiers", "coherence", "latent_accuracy", "likelihoods")}
        record["coherence_float16"] = c16
        record["float16_max_coherence_change_points"] = round(worst, 3)
        record["n_coherence"], record["n_joint"] = n_coherence, n_joint
        record["check"] = check_coherence(_rounded(model, dtype), test, n=check_n, root=root)
        if any(Path(run_dir).glob("epoch*.pt")):
            record["time_to_coherence"] = coherence_curve(run_dir, n=check_n, n_joint=check_n, root=root,
                                                          progress=False)
    elif cfg.experiment == "cub-features":
        from .cli import flat_table
        from .evaluation import evaluate_cub, image_caption_scores
        train, test, _ = experiment_data(cfg.replace(test_subset=None, train_subset=None), root=root,
                                         verbose=progress)
        record["data"] = {k: src.kind for k, src in test.source.items()}
        cub = evaluate_cub(model, test, train, progress=progress, **dict(dict(n_train=20000, n_test=5000),
                                                                         **(evaluation or {})))
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
        from .plotting import plot_cross_generation
        first = torch.stack([torch.nonzero(test.labels == d)[0, 0] for d in range(10)])   # one pair per digit
        plot_cross_generation(model, test.get_batch(first), n=10, seed=0).savefig(
            folder / "cross_generation.png", bbox_inches="tight")
    return record


__all__ = ["pretrained", "available", "locate", "load_weights", "export", "pretrained_config",
           "pretrained_record", "pretrained_vocab", "PretrainedError", "BASE_URL", "coherence_curve", "warm_start_chain", "check_captions", "recheck", "export_run", "check_coherence"]
