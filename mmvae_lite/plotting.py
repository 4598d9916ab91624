"""Figures for the book: image grids, training curves and the plots of :mod:`mmvae_lite.evaluation`.

Every function returns a :class:`matplotlib.figure.Figure`. Figures are created with
``matplotlib.figure.Figure`` (not ``pyplot``), so nothing here touches pyplot's global state or
needs an interactive backend; in Jupyter a returned figure is displayed once. Give ``ax=`` to
draw into an existing axes instead (its figure is returned). Bad sizes, tables without the
columns a plot needs, and models without image modalities are refused with a message that names
them; the model-taking plots accept a :class:`~mmvae_lite.models.MultimodalVAE` or a
single-modality :class:`~mmvae_lite.models.VAE`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .evaluation.checks import check_int, modality_of, model_names
from .evaluation.examples import one_batch
from .evaluation.latent import decoded_mean
from .evaluation.runtime import device_of, evaluation_mode, seeded
from .models import MultimodalVAE

__all__ = [
    "image_grid", "show_images", "to_rgb", "plot_history", "plot_kl", "plot_traversals", "plot_embedding",
    "plot_snr", "plot_cross_generation", "plot_joint_generation", "caption_table", "plot_coherence",
]


def _columns(df: Any, needed: Sequence[str], fn: str, made_by: str) -> pd.DataFrame:
    """``df`` if it is a non-empty DataFrame with the ``needed`` columns; else a ValueError naming what is missing."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{fn} takes the DataFrame that {made_by} returns, got {type(df).__name__}")
    if df.empty:
        raise ValueError(f"{fn}: the table is empty")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{fn}: the table lacks columns {missing} (it needs {list(needed)}, as {made_by} returns)")
    return df


def _new(ax: Optional[Axes], figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
def image_grid(images: Union[torch.Tensor, np.ndarray], nrow: int = 8, pad: int = 2,
               pad_value: float = 1.0) -> np.ndarray:
    """Tile images into one array for ``imshow``.

    ``images``: (N, C, H, W), (C, H, W), or (R, N, C, H, W) for R rows of N images (then ``nrow``
    is N). Values are clipped to [0, 1]. Returns (H', W', 3) for colour and (H', W') for
    one-channel images; ``nrow`` images per row.
    """
    nrow = check_int(nrow, "nrow")
    pad = check_int(pad, "pad", minimum=0)
    try:
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).detach().float().cpu()
    except (TypeError, ValueError):
        raise TypeError(f"images must be a tensor or an array of numbers, got {type(images).__name__}") from None
    if x.dim() == 5:
        nrow = x.shape[1]
        x = x.reshape(-1, *x.shape[2:])
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), (C, H, W) or (R, N, C, H, W); got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError("images holds no image (shape (0, C, H, W))")
    if c not in (1, 3):
        raise ValueError(f"images need 1 or 3 channels, got {c}")
    nrow = min(nrow, n)
    rows = math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), float(pad_value))
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = x[i]
    grid = grid.clamp(0, 1).numpy()
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def show_images(images: Union[torch.Tensor, np.ndarray], nrow: int = 8, title: Optional[str] = None,
                ax: Optional[Axes] = None, pad: int = 2, pixels_per_inch: float = 40.0,
                max_width: float = 14.0) -> Figure:
    """Show a grid of images (see :func:`image_grid`); returns the figure.

    A new figure is sized at ``pixels_per_inch`` grid pixels per inch, at most ``max_width`` wide.
    """
    for value, arg in ((pixels_per_inch, "pixels_per_inch"), (max_width, "max_width")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ValueError(f"{arg} must be a finite number > 0, got {value!r}")
    grid = image_grid(images, nrow, pad)
    h, w = grid.shape[:2]
    width = min(max_width, max(1.5, w / pixels_per_inch))
    fig, ax = _new(ax, (width, max(1.0, width * h / w)))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def to_rgb(images: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
    """(…, C, H, W) images as 3-channel (…, 3, size, size): grey repeated, bilinear resize.

    Used to put MNIST (1x28x28) beside SVHN (3x32x32), as in the paper's Figure 4.
    """
    if not isinstance(images, torch.Tensor) or images.dim() < 3 or images.shape[-3] not in (1, 3):
        raise ValueError("images must be a tensor (..., C, H, W) with C = 1 or 3, got "
                         + (f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__))
    size = check_int(size, "size", none=True)
    x = images.detach().float().cpu()
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.reshape(*lead, *x.shape[1:]).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------
def plot_history(history: Any, ax: Optional[Axes] = None, title: Optional[str] = None) -> Figure:
    """Train (running mean) and test objective per epoch.

    Accepts a :class:`mmvae_lite.training.History`, a DataFrame with ``train``/``test`` columns
    (index or column ``epoch``), or a list of dicts.
    """
    if hasattr(history, "to_frame"):
        df = history.to_frame()
    elif isinstance(history, pd.DataFrame):
        df = history
    else:
        df = pd.DataFrame(list(history))
    if "epoch" in df.columns:
        df = df.set_index("epoch")
    if df.empty or not {"train", "test"} & set(df.columns):
        raise ValueError("plot_history needs at least one epoch with a 'train' or 'test' value, got "
                         + ("no epochs" if df.empty else f"columns {list(df.columns)}"))
    fig, ax = _new(ax, (5, 3.2))
    for col, style in (("train", "-o"), ("test", "-s")):
        if col in df.columns and df[col].notna().any():
            ax.plot(df.index, df[col].astype(float), style, label=col, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("objective (higher is better)")
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Latent structure
# ---------------------------------------------------------------------------------------------
def plot_kl(df: pd.DataFrame, ax: Optional[Axes] = None, log: bool = True, title: Optional[str] = None) -> Figure:
    """Bar plot of per-dimension KLs from :func:`mmvae_lite.evaluation.kl_per_dimension` (long or wide)."""
    if isinstance(df, pd.DataFrame) and "term" not in df.columns and not df.empty:  # wide: a column per term
        df = df.rename_axis("dim").reset_index().melt(id_vars="dim", var_name="term", value_name="kl")
    _columns(df, ("dim", "term", "kl"), "plot_kl", "mmvae_lite.evaluation.kl_per_dimension")
    dims = sorted(df["dim"].unique())
    fig, ax = _new(ax, (max(5.0, 0.45 * len(dims) + 2), 3.2))
    try:
        import seaborn as sns
        sns.barplot(data=df, x="dim", y="kl", hue="term", ax=ax, errorbar=None)
    except ImportError:  # seaborn is optional (the "book" extra)
        terms = list(dict.fromkeys(df["term"]))
        width = 0.8 / len(terms)
        for j, term in enumerate(terms):
            sub = df[df["term"] == term].set_index("dim").reindex(dims)
            ax.bar(np.arange(len(dims)) + (j - (len(terms) - 1) / 2) * width, sub["kl"], width, label=term)
        ax.set_xticks(np.arange(len(dims)), [str(d) for d in dims])
        ax.legend()
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    if title:
        ax.set_title(title)
    return fig


def plot_traversals(traversals: Mapping[str, Mapping[str, torch.Tensor]], source: str, target: str,
                    example: int = 0, dims: Optional[Sequence[int]] = None, ax: Optional[Axes] = None,
                    title: Optional[str] = None) -> Figure:
    """Grid of one example's traversals: a row per latent dimension, a column per step.

    ``traversals`` comes from :func:`mmvae_lite.evaluation.latent_traversals`;
    ``traversals[source][target]`` is (B, D, steps, C, H, W).
    """
    if source not in traversals or target not in traversals[source]:
        have = {s: sorted(t) for s, t in traversals.items()}
        raise ValueError(f"plot_traversals: no {source}->{target} traversals; source and target must be among {have}")
    x = traversals[source][target]
    if not 0 <= example < x.shape[0]:
        raise ValueError(f"example must be in [0, {x.shape[0] - 1}] (the traversed batch), got {example}")
    if x.dim() != 6:
        raise TypeError(f"{source}->{target} traversals are not images (shape {tuple(x.shape)}); "
                        "show text with caption_table")
    x = x[example]
    if dims is not None:
        x = x[list(dims)]
    return show_images(x, nrow=x.shape[1], ax=ax, title=title or f"traversals: q(z|{source}) decoded as {target}")


def plot_embedding(df: pd.DataFrame, ax: Optional[Axes] = None, s: float = 4.0, alpha: float = 0.35,
                   title: Optional[str] = None) -> Figure:
    """Scatter plot of :func:`mmvae_lite.evaluation.latent_embedding` (colour = source)."""
    _columns(df, ("x", "y", "source"), "plot_embedding", "mmvae_lite.evaluation.latent_embedding")
    fig, ax = _new(ax, (4.5, 4.0))
    for src in dict.fromkeys(df["source"]):
        sub = df[df["source"] == src]
        ax.scatter(sub["x"], sub["y"], s=s, alpha=alpha, label=src, edgecolors="none",
                   color="0.6" if src == "p(z)" else None)
    leg = ax.legend(markerscale=3, frameon=False)
    for h in leg.legend_handles:
        h.set_alpha(1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


def plot_snr(df: pd.DataFrame, title: Optional[str] = None, value: str = "snr") -> Figure:
    """SNR against K (log-log) for each estimator; encoder and decoder side by side."""
    _columns(df, ("estimator", "K", "which", value), "plot_snr", "mmvae_lite.evaluation.gradient_snr")
    whiches = [w for w in ("encoder", "decoder") if w in set(df["which"])]
    if not whiches:
        raise ValueError(f"plot_snr: column 'which' must hold 'encoder' or 'decoder', got {sorted(set(df['which']))}")
    fig = Figure(figsize=(4.2 * len(whiches), 3.4), layout="constrained")
    axes = fig.subplots(1, len(whiches), squeeze=False)[0]
    for ax, which in zip(axes, whiches):
        sub = df[df["which"] == which]
        for est in dict.fromkeys(sub["estimator"]):
            e = sub[sub["estimator"] == est].sort_values("K")
            ax.plot(e["K"], e[value], "-o", label=est.upper(), markersize=4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("K (importance samples)")
        ax.set_ylabel("gradient SNR")
        ax.set_title(f"{which} ({'inference' if which == 'encoder' else 'generative'} network)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def plot_coherence(df: pd.DataFrame, ax: Optional[Axes] = None, title: Optional[str] = None) -> Figure:
    """Bar chart of coherence tables (rows: models; columns: joint, a->b, ...) in percent."""
    _columns(df, (), "plot_coherence", "mmvae_lite.evaluation.coherence (as a one-row DataFrame per model)")
    fig, ax = _new(ax, (5, 3.2))
    (df * 100).T.plot.bar(ax=ax, rot=0)
    ax.set_ylabel("coherence (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def _image_modalities(model: Any, fn: str) -> list[str]:
    """The image modalities (events C x H x W) of a VAE or a MultimodalVAE; a clear error for none."""
    names = [n for n in model_names(model, fn) if len(modality_of(model, n).event_shape) == 3]
    if not names:
        raise TypeError(f"{fn} shows image modalities; this model has none (use caption_table)")
    return names


def _reconstructions(model: Any, batch: Mapping[str, torch.Tensor], mean_latent: bool
                     ) -> dict[str, dict[str, torch.Tensor]]:
    """``out[s][t]`` (1, B, *event): modality t decoded from q(z | x_s); a VAE's one source decodes itself."""
    if isinstance(model, MultimodalVAE):
        return model.cross_reconstruct(batch, K=1, mean_latent=mean_latent)
    q = model.encode(batch[model.name])
    z = q.mean if mean_latent else q.sample()
    return {model.name: {model.name: decoded_mean(model, model.name, z).unsqueeze(0)}}


def _row_labels(ax: Axes, labels: Sequence[str], size: int) -> None:
    """Name each row of an image grid of ``size``-pixel images on the y axis."""
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([2 + (size + 2) * i + size / 2 for i in range(len(labels))], labels)
    ax.tick_params(axis="y", length=0)
    for sp in ax.spines.values():
        sp.set_visible(False)


def plot_cross_generation(model: Any, batch: Mapping[str, torch.Tensor], n: int = 8, *, mean_latent: bool = False,
                          seed: Optional[int] = 0, size: Optional[int] = None, title: Optional[str] = None) -> Figure:
    """Reconstructions and cross-generations (the paper's Figure 4, middle and bottom rows).

    For each source modality s (a panel): the first row shows n inputs x_s, the next rows the
    likelihood means of every image modality t decoded from z ~ q(z | x_s). Images are brought to a
    common size and 3 channels (MNIST 28x28 grey is resized to 32x32 RGB beside SVHN). A
    single-modality :class:`~mmvae_lite.models.VAE` gives one panel: inputs and reconstructions.
    """
    fn = "plot_cross_generation"
    names = _image_modalities(model, fn)
    n = check_int(n, "n")
    size = check_int(size, "size", none=True)
    batch = {k: v[:n] for k, v in one_batch(model, batch, fn).items()}
    n = min(n, next(iter(batch.values())).shape[0])
    dev = device_of(model)
    with evaluation_mode(model), seeded(seed, dev):
        rec = _reconstructions(model, {k: v.to(dev) for k, v in batch.items()}, mean_latent)
    size = size or max(modality_of(model, t).event_shape[-1] for t in names)
    sources = [s for s in model_names(model, fn) if s in rec and s in names]
    if not sources:
        raise ValueError(f"{fn}: batch holds none of the image modalities {names}; it has {sorted(batch)}")
    width, height = 1.0 * n + 1.6, 1.05 * (len(names) + 1) * len(sources) + (0.4 if title else 0.1)
    fig = Figure(figsize=(width, height))
    # fixed margins: constrained layout misjudges tick labels beside aspect-locked image axes
    fig.subplots_adjust(left=1.4 / width, right=0.99, bottom=0.05 / height,
                        top=1 - (0.4 if title else 0.05) / height, hspace=0.08)
    axes = fig.subplots(len(sources), 1, squeeze=False)[:, 0]
    for ax, s in zip(axes, sources):
        rows = [to_rgb(batch[s], size)] + [to_rgb(rec[s][t][0], size) for t in names]
        show_images(torch.stack(rows), ax=ax)
        _row_labels(ax, [f"{s} (input)"] + [f"{s} \u2192 {t}" for t in names], size)
    if title:
        fig.suptitle(title)
    return fig


def plot_joint_generation(model: Any, n: int = 16, *, seed: Optional[int] = 0, size: Optional[int] = None,
                          title: Optional[str] = None) -> Figure:
    """Joint generations (Figure 4, top): one row per image modality, decoded from the same z ~ p(z).

    A single-modality :class:`~mmvae_lite.models.VAE` gives one row of samples.
    """
    names = _image_modalities(model, "plot_joint_generation")
    n = check_int(n, "n")
    size = check_int(size, "size", none=True)
    with evaluation_mode(model), seeded(seed, device_of(model)):
        gen = model.generate(n)
    if not isinstance(gen, Mapping):          # a VAE generates its one modality
        gen = {names[0]: gen}
    size = size or max(modality_of(model, t).event_shape[-1] for t in names)
    fig = show_images(torch.stack([to_rgb(gen[t], size) for t in names]))
    ax = fig.axes[0]
    _row_labels(ax, names, size)
    ax.set_title(title or "joint generation from p(z)")
    return fig


def caption_table(columns: Mapping[str, Any], vocab: Any, max_rows: Optional[int] = None) -> pd.DataFrame:
    """Decode token-id tensors into a table of text, one column per entry of ``columns``.

    ``columns`` maps a column title to token ids (N, T) (e.g. ``{"input": x, "image \u2192 sentence": y}``);
    ``vocab`` is a :class:`mmvae_lite.data.Vocab` (uses its ``decode``) or a list of words, in which
    case decoding stops at ``<eos>`` and skips ``<pad>``.
    """
    def decode(ids: Any) -> str:
        if hasattr(vocab, "decode"):
            return vocab.decode(ids)
        words = []
        for i in torch.as_tensor(ids).flatten().tolist():
            if not 0 <= i < len(vocab):
                raise ValueError(f"token id {i} is outside the vocabulary of {len(vocab)} words")
            w = vocab[i]
            if w == "<eos>":
                break
            if w != "<pad>":
                words.append(w)
        return " ".join(words)

    max_rows = check_int(max_rows, "max_rows", minimum=0, none=True)
    out = {}
    for title, ids in columns.items():
        ids = torch.as_tensor(ids)
        ids = ids.reshape(-1, ids.shape[-1])
        if max_rows is not None:
            ids = ids[:max_rows]
        out[title] = [decode(r) for r in ids]
    return pd.DataFrame(out)
