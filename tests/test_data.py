"""Tests of the data layer: directories, checksums, real-or-stand-in selection, pairing,
stand-ins, caption tokenisation and vocabulary, dataset batching, fetch-script failure paths.

Offline and fast. Tests that read the real MNIST / CUB files skip when the shared data
directory (``../shared/data`` beside the checkout, or ``$MMVAE_LITE_DATA``) is absent.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from mmvae_lite import data
from mmvae_lite.data import standins
from mmvae_lite.data import (CaptionTooLongError, DataError, UnknownDatasetError, Vocab,
                             VocabMismatchError, download, files, mnist_svhn, sources)


def _shared_data() -> Path | None:
    candidates = []
    if os.environ.get("MMVAE_LITE_DATA"):
        candidates.append(Path(os.environ["MMVAE_LITE_DATA"]))
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if (c / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return c
    return None


SHARED = _shared_data()
needs_real_mnist = pytest.mark.skipif(SHARED is None, reason="real MNIST not found (../shared/data "
                                                            "or $MMVAE_LITE_DATA)")
needs_real_captions = pytest.mark.skipif(
    SHARED is None or not (SHARED / "cub" / "text_testclasses.txt").is_file(),
    reason="real CUB test captions not found")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep every cache inside tmp_path; no environment leaks between tests; no downloads
    (tests/test_download.py tests those)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.delenv(data.CACHE_ENV, raising=False)
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    # keep the stand-ins small so that the loaders run in a fraction of a second
    monkeypatch.setattr(mnist_svhn, "SVHN_STANDIN_SIZE", {"train": 400, "test": 200})


# ----------------------------------------------------------------------------------------
# helpers: fake data files registered with their checksums
# ----------------------------------------------------------------------------------------
def _register(monkeypatch, key: str, path: Path) -> None:
    """Make ``path``'s content the 'known good' version of ``key`` for this test."""
    spec = data.KNOWN_FILES[key]
    blob = path.read_bytes()
    if spec.algo == "git-blob-sha1":
        digest = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
    else:
        digest = hashlib.new(spec.algo, blob).hexdigest()
    monkeypatch.setitem(data.KNOWN_FILES, key, dataclasses.replace(spec, digest=digest,
                                                                    size=len(blob)))


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """An IDX file of unsigned bytes (MNIST's format, as torchvision unpacks it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, monkeypatch, n: int = 300) -> None:
    rng = np.random.default_rng(0)
    for split, (img, lab) in sources.MNIST_FILES.items():
        m = n if split == "train" else n // 2
        labels = np.arange(m) % 10
        images = rng.integers(0, 256, (m, 28, 28))
        for key, arr in ((img, images), (lab, labels)):
            path = root / key
            _write_idx(path, arr)
            _register(monkeypatch, key, path)


def _fake_svhn(root: Path, monkeypatch, n: int = 120) -> None:
    import scipy.io

    rng = np.random.default_rng(1)
    for split, key in sources.SVHN_FILES.items():
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # SVHN stores digit 0 as 10
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(path), {"X": x, "y": y})
        _register(monkeypatch, key, path)


# ----------------------------------------------------------------------------------------
# data directory
# ----------------------------------------------------------------------------------------
def test_data_root_resolution(tmp_path, monkeypatch):
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    assert data.data_root(explicit) == explicit.resolve()
    with pytest.raises(DataError, match="does not exist"):
        data.data_root(tmp_path / "nope")
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv(data.DATA_ENV, str(env))
    assert data.data_root() == env.resolve()
    assert data.data_root(explicit) == explicit.resolve()  # argument beats the variable
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "missing"))
    with pytest.raises(DataError, match=data.DATA_ENV):
        data.data_root()
    monkeypatch.delenv(data.DATA_ENV)
    default = data.data_root()
    assert default == tmp_path / "home" / ".cache" / "mmvae_lite" and default.is_dir()


def test_cache_dir_not_inside_read_only_root(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    assert data.cache_dir(root) == root / "derived"
    (root / "derived").rmdir()
    root.chmod(0o555)
    try:
        cdir = data.cache_dir(root)
        assert cdir is not None and root not in cdir.parents
        assert not (root / "derived").exists()
    finally:
        root.chmod(0o755)


# ----------------------------------------------------------------------------------------
# checksums
# ----------------------------------------------------------------------------------------
def test_missing_file_names_fetch_command(tmp_path):
    with pytest.raises(DataError) as e:
        data.require_file("MNIST/raw/train-labels-idx1-ubyte.gz", tmp_path)
    msg = str(e.value)
    assert "train-labels-idx1-ubyte.gz" in msg
    assert data.KNOWN_FILES["MNIST/raw/train-labels-idx1-ubyte.gz"].digest in msg
    assert f"python -m data_prep.mnist_svhn --root {tmp_path.resolve()}" in msg


def test_corrupt_and_truncated_files_are_rejected(tmp_path):
    key = "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    spec = data.KNOWN_FILES[key]
    path = tmp_path / key
    path.parent.mkdir(parents=True)
    if SHARED is not None:
        good = (SHARED / key).read_bytes()
        bad = bytearray(good)
        bad[100] ^= 0xFF
    else:
        bad = bytearray(os.urandom(spec.size))
    path.write_bytes(bytes(bad))  # right size, wrong bytes
    with pytest.raises(DataError) as e:
        data.require_file(key, tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "wrong checksum" in msg and spec.digest in msg
    assert "python -m data_prep.mnist_svhn" in msg
    path.write_bytes(bytes(bad[:1000]))  # truncated
    with pytest.raises(DataError, match="truncated"):
        data.require_file(key, tmp_path)
    # a present-but-corrupt file is an error even when stand-ins are allowed
    with pytest.raises(DataError):
        data.resolve_source("mnist", tmp_path, "auto", "test")


def test_verification_is_cached(tmp_path, monkeypatch):
    key = "SVHN/test_32x32.mat"
    path = tmp_path / "SVHN" / "test_32x32.mat"
    path.parent.mkdir()
    path.write_bytes(b"x" * 1000)
    _register(monkeypatch, key, path)
    data.verify_file(path, key, tmp_path)
    records = json.loads((tmp_path / "derived" / "verified.json").read_text())
    assert any(str(path.resolve()) in k for k in records)

    def no_hashing(*args, **kwargs):
        raise AssertionError("file hashed again")

    monkeypatch.setattr(files, "digest", no_hashing)
    data.verify_file(path, key, tmp_path)  # served from the record
    path.write_bytes(b"y" * 1000)  # new content -> new mtime -> hashed again
    os.utime(path, ns=(1, 1))
    with pytest.raises(AssertionError, match="hashed again"):
        data.verify_file(path, key, tmp_path)


def test_git_blob_checksum_of_real_test_captions():
    if SHARED is None or not (SHARED / "cub" / "text_testclasses.txt").is_file():
        pytest.skip("real CUB test captions not found")
    # the same algorithm checks text_trainvalclasses.txt, whose only reference is its git blob id
    assert files.digest(SHARED / "cub" / "text_testclasses.txt", "git-blob-sha1") == \
        "e392e3dee667707764994624ac0e842606d932e0"


def test_unreadable_idx_gives_data_error(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, monkeypatch)
    key = "MNIST/raw/t10k-images-idx3-ubyte"
    path = tmp_path / key
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:500])
    _register(monkeypatch, key, path)  # checksum "ok": the reader itself must complain
    with pytest.raises(DataError, match="torchvision could not read .*MNIST/raw.*data_prep.mnist_svhn"):
        data.load_mnist("test", tmp_path, verbose=False)


# ----------------------------------------------------------------------------------------
# real-or-stand-in rule
# ----------------------------------------------------------------------------------------
def test_resolve_source_rule(tmp_path, monkeypatch, capsys):
    src = data.resolve_source("svhn", tmp_path, "auto")
    assert src.kind == "standin" and "python -m data_prep.mnist_svhn" in src.reason
    with pytest.raises(DataError, match="not found"):
        data.resolve_source("svhn", tmp_path, "never")
    assert data.resolve_source("svhn", tmp_path, "always").kind == "standin"
    with pytest.raises(DataError):  # MNIST has no stand-in
        data.resolve_source("mnist", tmp_path, "auto")
    with pytest.raises(UnknownDatasetError, match="valid names"):
        data.resolve_source("imagenet", tmp_path)

    ds = data.load_svhn("test", tmp_path)
    out = capsys.readouterr().out
    assert out.count("[mmvae_lite]") == 1 and "stand-in house-number" in out
    assert ds.source["svhn"].kind == "standin" and len(ds) == 200

    _fake_svhn(tmp_path, monkeypatch)
    assert data.resolve_source("svhn", tmp_path, "auto").kind == "real"
    assert data.resolve_source("svhn", tmp_path, "never").kind == "real"
    ds = data.load_svhn("train", tmp_path, verbose=False)
    assert ds.source["svhn"].kind == "real"
    assert ds.bases["svhn"].shape == (120, 3, 32, 32) and ds.bases["svhn"].dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.labels.min() == 0 and ds.labels.max() == 9
    assert int(ds.labels[9]) == 0  # label 10 -> 0


def test_env_var_selects_data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    _fake_mnist(root, monkeypatch)
    monkeypatch.setenv(data.DATA_ENV, str(root))
    assert data.resolve_source("mnist").kind == "real"
    assert data.resolve_source("svhn").kind == "standin"


def test_mnist_through_torchvision_and_batches(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, monkeypatch)
    ds = data.load_mnist("train", tmp_path, verbose=False)
    assert len(ds) == 300 and ds.bases["mnist"].dtype == torch.uint8
    item = ds[3]
    assert set(item) == {"mnist", "label"} and int(item["label"]) == 3
    assert item["mnist"].shape == (1, 28, 28) and item["mnist"].dtype == torch.float32
    batches = list(ds.batches(128, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [b["mnist"].shape[0] for b in batches] == [128, 128, 44]
    assert all(0 <= b["mnist"].min() and b["mnist"].max() <= 1 for b in batches)
    assert len(list(ds.batches(128, drop_last=True))) == 2
    b = next(ds.batches(8, shuffle=False, with_labels=True))
    assert torch.equal(b["label"], ds.labels[:8])
    assert torch.equal(b["mnist"], ds.bases["mnist"][:8].float() / 255)


@needs_real_mnist
def test_real_mnist(capsys):
    train = data.load_mnist("train", SHARED)
    test = data.load_mnist("test", SHARED)
    assert "MNIST train: real, 60000 images" in capsys.readouterr().out
    assert train.bases["mnist"].shape == (60000, 1, 28, 28)
    assert test.bases["mnist"].shape == (10000, 1, 28, 28)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ----------------------------------------------------------------------------------------
# MNIST-SVHN pairing
# ----------------------------------------------------------------------------------------
def test_pair_indices_properties():
    g = torch.Generator().manual_seed(0)
    la = torch.randint(0, 10, (700,), generator=g)
    lb = torch.randint(0, 10, (500,), generator=g)
    lb[lb == 9] = 8  # class 9 only in la: must not be paired
    ia, ib = data.pair_indices(la, lb, multiplier=5, max_per_class=30, seed=3)
    assert torch.equal(la[ia], lb[ib])
    assert 9 not in la[ia].tolist()
    for c in range(9):
        n_c = min(int((la == c).sum()), int((lb == c).sum()), 30)
        assert int((la[ia] == c).sum()) == 5 * n_c
        # every selected instance is used exactly `multiplier` times
        assert set(torch.bincount(ia[la[ia] == c]).unique().tolist()) <= {0, 5}
        assert set(torch.bincount(ib[lb[ib] == c]).unique().tolist()) <= {0, 5}
    again = data.pair_indices(la, lb, multiplier=5, max_per_class=30, seed=3)
    assert torch.equal(again[0], ia) and torch.equal(again[1], ib)
    other = data.pair_indices(la, lb, multiplier=5, max_per_class=30, seed=4)
    assert not torch.equal(other[0], ia)


def test_mnist_svhn_dataset(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, monkeypatch)
    ds = data.load_mnist_svhn("train", tmp_path, multiplier=3, verbose=False)
    assert ds.source["mnist"].kind == "real" and ds.source["svhn"].kind == "standin"
    svhn_labels = standins.house_numbers(400, mnist_svhn.STANDIN_SEED["train"])[1]
    assert len(ds) == 3 * 300  # every MNIST class (30) has 40 stand-in partners
    mnist_labels = ds.bases["mnist"].new_tensor(np.arange(300) % 10).long()
    assert torch.equal(mnist_labels[ds.mnist_index], svhn_labels[ds.svhn_index])
    assert torch.equal(ds.labels, svhn_labels[ds.svhn_index])
    item = ds[5]
    assert set(item) == {"mnist", "svhn", "label"} and int(item["label"]) == int(ds.labels[5])
    assert item["mnist"].shape == (1, 28, 28) and item["svhn"].shape == (3, 32, 32)
    b = next(ds.batches(64, generator=torch.Generator().manual_seed(1)))
    assert set(b) == {"mnist", "svhn"}
    assert b["mnist"].shape == (64, 1, 28, 28) and b["svhn"].shape == (64, 3, 32, 32)
    assert b["mnist"].dtype == b["svhn"].dtype == torch.float32
    assert list(tmp_path.glob("derived/mnist_svhn_train_idx_*.pt"))  # cached index file
    ds2 = data.load_mnist_svhn("train", tmp_path, multiplier=3, verbose=False)
    assert torch.equal(ds2.mnist_index, ds.mnist_index)
    sub = data.load_mnist_svhn("train", tmp_path, multiplier=3, subset=50, verbose=False)
    sub2 = data.load_mnist_svhn("train", tmp_path, multiplier=3, subset=50, verbose=False)
    assert len(sub) == 50 and torch.equal(sub.mnist_index, sub2.mnist_index)
    assert "pairs" in ds.banner and "stand-in" in ds.banner


def test_mnist_svhn_max_per_class(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, monkeypatch)
    ds = data.load_mnist_svhn("train", tmp_path, multiplier=2, max_per_class=7, verbose=False)
    assert ds.labels.bincount().tolist() == [14] * 10


# ----------------------------------------------------------------------------------------
# stand-ins
# ----------------------------------------------------------------------------------------
def test_house_numbers_deterministic_and_balanced(tmp_path):
    x, y = standins.house_numbers(200, seed=3)
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert y.bincount().tolist() == [20] * 10
    x2, y2 = standins.house_numbers(200, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = standins.house_numbers(200, seed=4)
    assert not torch.equal(x, x3)
    # not blank and not saturated: real-looking intensity statistics
    assert 40 < x.float().mean() < 215 and x.float().std() > 20
    # cached copy round-trips
    xc, yc = standins.house_numbers(200, seed=3, cache_dir=tmp_path)
    assert list(tmp_path.glob("house_numbers_n200_s3_v*.npz"))
    xc2, _ = standins.house_numbers(200, seed=3, cache_dir=tmp_path)
    assert torch.equal(xc, x) and torch.equal(xc2, x)


def test_bird_captions_follow_attributes():
    out = standins.bird_captions(30, seed=1, captions_per_image=4)
    assert out.images.shape == (30, 3, 64, 64) and out.images.dtype == torch.uint8
    assert len(out.captions) == 120 and out.attributes.shape == (30, len(standins.BIRD_ATTRIBUTES))
    names = list(out.attribute_names)
    crown = names.index("crown_color")
    colours = standins.BIRD_ATTRIBUTES["crown_color"]
    checked = 0
    for j, cap in enumerate(out.captions):
        assert cap == cap.lower() and cap.endswith(".")
        m = re.search(r"\b(?:a|an) (\w+) crown", cap)
        if m:
            assert m.group(1) == colours[out.attributes[j // 4, crown]]
            checked += 1
    assert checked > 5
    again = standins.bird_captions(30, seed=1, captions_per_image=4)
    assert torch.equal(again.images, out.images) and again.captions == out.captions
    text_only = standins.bird_captions(30, seed=1, captions_per_image=4, with_images=False)
    assert text_only.images is None and text_only.captions == out.captions


def test_standin_features():
    birds = standins.bird_captions(6, seed=0)
    f = standins.standin_features(birds.images)
    assert f.shape == (6, 2048) and (f >= 0).all() and f.mean() > 0
    assert torch.equal(f, standins.standin_features(birds.images))


# ----------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------
def test_tokenize_matches_nltk_style():
    assert data.tokenize("This bird's beak is light-brown, doesn't it? (yes)") == [
        "this", "bird", "'s", "beak", "is", "light-brown", ",", "does", "n't", "it", "?",
        "(", "yes", ")"]
    assert data.tokenize("a bird.") == ["a", "bird", "."]


def test_vocab_build_encode_decode_roundtrip(tmp_path):
    caps = ["a red bird with a short beak ."] * 4 + ["a rare word ."] * 3
    v = Vocab.from_captions(caps, min_occ=3, max_length=12)
    assert v.i2w[:3] == ["<exc>", "<pad>", "<eos>"]
    assert (v.exc_idx, v.pad_idx, v.eos_idx) == (0, 1, 2)
    assert "red" in v and "rare" not in v  # seen 4 times kept, 3 times -> <exc>
    ids = v.encode("A red bird with a short beak.")
    assert ids.shape == (12,) and ids.dtype == torch.int64
    assert v.decode(ids) == "a red bird with a short beak ."
    assert ids[8].item() == v.eos_idx and (ids[9:] == v.pad_idx).all()
    assert v.decode(v.encode("a rare word")) == "a <exc> <exc>"

    long = " ".join(["red"] * 20)
    ids = v.encode(long)
    assert ids[-1].item() == v.eos_idx and (ids[:-1] == v.w2i["red"]).all()
    batch, lengths, n_trunc = v.encode_many([long, "a red bird"])
    assert n_trunc == 1 and lengths.tolist() == [12, 4]
    with pytest.raises(CaptionTooLongError, match="longer than the maximum"):
        v.encode_many([long], on_long="error")

    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert w == v and w.fingerprint() == v.fingerprint()
    w.check_compatible(len(v))
    w.check_compatible(v.fingerprint())
    with pytest.raises(VocabMismatchError, match="size mismatch"):
        v.check_compatible(len(v) + 1)
    other = Vocab.from_captions(caps + ["blue blue blue blue"], min_occ=3, max_length=12)
    with pytest.raises(VocabMismatchError, match="fingerprint"):
        v.check_compatible(other)
    with pytest.raises(VocabMismatchError):
        v.decode([len(v) + 5])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError):
        Vocab.load(tmp_path / "bad.json")


def test_load_cub_standin(tmp_path):
    for form, shape in (("features", (2048,)), ("images", (3, 64, 64))):
        tr = data.load_cub("train", tmp_path, image_form=form, n_images=40, verbose=False)
        te = data.load_cub("test", tmp_path, image_form=form, n_images=20, vocab=tr.vocab,
                           verbose=False)
        assert len(tr) == 400 and len(te) == 200 and tr.vocab == te.vocab
        assert tr.source["image"].kind == "standin" and tr.attributes.shape[0] == 40
        b = next(tr.batches(16, generator=torch.Generator().manual_seed(0)))
        assert set(b) == {"image", "sentence"}
        assert b["image"].shape == (16, *shape) and b["image"].dtype == torch.float32
        assert b["sentence"].shape == (16, 32) and b["sentence"].dtype == torch.int64
        item = tr[13]
        assert set(item) == {"image", "sentence"} and item["image"].shape == shape
        sent = item["sentence"]
        assert torch.equal(sent, tr.bases["sentence"][13])
        assert tr.vocab.decode(sent) == " ".join(data.tokenize(tr.captions[13]))
        assert tr.caption_attributes().shape == (400, len(tr.attribute_names))
    feats = data.load_cub("train", tmp_path, n_images=40, verbose=False)
    imgs, idx = feats.nearest_images(feats.bases["image"][:5], k=2)
    assert imgs.shape == (5, 2, 3, 64, 64) and idx[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert "NOT ResNet-101" in feats.banner


def _fake_real_cub(root: Path, monkeypatch, per_split=(("train", 3), ("test", 2))) -> None:
    """A miniature CUB in the MMVAE layout: image folders, caption files, features."""
    from PIL import Image

    colours = {}
    for split, n_classes in per_split:
        lines = []
        feats = []
        for c in range(n_classes):
            folder = root / "cub" / split / f"{c:03d}.Bird_{split}_{c}"
            folder.mkdir(parents=True)
            for k in range(2):
                rgb = (40 * c + 20 * k, 200 - 30 * c, 60 + 50 * k)
                Image.new("RGB", (80, 60), rgb).save(folder / f"img_{k}.png")
                colours.setdefault(split, []).append(rgb)
                lines += [f"this bird number {c} {k} is colour {rgb[0]} ." for _ in range(10)]
                feats.append(torch.full((2048,), float(len(feats))))
        key = sources.CUB_CAPTION_FILES[split]
        path = root / key
        path.write_text("\n".join(lines) + "\n")
        _register(monkeypatch, key, path)
        (root / "cub" / "resnet101_2048").mkdir(exist_ok=True)
        torch.save(torch.stack(feats), root / "cub" / "resnet101_2048" / f"{split}.ft")


def test_real_cub_layout(tmp_path, monkeypatch):
    _fake_real_cub(tmp_path, monkeypatch)
    tr = data.load_cub("train", tmp_path, verbose=False)
    assert tr.source["sentence"].kind == "real" and tr.source["image"].kind == "real"
    assert len(tr) == 60 and tr.image_form == "features" and tr.attributes is None
    # caption j belongs to image j // 10, in ImageFolder order
    assert torch.equal(tr.image_index, torch.arange(60) // 10)
    b = tr.get_batch([0, 15, 59])
    assert b["image"][:, 0].tolist() == [0.0, 1.0, 5.0]
    assert tr.captions[15].startswith("this bird number 0 1")
    assert tr.images.shape == (6, 3, 64, 64)
    imgs, idx = tr.nearest_images(torch.full((1, 2048), 4.1))
    assert idx.tolist() == [[4]]
    te = data.load_cub("test", tmp_path, image_form="images", verbose=False)
    assert len(te) == 40 and te.bases["image"].shape == (4, 3, 64, 64)
    assert te.vocab == tr.vocab
    # first test image is a flat colour: the 64x64 version keeps it
    assert te.get_batch([0])["image"][0, :, 10, 10].mul(255).round().tolist() == [0.0, 200.0, 60.0]
    # a missing image folder with standin="never" is an error naming it
    import shutil
    shutil.rmtree(tmp_path / "cub" / "test")
    with pytest.raises(DataError, match="cub/test"):
        data.load_cub("test", tmp_path, image_form="images", standin="never", verbose=False)


@needs_real_captions
def test_real_cub_test_captions(capsys):
    tr = data.load_cub("train", SHARED, captions="real")
    te = data.load_cub("test", SHARED, captions="real")
    out = capsys.readouterr().out
    assert "split 80/20 by image because the train-class captions are missing" in out
    assert len(tr) + len(te) == 29330 and len(tr) == 2346 * 10
    assert tr.keys == ("sentence",) and tr.vocab == te.vocab
    assert 800 < len(tr.vocab) < 1590
    assert tr.n_truncated > 0 and (tr.lengths <= 32).all()
    s = tr.bases["sentence"]
    assert ((s == tr.vocab.eos_idx).sum(1) == 1).all()  # exactly one <eos> per sentence
    with pytest.raises(DataError):
        data.load_cub("train", SHARED, standin="never")


# ----------------------------------------------------------------------------------------
# dispatch and scripts
# ----------------------------------------------------------------------------------------
def test_unknown_dataset_name():
    with pytest.raises(UnknownDatasetError) as e:
        data.load_dataset("mnist-cifar")
    for name in ("mnist", "svhn", "mnist-svhn", "cub"):
        assert name in str(e.value)
    assert isinstance(e.value, ValueError)


def test_load_dataset_dispatch(tmp_path):
    ds = data.load_dataset("SVHN", "test", root=tmp_path, verbose=False)
    assert ds.keys == ("svhn",) and len(ds) == 200


def test_fetch_scripts_fail_cleanly_offline(tmp_path, monkeypatch, capsys):
    from data_prep import cub, mnist_svhn as script

    with pytest.raises(SystemExit) as e:
        script.main(["--help"])
    assert e.value.code == 0
    assert script.main(["--root", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and data.KNOWN_FILES["SVHN/test_32x32.mat"].digest in out

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(download, "_probed", {})
    assert script.main(["--root", str(tmp_path / "new")]) == 1
    err = capsys.readouterr().err
    assert "MNIST: no source reachable" in err and "offline" in err
    assert cub.main(["--root", str(tmp_path)]) == 1
    assert "could not download cub.zip" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob(".download-*"))


def test_check_hashes_every_file(tmp_path, monkeypatch, capsys):
    """``--check`` never trusts the size+mtime record: changed bytes with the old mtime are caught."""
    from data_prep import mnist_svhn as script

    _fake_mnist(tmp_path, monkeypatch)
    key = "MNIST/raw/t10k-labels-idx1-ubyte"
    path = tmp_path / key
    data.verify_file(path, key, tmp_path)  # recorded as verified
    st = path.stat()
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    data.verify_file(path, key, tmp_path)  # a loader trusts the record (by design: fast)
    assert script.main(["--root", str(tmp_path), "--check", "--skip-svhn"]) == 1
    out = capsys.readouterr().out
    assert f"[CORRUPT] {key}" in out and "wrong checksum" in out


def test_default_collate_gives_the_batches_format(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, monkeypatch)
    ds = data.load_mnist_svhn("test", tmp_path, multiplier=2, verbose=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
    b = next(iter(loader))
    ref = ds.get_batch(range(16), with_labels=True)
    assert set(b) == set(ref) == {"mnist", "svhn", "label"}
    for k in ref:
        assert torch.equal(b[k], ref[k]) and b[k].dtype == ref[k].dtype


def test_bases_of_other_dtypes(tmp_path):
    x64 = torch.rand(5, 3, dtype=torch.float64)
    ds = data.GatherDataset({"x": x64})
    assert ds.bases["x"].dtype == torch.float32 and ds[0]["x"].dtype == torch.float32
    with pytest.raises(TypeError, match="'x' has dtype torch.int32.*accepted"):
        data.GatherDataset({"x": torch.zeros(5, 3, dtype=torch.int32)})


def test_feature_extraction_helper(tmp_path):
    from PIL import Image

    from data_prep.cub import extract_features

    for cls in ("001.A", "002.B"):
        (tmp_path / cls).mkdir()
        for k in range(3):
            Image.new("RGB", (50, 40), (k * 80, 10, 200)).save(tmp_path / cls / f"{k}.jpg")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))

    def to_tensor(im):  # avoids importing torchvision in the test
        return torch.from_numpy(np.array(im.resize((32, 32)))).permute(2, 0, 1).float() / 255

    f = extract_features(tmp_path, model, batch_size=4, transform=to_tensor)
    assert f.shape == (6, 4)


def test_make_figure(tmp_path):
    from data_prep.make_figure import main

    assert main(["--out", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 10_000
