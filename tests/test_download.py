"""The download path, for real: a loopback HTTP server started here serves the data files, and
fresh empty data directories are filled through the loaders' own downloads (torchvision's for
MNIST and SVHN, :func:`mmvae_lite.data.fetch_file` for single files).

The MNIST tests need the real MNIST ``.gz`` files (``../shared/data/MNIST/raw`` beside the
checkout, or ``$MMVAE_LITE_DATA``) and skip without them.
"""
from __future__ import annotations

import hashlib
import shutil
import socket
import time
from pathlib import Path

import pytest

from data_prep.serve_mirror import serving
from mmvae_lite import data
from mmvae_lite.data import DataError, DownloadError, download, mnist_svhn
from test_data import SHARED

MNIST_GZ = [k for k in data.KNOWN_FILES if k.startswith("MNIST/raw/") and k.endswith(".gz")]
needs_mnist_gz = pytest.mark.skipif(
    SHARED is None or not all((SHARED / k).is_file() for k in MNIST_GZ),
    reason="real MNIST .gz files not found (../shared/data/MNIST/raw or $MMVAE_LITE_DATA)")


@pytest.fixture(autouse=True)
def fresh_machine(tmp_path, monkeypatch):
    """An empty home, an empty data directory in $MMVAE_LITE_DATA, downloads allowed, no
    remembered reachability, small stand-ins."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.setenv(data.DATA_ENV, str(fresh))
    monkeypatch.delenv(data.CACHE_ENV, raising=False)
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.setattr(download, "_probed", {})
    monkeypatch.setattr(mnist_svhn, "SVHN_STANDIN_SIZE", {"train": 400, "test": 200})
    return fresh


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]


@needs_mnist_gz
def test_fresh_directory_loads_mnist_through_the_download_path(fresh_machine, monkeypatch, capsys):
    with serving(SHARED) as url:
        monkeypatch.setenv(data.MIRROR_ENV, url)
        test = data.load_mnist("test")
    out = capsys.readouterr().out
    assert test.source["mnist"].is_real and len(test) == 10000
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert "MNIST: t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte not in $MMVAE_LITE_DATA; downloading" in out
    assert "downloaded and verified into $MMVAE_LITE_DATA/MNIST/raw" in out
    assert str(fresh_machine) not in out  # no path of this machine in the banners
    status = data.file_status(fresh_machine, [k for k in data.KNOWN_FILES if k.startswith("MNIST/")])
    assert {s for s, _ in status.values()} == {"ok"}  # all eight files there, every one hashed
    assert not _leftovers(fresh_machine)
    # the next load finds them and does not download (the server is gone)
    train = data.load_mnist("train")
    assert len(train) == 60000 and "downloading" not in capsys.readouterr().out


@needs_mnist_gz
def test_a_corrupt_served_file_is_rejected_and_nothing_is_kept(tmp_path, fresh_machine, monkeypatch):
    served = tmp_path / "served"
    (served / "MNIST" / "raw").mkdir(parents=True)
    for key in MNIST_GZ:
        shutil.copy(SHARED / key, served / key)
    bad = served / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(bad.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad.write_bytes(bytes(blob))
    with serving(served) as url:
        monkeypatch.setenv(data.MIRROR_ENV, url)
        with pytest.raises(DataError) as e:
            data.load_mnist("test", verbose=False)
    msg = str(e.value)
    expected = data.KNOWN_FILES["MNIST/raw/t10k-labels-idx1-ubyte.gz"].digest
    assert "t10k-labels-idx1-ubyte.gz" in msg and expected in msg and "python -m data_prep.mnist_svhn" in msg
    assert not (fresh_machine / "MNIST").exists()  # not even the good files of a failed download
    assert not _leftovers(fresh_machine)


def test_a_corrupt_served_svhn_falls_back_to_the_standin(tmp_path, fresh_machine, monkeypatch):
    served = tmp_path / "served"
    (served / "SVHN").mkdir(parents=True)
    (served / "SVHN" / "test_32x32.mat").write_bytes(b"not the SVHN test set" * 100)
    with serving(served) as url:
        monkeypatch.setenv(data.MIRROR_ENV, url)
        ds = data.load_svhn("test", verbose=False)
    src = ds.source["svhn"]
    assert src.kind == "standin" and "download failed" in src.reason
    assert not (fresh_machine / "SVHN").exists() and not _leftovers(fresh_machine)


@pytest.mark.parametrize("network", ["refused", "silent"])
def test_without_network_the_fallback_is_fast(fresh_machine, monkeypatch, network):
    monkeypatch.setenv(data.MIRROR_ENV, f"http://127.0.0.1:{_closed_port()}/")
    if network == "silent":  # packets dropped: every connection attempt waits for its timeout
        def blackhole(address, timeout=None, *args, **kwargs):
            time.sleep(timeout if timeout is not None else 60)
            raise TimeoutError("timed out")

        monkeypatch.setattr(socket, "create_connection", blackhole)
    t0 = time.perf_counter()
    src = data.resolve_source("svhn", split="test", download=True, verbose=False)
    with pytest.raises(DataError, match="MNIST.*download failed.*(offline|unreachable)"):
        data.load_mnist("test", verbose=False)
    elapsed = time.perf_counter() - t0
    assert src.kind == "standin" and "download failed" in src.reason
    assert elapsed < 8, f"the offline fallback took {elapsed:.1f} s"
    assert not list(fresh_machine.rglob("*.mat")) and not _leftovers(fresh_machine)


def test_the_switch_turns_downloads_off(fresh_machine, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv(data.MIRROR_ENV, "http://127.0.0.1:9/")
    src = data.load_svhn("test", download=False, verbose=False).source["svhn"]
    assert src.kind == "standin"
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    src = data.load_svhn("test", verbose=False).source["svhn"]
    assert src.kind == "standin" and f"${data.OFFLINE_ENV}" in src.reason
    with pytest.raises(DataError, match="downloads are off"):
        data.load_mnist("test", verbose=False)


def test_fetch_file_is_verified_and_atomic(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = b"reference weights " * 1000
    (served / "w.pt").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "w.pt"
    with serving(served) as url:
        assert data.fetch_file(url + "w.pt", dest, good, progress=False) == dest
        assert dest.read_bytes() == payload
        wrong = "0" * 64
        other = tmp_path / "out" / "w2.pt"
        with pytest.raises(DownloadError) as e:
            data.fetch_file(url + "w.pt", other, wrong, progress=False)
        assert "w2.pt" in str(e.value) and wrong in str(e.value) and good in str(e.value)
        assert not other.exists()
        with pytest.raises(DownloadError, match="404"):
            data.fetch_file([url + "missing.pt"], other, good, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["w.pt"]
