"""Fetch the CUB image-caption data used by MMVAE, and optionally extract ResNet-101 features.

Usage::

    python -m data_prep.cub [--root DIR] [--check] [--features] [--device cuda] [--caltech]

Sources
    * Default: the MMVAE authors' cleaned-up CUB release,
      ``http://www.robots.ox.ac.uk/~yshi/mmdgm/datasets/cub.zip`` (linked from the
      iffsid/mmvae README). It unpacks to ``DIR/cub/`` with ``text_trainvalclasses.txt``,
      ``text_testclasses.txt`` (Reed et al. 2016 captions, 10 per image) and image folders
      ``train/<class>/*.jpg`` (150 classes, 8855 images) and ``test/<class>/*.jpg``
      (50 classes, 2933 images). No checksum of the zip is published; the two caption
      files inside are checked instead (sha256 of the test file; git blob id of the train
      file, the only reference known for it) together with the image counts.
    * ``--caltech``: also download the original ``CUB_200_2011.tgz`` from CaltechDATA
      (https://data.caltech.edu/records/65de6-vp158, md5 97eceeb196236b17998738112f37df78)
      into ``DIR/CUB_200_2011/``. It has the images but neither the captions nor MMVAE's
      150/50 class split; the loaders use the MMVAE layout above.
    * Captions alone: Reed et al.'s ``cvpr2016_cub.tar.gz`` (``text_c10/``) is only
      distributed through a Google Drive link in https://github.com/reedscot/cvpr2016, which
      cannot be fetched non-interactively; the MMVAE release above contains the same
      captions already assembled per split.

``--features`` extracts 2048-d pooled features of torchvision's ResNet-101
(``weights=IMAGENET1K_V1``, downloaded by torchvision) from every image, in ImageFolder
order, into ``DIR/cub/resnet101_2048/{train,test}.ft``. Images are resized to 256, centre
cropped to 224 and normalised with the ImageNet statistics the weights expect (the authors'
code fed un-normalised ``Resize(224)`` images; the difference is documented, not copied).
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import NetworkError, add_common_args, download, fail, prepare_root, print_status

MMVAE_CUB_URL = "http://www.robots.ox.ac.uk/~yshi/mmdgm/datasets/cub.zip"
CALTECH_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
CALTECH_MD5 = "97eceeb196236b17998738112f37df78"
CAPTION_KEYS = ("cub/text_trainvalclasses.txt", "cub/text_testclasses.txt")
EXPECTED_IMAGES = {"train": 8855, "test": 2933}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(folder: Path) -> list[Path]:
    """Images of an ImageFolder-style directory in ImageFolder order (sorted classes, files)."""
    return sorted(p for d in sorted(folder.iterdir()) if d.is_dir()
                  for p in sorted(d.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES)


def image_status(root: Path) -> dict[str, tuple[int, int]]:
    """``{split: (images found, images expected)}`` for the MMVAE image folders."""
    out = {}
    for split, n in EXPECTED_IMAGES.items():
        folder = root / "cub" / split
        out[split] = (len(image_files(folder)) if folder.is_dir() else 0, n)
    return out


def _safe_extract_zip(archive: Path, dest: Path) -> None:
    from tqdm import tqdm

    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        for m in members:
            target = (dest / m.filename).resolve()
            if not str(target).startswith(str(dest.resolve())):
                raise RuntimeError(f"refusing to extract {m.filename!r} outside {dest}")
        for m in tqdm(members, desc=f"extracting {archive.name}", unit="file"):
            z.extract(m, dest)


def _safe_extract_tar(archive: Path, dest: Path) -> None:
    from tqdm import tqdm

    with tarfile.open(archive) as t:
        members = t.getmembers()
        for m in members:
            target = (dest / m.name).resolve()
            if not str(target).startswith(str(dest.resolve())) or m.issym() or m.islnk():
                raise RuntimeError(f"refusing to extract {m.name!r} outside {dest}")
        for m in tqdm(members, desc=f"extracting {archive.name}", unit="file"):
            t.extract(m, dest)


def fetch_mmvae_release(root: Path) -> None:
    """Download and unpack the MMVAE CUB release into ``root`` (skipped if complete)."""
    from mmvae_lite.data import find_file, verify_file

    have_caps = all(find_file(k, root) is not None for k in CAPTION_KEYS)
    have_imgs = all(found == n for found, n in image_status(root).values())
    if have_caps and have_imgs:
        for k in CAPTION_KEYS:
            verify_file(find_file(k, root), k, root)  # type: ignore[arg-type]
        print("CUB (MMVAE release): already present and verified")
        return
    archive = root / "cub.zip"
    if not archive.is_file():
        print(f"downloading {MMVAE_CUB_URL} (no published checksum; the captions inside are "
              f"verified after unpacking)")
        download([MMVAE_CUB_URL], archive)
    try:
        _safe_extract_zip(archive, root)
    except zipfile.BadZipFile:
        archive.unlink()
        raise RuntimeError(f"{archive.name} is not a valid zip file (incomplete download?); deleted it, "
                           f"run again") from None
    if not (root / "cub").is_dir() and (root / "data" / "cub").is_dir():
        (root / "data" / "cub").rename(root / "cub")
    for k in CAPTION_KEYS:
        path = find_file(k, root)
        if path is None:
            raise RuntimeError(f"{k} is not in the downloaded archive {archive.name}")
        verify_file(path, k, root)
        print(f"{k}: verified")
    for split, (found, n) in image_status(root).items():
        state = "ok" if found == n else f"expected {n}"
        print(f"cub/{split}: {found} images ({state})")
    archive.unlink()


def fetch_caltech(root: Path) -> None:
    """Download and unpack the original CUB_200_2011.tgz from CaltechDATA (md5 checked)."""
    if (root / "CUB_200_2011" / "images").is_dir():
        print("CUB_200_2011: already present")
        return
    archive = root / "CUB_200_2011.tgz"
    download([CALTECH_URL], archive, md5=CALTECH_MD5)
    print(f"{archive.name}: md5 verified")
    _safe_extract_tar(archive, root)
    archive.unlink()


def extract_features(folder: Path, model: torch.nn.Module, device: str = "cpu",
                     batch_size: int = 64, transform=None) -> torch.Tensor:
    """Pooled features of every image in ``folder`` (ImageFolder order), float (N, D).

    ``model`` maps a batch (B, 3, 224, 224) to (B, D, 1, 1) or (B, D).
    """
    from PIL import Image
    from tqdm import tqdm

    if transform is None:
        from torchvision import transforms

        transform = transforms.Compose([
            transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    files = image_files(folder)
    out = []
    model = model.to(device).eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(files), batch_size), desc=f"features {folder.name}",
                          unit="batch"):
            batch = []
            for p in files[start:start + batch_size]:
                with Image.open(p) as im:
                    batch.append(transform(im.convert("RGB")))
            f = model(torch.stack(batch).to(device))
            out.append(f.reshape(f.shape[0], -1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 2048)


def resnet101_trunk() -> torch.nn.Module:
    """torchvision ResNet-101 (ImageNet weights, downloaded on first use) without its classifier."""
    from torchvision.models import ResNet101_Weights, resnet101

    net = resnet101(weights=ResNet101_Weights.IMAGENET1K_V1)
    return torch.nn.Sequential(*list(net.children())[:-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.cub",
        description="Download the MMVAE release of CUB (images + captions) into DIR/cub, verify "
                    "the caption files, optionally extract ResNet-101 features.")
    add_common_args(parser)
    parser.add_argument("--features", action="store_true",
                        help="extract ResNet-101 features into DIR/cub/resnet101_2048/")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device for feature extraction")
    parser.add_argument("--caltech", action="store_true",
                        help="also download the original CUB_200_2011.tgz from CaltechDATA")
    args = parser.parse_args(argv)

    from mmvae_lite.data import DataError

    try:
        root = prepare_root(args.root)
    except DataError as e:
        return fail(str(e))
    if args.check:
        ok = print_status(root, CAPTION_KEYS)
        for split, (found, n) in image_status(root).items():
            state = "ok     " if found == n else ("MISSING" if found == 0 else "PARTIAL")
            print(f"  [{state}] cub/{split}/ images: {found} of {n}")
            ok = ok and found == n
        for split in EXPECTED_IMAGES:
            ft = root / "cub" / "resnet101_2048" / f"{split}.ft"
            print(f"  [{'ok     ' if ft.is_file() else 'missing'}] {ft.relative_to(root)} "
                  f"(optional, made by --features)")
        return 0 if ok else 1

    from mmvae_lite.data import shown

    print(f"data directory: {shown(root)}")
    try:
        fetch_mmvae_release(root)
        if args.caltech:
            fetch_caltech(root)
        if args.features:
            trunk = resnet101_trunk()
            out_dir = root / "cub" / "resnet101_2048"
            out_dir.mkdir(parents=True, exist_ok=True)
            for split in EXPECTED_IMAGES:
                feats = extract_features(root / "cub" / split, trunk, args.device)
                torch.save(feats, out_dir / f"{split}.ft")
                print(f"cub/resnet101_2048/{split}.ft: {tuple(feats.shape)}")
    except NetworkError as e:
        return fail(f"{e}\nCheck the internet connection (or proxy settings) and run again.")
    except (DataError, RuntimeError, OSError) as e:
        msg = str(e)
        if "urlopen" in msg or "Name or service" in msg or "resolve" in msg:
            msg += "\n(network access is needed to download the data and the ResNet-101 weights)"
        return fail(msg)
    print("done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
