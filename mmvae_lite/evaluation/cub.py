"""CUB (paper Table 4): sentence embeddings, CCA between image features and sentences, CCA coherence.

Following the authors' ``analyse_cub.py``: sentences become SIF-like weighted means of FastText
word vectors (:class:`SentenceEmbedder`), a CCA is fitted between image features and sentence
embeddings of training pairs (:func:`fit_cub_cca`), and coherence is the mean cosine similarity
of CCA-projected (image, sentence) pairs, for test pairs, cross generations and joint generations
(:func:`cub_coherence`). :func:`attribute_accuracy` scores captions against the stand-in birds'
known attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from ..models import MultimodalVAE
from .checks import check_int, require_multimodal
from .examples import batch_size_of, iterate_examples, total_examples
from .latent import decoded_mean
from .runtime import Progress, device_of, evaluation_mode, seeded

__all__ = ["SentenceEmbedder", "CCA", "fit_cub_cca", "cub_coherence", "attribute_accuracy", "caption_attribute_scores",
           "image_caption_scores"]


def _i2w(vocab: Any) -> list[str]:
    if hasattr(vocab, "i2w"):
        v = vocab.i2w
        return list(v.values()) if isinstance(v, Mapping) else list(v)
    if isinstance(vocab, Mapping):
        return [vocab[i] for i in range(len(vocab))]
    return list(vocab)


@dataclass
class SentenceEmbedder:
    """Sentence -> vector, as the authors' ``analyse_cub.py``: SIF-like weighted mean of word
    vectors with the first principal component removed (Arora et al. 2017).

    ``embed(ids) = sum_t w[x_t] v[x_t] / T'`` over the tokens up to and including the first
    ``<eos>`` (T' of them), with ``w = a / (a + p(word))`` from training-text frequencies, then
    ``e - (e . u) u`` for the first principal direction ``u`` of the training embeddings.

    Attributes:
        vectors: (V, E) word vectors (row i for token id i).
        weights: (V,) word weights.
        pc: (E,) unit first principal direction, or None (no removal).
        eos_idx: the end-of-sentence token id.
    """

    vectors: np.ndarray
    weights: np.ndarray
    pc: Optional[np.ndarray] = None
    eos_idx: int = 2

    @classmethod
    def fit(cls, sentences: torch.Tensor, vocab: Any, *, texts: Optional[Sequence[Sequence[str]]] = None,
            dim: int = 300, window: int = 3, min_count: int = 3, epochs: int = 10, a: float = 1e-3,
            exc_idx: int = 0, pad_idx: int = 1, eos_idx: int = 2, seed: int = 0, workers: int = 1
            ) -> "SentenceEmbedder":
        """Train FastText word vectors (gensim) on the training text and set the weights and PC.

        Args:
            sentences: training token ids (N, T), used for the principal component.
            vocab: a :class:`mmvae_lite.data.Vocab` or a list of words (index = token id).
            texts: tokenised training captions for FastText and the word frequencies (default:
                the decoded ``sentences``, rare words as ``<exc>``). The authors used the raw
                training text (words outside the vocabulary count towards ``<exc>``).
            dim, window, min_count, epochs: FastText settings (authors: 300, 3, 3, 10).
            a: the weighting constant (authors: 1e-3).
            exc_idx, pad_idx, eos_idx: special tokens (the authors' and :class:`Vocab`'s 0, 1, 2);
                their vectors are -1, 0 and +1 everywhere, as in the authors' code.
        """
        from collections import Counter

        from gensim.models import FastText

        for value, arg in ((dim, "dim"), (window, "window"), (min_count, "min_count"), (epochs, "epochs"),
                           (workers, "workers")):
            check_int(value, arg)
        i2w = _i2w(vocab)
        w2i = {w: i for i, w in enumerate(i2w)}
        ids = torch.as_tensor(sentences).long().cpu().numpy()
        if ids.ndim != 2 or len(ids) == 0:
            raise ValueError(f"sentences must be token ids (N, T) with N >= 1, got shape {ids.shape}")
        if ids.max() >= len(i2w) or ids.min() < 0:
            raise ValueError(f"sentences hold token ids in [{ids.min()}, {ids.max()}] but vocab has {len(i2w)} words")
        if texts is None:   # the words before the first <eos>, without padding
            is_eos = ids == eos_idx
            first = np.where(is_eos.any(1), is_eos.argmax(1), ids.shape[1])
            keep = (np.arange(ids.shape[1])[None, :] < first[:, None]) & (ids != pad_idx)
            words = np.asarray(i2w, dtype=object)
            texts = [words[row[k]].tolist() for row, k in zip(ids, keep)]
        texts = [list(t) for t in texts if len(t)]
        ft = FastText(vector_size=dim, window=window, min_count=min_count, seed=seed, workers=workers)
        ft.build_vocab(corpus_iterable=texts)
        ft.train(corpus_iterable=texts, total_examples=len(texts), epochs=epochs)
        vectors = np.zeros((len(i2w), dim), dtype=np.float32)
        special = {exc_idx: -1.0, pad_idx: 0.0, eos_idx: 1.0}
        for i, w in enumerate(i2w):
            vectors[i] = special[i] if i in special else ft.wv[w]
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(t)
        total = sum(counts.values())
        weights = np.zeros(len(i2w), dtype=np.float32)
        exc = 0
        for w, c in counts.items():
            i = w2i.get(w)
            if i is None or i == exc_idx:
                exc += c
            elif i not in (pad_idx, eos_idx):
                weights[i] = a / (a + c / total)
        weights[exc_idx] = a / (a + exc / total) if total else 0.0
        emb = cls(vectors, weights, None, eos_idx)
        e = emb.embed(ids)
        _, _, vt = np.linalg.svd(e - e.mean(0), full_matrices=False)
        emb.pc = vt[0].astype(np.float32)
        return emb

    def embed(self, ids: "torch.Tensor | np.ndarray", chunk: int = 512) -> np.ndarray:
        """Weighted mean word vectors (N, E) without the principal-component removal."""
        ids = torch.as_tensor(ids).long().cpu().numpy()
        T = ids.shape[1]
        is_eos = ids == self.eos_idx
        first = np.where(is_eos.any(1), is_eos.argmax(1), T - 1)        # index of first <eos> (or last token)
        mask = (np.arange(T)[None, :] <= first[:, None]).astype(np.float32)
        out = np.empty((len(ids), self.vectors.shape[1]), dtype=np.float32)
        for i in range(0, len(ids), chunk):   # chunks bound the (n, T, E) gather: 512 x 32 x 300 floats = 20 MB
            x, m = ids[i:i + chunk], mask[i:i + chunk]
            w = self.weights[x] * m                                        # (n, T)
            out[i:i + chunk] = np.einsum("nt,nte->ne", w, self.vectors[x]) / m.sum(1, keepdims=True)
        return out

    def __call__(self, ids: "torch.Tensor | np.ndarray") -> np.ndarray:
        e = self.embed(ids)
        if self.pc is not None:
            e = e - np.outer(e @ self.pc, self.pc)
        return e


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    """C^(-1/2) of a symmetric positive (semi)definite matrix, tiny eigenvalues clipped."""
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.clip(w, 1e-12, None))) @ v.T


@dataclass
class CCA:
    """Two-view canonical correlation analysis (numpy), with a small relative ridge.

    ``fit`` whitens each view (covariance + ``reg * trace/d * I``), takes the SVD of the whitened
    cross-covariance and keeps ``k`` directions, so projections have unit variance per direction
    and ``correlations`` are the canonical correlations. (The authors solve the generalised
    eigenproblem with ``scipy.linalg.eig``, whose eigenvectors are scaled differently; with unit-
    variance canonical variates every direction weighs equally in the cosine similarity.)

    Why not :class:`sklearn.cross_decomposition.CCA`: it fits one direction at a time with the
    iterative NIPALS algorithm and deflation (slow for 2048-d image features and 300-d sentence
    embeddings at k = 40, and approximate), has no ridge for the near-singular covariances of
    those features, and its scores are not the unit-variance canonical variates that the
    authors' per-pair cosine similarity compares. The closed form here is one eigendecomposition
    per view and one SVD.
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    proj_x: np.ndarray
    proj_y: np.ndarray
    correlations: np.ndarray

    @classmethod
    def fit(cls, x: Any, y: Any, k: int = 40, reg: float = 1e-4) -> "CCA":
        """Fit on paired rows of ``x`` (N, Dx) and ``y`` (N, Dy); keep ``k`` directions; relative ridge ``reg``."""
        k = check_int(k, "k")
        if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not 0 <= reg < float("inf"):
            raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
        x = np.asarray(torch.as_tensor(x).double().cpu()) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
        y = np.asarray(torch.as_tensor(y).double().cpu()) if isinstance(y, torch.Tensor) else np.asarray(y, np.float64)
        if x.ndim != 2 or y.ndim != 2:
            raise ValueError(f"CCA views must be 2-D (examples, features), got shapes {x.shape} and {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("CCA views must be finite; x or y holds NaN or infinite values")
        if len(x) != len(y) or len(x) < 2:
            raise ValueError(f"CCA needs the same number (>= 2) of rows in both views, got {len(x)} and {len(y)}")
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        n = len(x)

        def cov(a, b):
            return a.T @ b / (n - 1)

        cxx, cyy, cxy = cov(xc, xc), cov(yc, yc), cov(xc, yc)
        cxx += np.eye(len(cxx)) * reg * max(np.trace(cxx) / len(cxx), 1e-12)
        cyy += np.eye(len(cyy)) * reg * max(np.trace(cyy) / len(cyy), 1e-12)
        wx, wy = _inv_sqrt(cxx), _inv_sqrt(cyy)
        u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
        k = min(k, len(s))
        return cls(mx, my, wx @ u[:, :k], wy @ vt[:k].T, s[:k])

    def transform(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(torch.as_tensor(x).double().cpu()) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
        y = np.asarray(torch.as_tensor(y).double().cpu()) if isinstance(y, torch.Tensor) else np.asarray(y, np.float64)
        return (x - self.mean_x) @ self.proj_x, (y - self.mean_y) @ self.proj_y

    def similarity(self, x: Any, y: Any) -> np.ndarray:
        """Per-pair cosine similarity of the projected views, (N,): the authors' "correlation"."""
        px, py = self.transform(x, y)
        num = (px * py).sum(1)
        den = np.linalg.norm(px, axis=1) * np.linalg.norm(py, axis=1)
        return num / np.maximum(den, 1e-12)

    def score(self, x: Any, y: Any) -> float:
        """Mean cosine similarity of projected pairs."""
        return float(self.similarity(x, y).mean())


def _default_image_features(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        return x
    from ..data import standins
    return standins.standin_features(x.clamp(0, 1))


def fit_cub_cca(train: Any, embedder: SentenceEmbedder, *, image_features: Optional[Callable] = None, k: int = 40,
                reg: float = 1e-4, image: str = "image", sentence: str = "sentence",
                max_examples: Optional[int] = None, batch_size: int = 1024, seed: int = 0) -> CCA:
    """CCA between image features and sentence embeddings of the training pairs (authors: k = 40)."""
    k = check_int(k, "k")
    feats = image_features or _default_image_features
    xs, ys = [], []
    for b, _ in iterate_examples(train, batch_size, names=[image, sentence], max_examples=max_examples, seed=seed,
                                 arg="train"):
        if image not in b or sentence not in b:
            raise ValueError(f"fit_cub_cca: train must hold {image!r} and {sentence!r}, got {sorted(b)}")
        xs.append(feats(b[image]).float().cpu().numpy())
        ys.append(embedder(b[sentence]))
    return CCA.fit(np.concatenate(xs), np.concatenate(ys), k=k, reg=reg)


def cub_coherence(model: MultimodalVAE, test: Any, cca: CCA, embedder: SentenceEmbedder, *,
                  image_features: Optional[Callable] = None, n_joint: int = 1000, image: str = "image",
                  sentence: str = "sentence", batch_size: int = 256, max_examples: Optional[int] = None,
                  seed: Optional[int] = 0, progress: bool = False) -> dict[str, float]:
    """CCA coherence (paper Table 4): mean cosine similarity of CCA-projected (image, sentence) pairs.

    ``ground_truth``: test pairs; ``image->sentence``: test image with the sentence decoded from
    z ~ q(z | image) (most likely token at each position); ``sentence->image``: decoded image
    (features) from z ~ q(z | sentence) with the test sentence; ``joint``: both decoded from
    ``n_joint`` prior samples. Image tensors (B, 3, H, W) are mapped to features by
    ``image_features`` (default: identity for feature vectors, the fixed random-conv stand-in
    features of :func:`mmvae_lite.data.standins.standin_features` for pictures).
    """
    model = require_multimodal(model, "cub_coherence", "CCA coherence compares images with sentences")
    missing = [n for n in (image, sentence) if n not in model.names]
    if missing:
        raise ValueError(f"cub_coherence: image= and sentence= must name the model's modalities {model.names}, "
                         f"got {missing}")
    n_joint = check_int(n_joint, "n_joint", minimum=0)
    batch_size = check_int(batch_size, "batch_size")
    max_examples = check_int(max_examples, "max_examples", none=True)
    feats = image_features or _default_image_features
    dev = device_of(model)
    sims: dict[str, list[np.ndarray]] = {"ground_truth": [], "image->sentence": [], "sentence->image": []}
    bar = Progress(progress, total_examples(test, max_examples), "CCA coherence")
    with evaluation_mode(model), seeded(seed, dev):
        for b, _ in iterate_examples(test, batch_size, names=[image, sentence], max_examples=max_examples,
                                     seed=seed or 0, device=dev, arg="test"):
            if image not in b or sentence not in b:
                raise ValueError(f"cub_coherence: test must hold {image!r} and {sentence!r} pairs, got {sorted(b)}")
            present, z = model.unimodal_samples(b, 1)
            zi, zs = z[present.index(image), 0], z[present.index(sentence), 0]
            img_f = feats(b[image]).float().cpu()
            sent_e = embedder(b[sentence])
            sims["ground_truth"].append(cca.similarity(img_f, sent_e))
            sims["image->sentence"].append(cca.similarity(img_f, embedder(decoded_mean(model, sentence, zi))))
            sims["sentence->image"].append(cca.similarity(feats(decoded_mean(model, image, zs)).float().cpu(), sent_e))
            bar.update(batch_size_of(b))
        bar.close()
        joint = []
        prior = model.prior()
        for start in range(0, n_joint, batch_size):
            zp = prior.sample((min(batch_size, n_joint - start),))
            joint.append(cca.similarity(feats(decoded_mean(model, image, zp)).float().cpu(),
                                        embedder(decoded_mean(model, sentence, zp))))
    out = {"ground_truth": float(np.concatenate(sims["ground_truth"]).mean())}
    if joint:
        out["joint"] = float(np.concatenate(joint).mean())
    out["image->sentence"] = float(np.concatenate(sims["image->sentence"]).mean())
    out["sentence->image"] = float(np.concatenate(sims["sentence->image"]).mean())
    return out


def attribute_accuracy(pred: Mapping[str, Any], true: Mapping[str, Any]) -> dict[str, float]:
    """Per-attribute agreement of predicted and true attribute values, plus their ``"mean"``.

    ``pred`` and ``true`` map attribute names to arrays of equal length (any comparable values,
    e.g. class indices or strings); only names present in both are scored. Used with the CUB
    stand-in, whose captions and pictures are generated from known attributes.
    """
    out: dict[str, float] = {}
    for key in [k for k in true if k in pred]:
        p, t = np.asarray(pred[key]), np.asarray(true[key])
        if p.shape != t.shape:
            raise ValueError(f"attribute {key!r}: predictions {p.shape} and truth {t.shape} differ in shape")
        out[key] = float((p == t).mean()) if p.size else float("nan")
    if not out:
        raise ValueError("no attribute is present in both pred and true")
    out["mean"] = float(np.nanmean(list(out.values())))
    return out


def caption_attribute_scores(captions: Sequence[str], attributes: Any, attribute_names: Sequence[str]
                             ) -> dict[str, Any]:
    """How well captions name the part colours of the birds they describe (CUB stand-in only).

    ``captions[i]`` is scored against row ``i`` of ``attributes`` (N, A) (columns named by
    ``attribute_names``, values indexing :data:`mmvae_lite.data.standins.BIRD_ATTRIBUTES`); the
    claims are read by :func:`mmvae_lite.data.standins.claimed_attributes`. Returns:

    * ``described``: the fraction of captions that name at least one part colour and name every
      one of them right (a caption "describes its image");
    * ``with_claims``: the fraction of captions that name any part colour;
    * ``claim_accuracy``: the fraction of all claims that are right; ``claims``: their number;
    * ``per_attribute``: the agreement per attribute (:func:`attribute_accuracy`), over the claims.
    """
    from ..data.standins import claimed_attributes
    attrs = np.asarray(torch.as_tensor(attributes).cpu())
    if attrs.ndim != 2 or len(attrs) != len(captions) or attrs.shape[1] != len(attribute_names):
        raise ValueError(f"attributes must be (N, A) = ({len(captions)}, {len(attribute_names)}) for "
                         f"{len(captions)} captions, got shape {attrs.shape}")
    if not len(captions):
        raise ValueError("caption_attribute_scores needs at least one caption")
    col = {name: j for j, name in enumerate(attribute_names)}
    pred: dict[str, list[int]] = {}
    true: dict[str, list[int]] = {}
    described = with_claims = right = claims = 0
    for text, row in zip(captions, attrs):
        said = {a: v for a, v in claimed_attributes(text).items() if a in col}
        ok = [v == int(row[col[a]]) for a, v in said.items()]
        for a, v in said.items():
            pred.setdefault(a, []).append(v)
            true.setdefault(a, []).append(int(row[col[a]]))
        claims += len(ok)
        right += sum(ok)
        with_claims += bool(ok)
        described += bool(ok) and all(ok)
    n = len(captions)
    return {"described": described / n, "with_claims": with_claims / n,
            "claim_accuracy": right / claims if claims else float("nan"), "claims": claims,
            "per_attribute": attribute_accuracy(pred, true) if claims else {}}


def image_caption_scores(model: MultimodalVAE, test: Any, *, n_images: Optional[int] = None, seed: int = 0,
                         batch_size: int = 500) -> dict[str, Any]:
    """:func:`caption_attribute_scores` of the captions a model writes for the stand-in's test
    images: one caption per image (its first caption row), from one sample z ~ q(z | image)
    decoded to the most likely token at each position; ``n_images``: the first ones (None: all).
    Deterministic in ``seed``. ``test`` is a :class:`~mmvae_lite.data.CUBDataset` of the stand-in."""
    model = require_multimodal(model, "image_caption_scores", "captions are generated from images")
    if getattr(test, "attributes", None) is None or getattr(test, "vocab", None) is None:
        raise ValueError("image_caption_scores needs the CUB stand-in's test set (its birds' attributes "
                         "and vocabulary); real CUB has no attributes to check captions against")
    n_images = check_int(n_images, "n_images", none=True)
    batch_size = check_int(batch_size, "batch_size")
    # the first caption row of every image, in image order
    rows = torch.unique(torch.as_tensor(test.image_index), sorted=True, return_inverse=True)[1]
    first = torch.full((int(rows.max()) + 1,), len(rows), dtype=torch.long).scatter_reduce(
        0, rows, torch.arange(len(rows)), reduce="amin")
    first = first[:n_images] if n_images is not None else first
    dev = device_of(model)
    texts: list[str] = []
    with evaluation_mode(model), seeded(seed, dev):
        for i in range(0, len(first), batch_size):
            batch = test.get_batch(first[i:i + batch_size], device=dev)
            ids = model.cross_reconstruct({"image": batch["image"]}, K=1)["image"]["sentence"][0]
            texts += [test.vocab.decode(t) for t in ids.cpu()]
    attrs = test.caption_attributes()[first]
    out = caption_attribute_scores(texts, attrs, test.attribute_names)
    out["n_images"], out["examples"] = len(first), texts[:10]
    return out
