"""CUB image-caption pairs: the real MMVAE release (captions, images, ResNet-101 features) or
the bird-sprite stand-in, one row per caption."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Optional

import numpy as np
import torch

from . import standins
from .captions import Vocab
from .datasets import GatherDataset, subset_rows
from .files import DataError, PathLike, cache_dir, data_root, fetch_hint, find_file, require_file, shown
from .mnist_svhn import STANDIN_SEED, check_split
from .sources import Source, StandinMode, announce, cub_feature_file, cub_image_dir, resolve_source

__all__ = ["CUBDataset", "load_cub", "CUB_IMAGES"]

#: Image counts of the MMVAE CUB split (150 train+val classes / 50 test classes).
CUB_IMAGES = {"train": 8855, "test": 2933}


class CUBDataset(GatherDataset):
    """CUB image-caption pairs (real or stand-in): one row per caption.

    Fields: ``"sentence"`` LongTensor (N, max_length) and, when an image modality is
    available, ``"image"``: float (B, 2048) features or float (B, 3, 64, 64) in [0, 1],
    gathered from the per-image base by ``image_index = row // captions_per_image``.
    ``dataset[i] -> {"image": ..., "sentence": ...}`` (no ``"image"`` without images).

    Attributes:
        vocab: the :class:`Vocab` built from the training captions.
        captions: raw caption strings (N,).
        lengths: LongTensor (N,) sentence lengths including ``<eos>``.
        n_truncated: how many captions were cut to ``max_length``.
        image_index: LongTensor (N,) image of every caption.
        images: uint8 (M, 3, 64, 64) pictures for display (None if unavailable).
        attributes: int64 (M, A) stand-in attributes per image (None for real data),
            with column names :attr:`attribute_names`.
        image_form: ``"features"``, ``"images"`` or ``None`` (captions only).
    """

    def __init__(self, bases: Mapping[str, torch.Tensor], index: Mapping[str, Optional[torch.Tensor]],
                 *, vocab: Vocab, captions: list[str], lengths: torch.Tensor, n_truncated: int,
                 image_index: torch.Tensor, images: Optional[torch.Tensor],
                 attributes: Optional[torch.Tensor], attribute_names: tuple[str, ...],
                 image_form: Optional[str], captions_per_image: int,
                 source: Mapping[str, Source], banner: str) -> None:
        super().__init__(bases, index, None, source, banner)
        self.vocab = vocab
        self.captions = captions
        self.lengths = lengths
        self.n_truncated = n_truncated
        self.image_index = image_index
        self.images = images
        self.attributes = attributes
        self.attribute_names = attribute_names
        self.image_form = image_form
        self.captions_per_image = captions_per_image

    def caption_attributes(self) -> Optional[torch.Tensor]:
        """Stand-in attributes of the image of every caption, int64 (N, A), or None."""
        return None if self.attributes is None else self.attributes[self.image_index]

    def nearest_images(self, features: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Images whose features are closest (Euclidean) to ``features``.

        Used to display feature-space generations, as the paper does for CUB.

        Args:
            features: float (B, 2048).
            k: neighbours per query.

        Returns:
            ``(images, indices)``: float (B, k, 3, 64, 64) in [0, 1] and LongTensor (B, k)
            of rows of :attr:`images`.
        """
        if self.image_form != "features":
            raise DataError("nearest_images needs a dataset loaded with image_form='features'.")
        if self.images is None:
            raise DataError("no display images are stored with these features; run "
                            "`python -m data_prep.cub` to create them.")
        base = self.bases["image"]
        feats = torch.as_tensor(features).to(base.dtype).cpu()
        if feats.ndim != 2 or feats.shape[1] != base.shape[1]:
            raise ValueError(f"features must be (B, {base.shape[1]}), got {tuple(feats.shape)}")
        d = torch.cdist(feats, base.cpu())
        idx = d.topk(k, dim=1, largest=False).indices
        return self.images[idx].float() / 255.0, idx


def _read_caption_file(key: str, base: Path) -> list[str]:
    path = require_file(key, base)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{shown(path)} is not a UTF-8 text file ({e}).") from None
    return text.splitlines()


def _split_by_image(n_images: int, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(int(seed) + 104729)
    perm = torch.randperm(n_images, generator=g)
    cut = int(round(frac * n_images))
    return perm[:cut].sort().values, perm[cut:].sort().values


def _real_cub_images(split: str, base: Path, verbose: bool) -> torch.Tensor:
    """Real CUB images of ``split`` resized to 64x64 uint8 (M, 3, 64, 64), cached."""
    from PIL import Image

    folder = cub_image_dir(base, split)
    files = sorted(p for d in sorted(folder.iterdir()) if d.is_dir()
                   for p in sorted(d.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise DataError(f"no images found in {shown(folder)}")
    listing = hashlib.sha1("\n".join(f"{p.relative_to(folder)}|{p.stat().st_size}"
                                      for p in files).encode()).hexdigest()[:12]
    cdir = cache_dir(base)
    cached = cdir / f"cub_images64_{split}_{listing}.npy" if cdir else None
    if cached is not None and cached.is_file():
        try:
            return torch.from_numpy(np.load(cached))
        except (OSError, ValueError):
            pass
    announce(f"CUB {split}: resizing {len(files)} images to 64x64 (once; cached)", verbose)
    out = np.empty((len(files), 3, 64, 64), dtype=np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB").resize((64, 64), Image.BILINEAR)
                out[i] = np.asarray(im).transpose(2, 0, 1)
        except OSError as e:
            raise DataError(f"cannot read image {shown(p)} ({e}); re-fetch with "
                            f"`{fetch_hint('data_prep.cub', base)}`.") from None
    if cached is not None:
        try:
            np.save(cached, out)
        except OSError:
            pass
    return torch.from_numpy(out)


def _real_cub_features(split: str, base: Path) -> torch.Tensor:
    path = cub_feature_file(base, split)
    try:
        feats = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{shown(path)} is not a readable feature file ({e}); recreate it with "
                        f"`{fetch_hint('data_prep.cub', base)} --features`.") from None
    feats = torch.as_tensor(feats).float().reshape(len(feats), -1)
    if feats.shape[1] != 2048:
        raise DataError(f"{shown(path)} holds features of dimension {feats.shape[1]}, expected 2048.")
    return feats


def _standin_cub(split: str, n_images: Optional[int], cpi: int, cdir: Optional[Path],
                 with_images: bool = True) -> standins.BirdCaptions:
    n = CUB_IMAGES[split] if n_images is None else int(n_images)
    return standins.bird_captions(n, seed=100 + STANDIN_SEED[split], captions_per_image=cpi,
                                  cache_dir=cdir, with_images=with_images)


def _standin_features(images: torch.Tensor, key: str, cdir: Optional[Path]) -> torch.Tensor:
    path = cdir / f"{key}_features_v{standins.BIRDS_VERSION}.npy" if cdir else None
    if path is not None and path.is_file():
        try:
            f = torch.from_numpy(np.load(path))
            if f.shape == (len(images), standins.STANDIN_FEATURE_DIM):
                return f
        except (OSError, ValueError):
            pass
    feats = standins.standin_features(images)
    if path is not None:
        try:
            np.save(path, feats.numpy())
        except OSError:
            pass
    return feats


def _cub_sources(base: Path, image_form: str, standin: StandinMode, captions: str, download: Optional[bool],
                 verbose: bool) -> tuple[Source, Source]:
    """(caption source, image source) by the rule of :func:`load_cub`'s docstring."""
    img_name = "cub-features" if image_form == "features" else "cub-images"
    if standin == "always" or captions == "standin":
        return (Source("standin", "stand-in requested", "cub-captions"),
                Source("standin", "stand-in requested", img_name))
    # only the test-class captions download by themselves: worth it when they are asked for
    cap_src = resolve_source("cub-captions", base, "auto", download=download if captions == "real" else False,
                             verbose=verbose)
    img_src = resolve_source(img_name, base, "auto")   # real features can also come from images via data_prep.cub
    if standin == "never" and not (cap_src.is_real and img_src.is_real):
        bad = [s for s in (cap_src, img_src) if not s.is_real]
        raise DataError("real CUB data incomplete: " + "; ".join(s.reason for s in bad))
    if captions == "real":
        if not cap_src.is_real:
            if find_file("cub/text_testclasses.txt", base) is None:
                raise DataError(f"captions='real' but no real CUB caption file is present ({cap_src.reason}).")
            cap_src = Source("real", f"only the test-class captions are present ({cap_src.reason})", "cub-captions")
    elif not (cap_src.is_real and img_src.is_real):
        # auto: use the stand-in pairs unless the full real set exists
        gone = [m for s in (cap_src, img_src) for m in s.missing]
        hint = fetch_hint("data_prep.cub", base) + (" --features" if image_form == "features" else "")
        why = f"{', '.join(gone)} not found in {shown(base)}; fetch with: {hint}"
        cap_src, img_src = Source("standin", why, "cub-captions"), Source("standin", why, img_name)
    return cap_src, img_src


@dataclass
class _CaptionSide:
    """The captions of one split and what comes with them (stand-in pictures and attributes)."""
    captions: list[str]
    cpi: int                                   # captions per image
    vocab: Vocab
    lines: list[str]                           # the banner so far
    full_real: bool = False                    # both real caption files (so real images can pair with them)
    images: Optional[torch.Tensor] = None      # stand-in sprites
    attributes: Optional[torch.Tensor] = None  # stand-in attributes
    attribute_names: tuple[str, ...] = ()


def _standin_side(split: str, n_images: Optional[int], cpi: int, cdir: Optional[Path], vocab: Optional[Vocab],
                  min_occ: int, max_length: int, reason: str) -> _CaptionSide:
    data = _standin_cub(split, n_images, cpi, cdir)
    if vocab is None:
        # the vocabulary comes from the training split: this one, or for a test split the default-size one
        train = data if split == "train" else _standin_cub("train", None, cpi, cdir, with_images=False)
        vocab = Vocab.from_captions(train.captions, min_occ, max_length)
    line = (f"CUB {split}: stand-in bird sprites with generated captions, {len(data.images)} images x {cpi} "
            f"captions ({reason})")
    return _CaptionSide(data.captions, cpi, vocab, [line], images=data.images, attributes=data.attributes,
                        attribute_names=data.attribute_names)


def _real_captions(split: str, base: Path, cap_src: Source, vocab: Optional[Vocab], min_occ: int,
                   max_length: int, seed: int) -> _CaptionSide:
    cpi = 10
    full = find_file("cub/text_trainvalclasses.txt", base) is not None and cap_src.is_real
    test_caps = _read_caption_file("cub/text_testclasses.txt", base)
    if full:
        train_caps = _read_caption_file("cub/text_trainvalclasses.txt", base)
        caps = train_caps if split == "train" else test_caps
        note = "real CUB captions"
    else:
        if len(test_caps) % cpi:
            raise DataError(f"cub/text_testclasses.txt has {len(test_caps)} lines, not a "
                            f"multiple of {cpi} captions per image.")
        tr_img, te_img = _split_by_image(len(test_caps) // cpi, 0.8, 0)   # fixed: train and test never overlap
        rows = {s: (ix[:, None] * cpi + torch.arange(cpi)).flatten() for s, ix in (("train", tr_img), ("test", te_img))}
        train_caps = [test_caps[i] for i in rows["train"].tolist()]
        caps = train_caps if split == "train" else [test_caps[i] for i in rows["test"].tolist()]
        note = "real CUB test-class captions, split 80/20 by image because the train-class captions are missing"
    vocab = vocab or Vocab.from_captions(train_caps, min_occ, max_length)
    return _CaptionSide(caps, cpi, vocab, [f"CUB {split}: {note}, {len(caps)} captions"], full_real=full)


def _image_modality(split: str, base: Path, cdir: Optional[Path], image_form: str, side: _CaptionSide,
                    n_captions: int, verbose: bool, img_src: Source
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """(the image modality's rows, the pictures to show, a banner line)."""
    if side.images is not None:   # the stand-in
        if image_form == "features":
            feats = _standin_features(side.images, f"birds_{split}_n{len(side.images)}_c{side.cpi}", cdir)
            return feats, side.images, (f"CUB {split} image features: stand-in (fixed random-conv 2048-d "
                                        f"features of the sprites, NOT ResNet-101)")
        return side.images, side.images, f"CUB {split} images: stand-in sprites"
    images = None
    if image_form == "features":
        rows = _real_cub_features(split, base)
        if cub_image_dir(base, split).is_dir():
            images = _real_cub_images(split, base, verbose)
            if len(images) != len(rows):   # pictures for display only; a mismatch would show wrong birds
                announce(f"CUB {split}: {len(images)} images in {shown(cub_image_dir(base, split))} but "
                         f"{len(rows)} feature rows; the pictures are not shown", verbose)
                images = None
    else:
        rows = images = _real_cub_images(split, base, verbose)
    if len(rows) * side.cpi != n_captions:
        raise DataError(f"CUB {split}: {len(rows)} images but {n_captions} captions "
                        f"(expected {side.cpi} per image); the image folder or feature file "
                        f"does not match the caption file.")
    return rows, images, f"CUB {split} images: real ({img_src.reason})"


def load_cub(split: str = "train", root: Optional[PathLike] = None,
             image_form: Literal["features", "images"] = "features",
             standin: StandinMode = "auto",
             captions: Literal["auto", "real", "standin"] = "auto",
             max_length: int = 32, min_occ: int = 3,
             on_long: Literal["truncate", "error"] = "truncate",
             n_images: Optional[int] = None, captions_per_image: int = 10,
             subset: Optional[int] = None, seed: int = 0, vocab: Optional["Vocab"] = None,
             verbose: bool = True, download: Optional[bool] = None) -> CUBDataset:
    """CUB image-caption pairs (one row per caption; 10 captions per image).

    Source rule (``standin="auto"``): the real data are used when the full real CUB
    files are present (both caption files, verified, plus the images -- or the
    ResNet-101 features for ``image_form="features"``); otherwise the stand-in bird
    sprites with captions generated from the same attributes
    (:func:`mmvae_lite.data.standins.bird_captions`). ``standin="never"`` raises
    :class:`DataError` when anything is missing; ``"always"`` forces the stand-in.

    ``captions="real"`` uses real captions even when the rest is missing. Without the
    train-class caption file, the real *test-class* captions are split 80/20 by image
    (with a fixed seed) into train/test portions and there is no image modality (the real
    images are missing and stand-in sprites would not match real captions): the
    dataset then yields ``{"sentence"}`` only.

    Args:
        split: ``"train"`` or ``"test"``.
        root: data directory.
        image_form: ``"features"`` -- 2048-d ResNet-101 pooled features (real) or
            fixed random-conv stand-in features; ``"images"`` -- 64x64 RGB.
        standin: see above and :func:`resolve_source`.
        captions: ``"auto"``, ``"real"`` or ``"standin"``.
        max_length: sentence length incl. ``<eos>`` (authors: 32).
        min_occ: words seen ``<= min_occ`` times in the training captions map to ``<exc>``.
        on_long: ``"truncate"`` (authors) or ``"error"`` for over-long captions.
        n_images: stand-in size of this split (default: the real sizes, 8855 / 2933). The
            vocabulary is built from the training split: for a test split with a
            non-default training size, pass ``vocab=train.vocab``.
        captions_per_image: stand-in captions per image.
        subset: keep this many caption rows, drawn at random (deterministic in ``seed``).
        seed: seed of ``subset`` (the 80/20 split of real test-class captions is fixed, so that
            train and test never share an image whatever the seeds).
        vocab: use this vocabulary (e.g. the one saved with a checkpoint) instead of
            building one from the training captions.
        verbose: print the source banner.
        download: with ``captions="real"``, fetch the test-class captions when missing
            (``None``: yes unless ``$MMVAE_LITE_OFFLINE``). The rest of CUB comes only as the
            authors' zip: ``python -m data_prep.cub``.

    Returns:
        :class:`CUBDataset`; ``batches()`` yields ``{"image": float (B, 2048) or
        (B, 3, 64, 64), "sentence": LongTensor (B, max_length)}``.
    """
    check_split(split)
    if image_form not in ("features", "images"):
        raise ValueError(f"image_form must be 'features' or 'images', got {image_form!r}")
    if captions not in ("auto", "real", "standin"):
        raise ValueError(f"captions must be 'auto', 'real' or 'standin', got {captions!r}")
    base = data_root(root)
    cdir = cache_dir(base)
    cap_src, img_src = _cub_sources(base, image_form, standin, captions, download, verbose)
    if cap_src.kind == "standin":
        side = _standin_side(split, n_images, captions_per_image, cdir, vocab, min_occ, max_length, cap_src.reason)
    else:
        side = _real_captions(split, base, cap_src, vocab, min_occ, max_length, seed)
    caps, cpi, vocab, lines = side.captions, side.cpi, side.vocab, side.lines

    ids, lengths, n_trunc = vocab.encode_many(caps, on_long)
    image_index = torch.arange(len(caps)) // cpi
    bases: dict[str, torch.Tensor] = {"sentence": ids}
    index: dict[str, Optional[torch.Tensor]] = {"sentence": None}
    images, form = side.images, None
    if cap_src.kind == "standin" or (img_src.is_real and side.full_real):
        bases["image"], images, line = _image_modality(split, base, cdir, image_form, side, len(caps), verbose,
                                                       img_src)
        index["image"], form = image_index, image_form
        lines.append(line)
    else:
        lines.append(f"CUB {split}: no image modality (real images missing: {img_src.reason}); "
                     f"batches yield 'sentence' only")
    lines.append(f"CUB vocabulary: {len(vocab)} words (min_occ {min_occ}, from the training "
                 f"captions), {n_trunc} of {len(caps)} captions truncated to {max_length} tokens")
    for line in lines:
        announce(line, verbose)

    ds_rows = subset_rows(len(caps), subset, seed)
    if ds_rows is not None:
        ids, lengths, image_index = ids[ds_rows], lengths[ds_rows], image_index[ds_rows]
        caps = [caps[i] for i in ds_rows.tolist()]
        bases["sentence"] = ids
        if "image" in index:
            index["image"] = image_index
    src = {"sentence": cap_src}
    if "image" in bases:
        src["image"] = img_src
    return CUBDataset(bases, index, vocab=vocab, captions=list(caps), lengths=lengths,
                      n_truncated=n_trunc, image_index=image_index, images=images,
                      attributes=side.attributes, attribute_names=side.attribute_names, image_form=form,
                      captions_per_image=cpi, source=src, banner="\n".join(lines))
