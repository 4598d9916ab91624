"""Captions: the tokeniser and the vocabulary, in the MMVAE authors' conventions."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import numpy as np
import torch

from .files import DataError, PathLike

__all__ = ["VocabMismatchError", "CaptionTooLongError", "tokenize", "Vocab"]


class VocabMismatchError(DataError, ValueError):
    """A vocabulary differs from the one a model/checkpoint was trained with."""


class CaptionTooLongError(DataError, ValueError):
    """A caption has more tokens than the maximum sentence length (``on_long="error"``)."""


# Split like nltk's word_tokenize does on these captions: clitics ('s, n't, 're ...)
# become their own tokens, hyphenated words and words joined by a period stay whole
# ("light-brown", "beak.and"), every other punctuation character is a token, "..." is one.
_CLITIC_RE = re.compile(r"(?<=[a-z])(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN_RE = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+(?:[-.'][a-z0-9]+)*|\.\.\.|\S")


_CANNOT_RE = re.compile(r"\b(can)(not)\b")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokenisation equivalent in effect to ``nltk.word_tokenize`` on
    CUB captions, without needing nltk or its punkt data.

    On the 29,330 real test-class captions it gives the same tokens as nltk's
    ``NLTKWordTokenizer`` applied to the lower-cased line for all lines but one
    (``"rump.,"``: nltk keeps ``"rump."`` whole, this gives ``"rump", "."``).
    """
    text = _CLITIC_RE.sub(r" \1", text.lower())
    text = _CANNOT_RE.sub(r"\1 \2", text)
    return _TOKEN_RE.findall(text)


class Vocab:
    """Word <-> index map for captions, in the MMVAE authors' conventions.

    Index 0 is ``<exc>`` (the authors' unknown/excluded-word token), 1 ``<pad>``,
    2 ``<eos>``; then the training words in order of first appearance. A sentence is
    encoded as its first ``max_length - 1`` tokens, ``<eos>``, then ``<pad>`` up to
    ``max_length``.
    """

    SPECIALS = ("<exc>", "<pad>", "<eos>")

    def __init__(self, words: Sequence[str], max_length: int = 32, min_occ: int = 3) -> None:
        words = list(words)
        if tuple(words[:3]) != self.SPECIALS:
            raise ValueError(f"a vocabulary must start with {self.SPECIALS}")
        if len(set(words)) != len(words):
            raise ValueError("duplicate words in vocabulary")
        if max_length < 2:
            raise ValueError("max_length must be >= 2")
        self.i2w: list[str] = words
        self.w2i: dict[str, int] = {w: i for i, w in enumerate(words)}
        self.max_length = int(max_length)
        self.min_occ = int(min_occ)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_captions(cls, captions: Sequence[str], min_occ: int = 3,
                      max_length: int = 32) -> "Vocab":
        """Build from *training* captions: a word is kept if it occurs more than
        ``min_occ`` times (the authors' rule: words seen ``<= min_occ`` times map to ``<exc>``)."""
        counts: Counter[str] = Counter()
        for c in captions:
            counts.update(tokenize(c))
        words = [w for w, n in counts.items() if n > min_occ and w not in cls.SPECIALS]
        return cls(list(cls.SPECIALS) + words, max_length, min_occ)

    # --- basic protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.i2w)

    def __contains__(self, word: str) -> bool:
        return word in self.w2i

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.i2w == other.i2w

    def __repr__(self) -> str:
        return f"Vocab({len(self)} words, max_length={self.max_length}, id={self.fingerprint()})"

    @property
    def exc_idx(self) -> int:
        return 0

    unk_idx = exc_idx

    @property
    def pad_idx(self) -> int:
        return 1

    @property
    def eos_idx(self) -> int:
        return 2

    # --- encoding -----------------------------------------------------------------------------
    def _ids(self, tokens: list[str]) -> tuple[list[int], bool]:
        truncated = len(tokens) > self.max_length - 1
        tokens = tokens[: self.max_length - 1]
        ids = [self.w2i.get(t, 0) for t in tokens] + [2]
        return ids + [1] * (self.max_length - len(ids)), truncated

    def encode(self, text: str, on_long: Literal["truncate", "error"] = "truncate") -> torch.Tensor:
        """Caption -> LongTensor (max_length,). See :meth:`encode_many` for ``on_long``."""
        return self.encode_many([text], on_long)[0][0]

    def encode_many(self, texts: Sequence[str], on_long: Literal["truncate", "error"] = "truncate"
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Encode captions.

        Args:
            texts: captions.
            on_long: captions with ``max_length`` tokens or more (no room for
                ``<eos>``) are cut to ``max_length - 1`` tokens plus ``<eos>`` (the
                authors' behaviour, ``"truncate"``) or raise
                :class:`CaptionTooLongError` (``"error"``).

        Returns:
            ``(ids, lengths, n_truncated)``: LongTensor (N, max_length), LongTensor (N,)
            of lengths including ``<eos>``, and the number of truncated captions.
        """
        if on_long not in ("truncate", "error"):
            raise ValueError(f"on_long must be 'truncate' or 'error', got {on_long!r}")
        ids = np.empty((len(texts), self.max_length), dtype=np.int64)
        lengths = np.empty(len(texts), dtype=np.int64)
        n_trunc, first = 0, None
        for i, t in enumerate(texts):
            toks = tokenize(t)
            row, cut = self._ids(toks)
            ids[i] = row
            lengths[i] = min(len(toks), self.max_length - 1) + 1
            if cut:
                n_trunc += 1
                first = i if first is None else first
        if n_trunc and on_long == "error":
            raise CaptionTooLongError(
                f"{n_trunc} of {len(texts)} captions are longer than the maximum of "
                f"{self.max_length - 1} tokens + <eos> (first: caption {first}, "
                f"{len(tokenize(texts[first]))} tokens: {texts[first][:80]!r}...). Use "
                f"on_long='truncate' to cut them as the MMVAE authors do, or a larger max_length.")
        return torch.from_numpy(ids), torch.from_numpy(lengths), n_trunc

    def decode(self, ids: Union[torch.Tensor, Sequence[int]], strip: bool = True) -> str:
        """Token ids -> text. With ``strip``, stop at ``<eos>`` and drop ``<pad>``."""
        out = []
        for i in torch.as_tensor(ids).flatten().tolist():
            if not 0 <= i < len(self.i2w):
                raise VocabMismatchError(
                    f"token id {i} is outside this vocabulary of {len(self)} words; the ids "
                    f"come from a different vocabulary (check Vocab.check_compatible).")
            w = self.i2w[i]
            if strip and w == "<eos>":
                break
            if strip and w == "<pad>":
                continue
            out.append(w)
        return " ".join(out)

    # --- identity and persistence -----------------------------------------------------------------
    def fingerprint(self) -> str:
        """Short sha256 of the word list and maximum length (identifies the vocabulary)."""
        h = hashlib.sha256(("\n".join(self.i2w) + f"\n#max_length={self.max_length}").encode())
        return h.hexdigest()[:16]

    def check_compatible(self, expected: Union[int, str, "Vocab"]) -> None:
        """Raise :class:`VocabMismatchError` unless this vocabulary matches ``expected``
        (a vocabulary size, a :meth:`fingerprint`, or another :class:`Vocab`)."""
        if isinstance(expected, Vocab):
            expected = expected.fingerprint()
        if isinstance(expected, (int, np.integer)):
            if int(expected) != len(self):
                raise VocabMismatchError(
                    f"vocabulary size mismatch: the data give {len(self)} words, the model "
                    f"expects {int(expected)}. The model was trained with another caption "
                    f"vocabulary (different training captions, min_occ or data source); "
                    f"load the vocab saved with the checkpoint (Vocab.load) or retrain.")
            return
        if str(expected) != self.fingerprint():
            raise VocabMismatchError(
                f"vocabulary fingerprint mismatch: data {self.fingerprint()} (size {len(self)}), "
                f"expected {expected}. Load the vocab saved with the checkpoint (Vocab.load) "
                f"or retrain with this one.")

    def to_dict(self) -> dict[str, Any]:
        return {"words": self.i2w, "max_length": self.max_length, "min_occ": self.min_occ,
                "fingerprint": self.fingerprint()}

    def save(self, path: PathLike) -> None:
        """Write the vocabulary as JSON (``words``, ``max_length``, ``min_occ``, ``fingerprint``)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: PathLike) -> "Vocab":
        """Read a vocabulary written by :meth:`save`.

        Raises:
            DataError: unreadable file, or its recorded fingerprint does not match.
        """
        try:
            d = json.loads(Path(path).read_text())
            v = cls(d["words"], d.get("max_length", 32), d.get("min_occ", 3))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path} is not a vocabulary file written by Vocab.save ({e}).") \
                from None
        if "fingerprint" in d and d["fingerprint"] != v.fingerprint():
            raise VocabMismatchError(f"{path} is corrupt: its word list does not match its "
                                     f"recorded fingerprint {d['fingerprint']}.")
        return v
