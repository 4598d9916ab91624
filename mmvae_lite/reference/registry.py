"""The shipped weights: their registry (files and sha256, ``mmvae_lite/reference_models.json``),
finding them (checkout, cache, download), loading them, and :func:`export`, which writes a model's
weights (float16 by default, in files of at most ``max_file_mb``) with its config and record and
registers their checksums. The search order and why the registry lives in the package: see
:mod:`mmvae_lite.reference`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch

from ..checkpoint import SHIPPED_FORMAT
from ..config import Config, build_model
from ..data.files import digest

if TYPE_CHECKING:
    from ..data import Vocab

PathLike = Union[str, "os.PathLike[str]"]

WEIGHTS_FORMAT = SHIPPED_FORMAT   # read_start (a warm start from a shipped model) knows it too
WEIGHTS_VERSION = 1
REGISTRY_FILE = Path(__file__).parents[1] / "reference_models.json"   # mmvae_lite/, shipped as package data
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
    return Path(__file__).resolve().parents[2] / "results"


def _cache_dir(name: str, root: Optional[PathLike]) -> Path:
    from ..data import data_root
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
    from ..data import downloads_enabled, fetch_file
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
    from ..data import Vocab
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
