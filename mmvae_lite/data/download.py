"""Downloads: the switch that allows them, a quick reachability probe, the mirror, and
:func:`fetch_file` (atomic, verified).

MNIST and SVHN come through torchvision's own download-and-verify (its mirrors, its md5
checks, its progress bar); this module only stages the download in a temporary folder
inside the data directory, checks the result against :data:`~.files.KNOWN_FILES`, and moves
the files into place, so that an interrupted or corrupt download leaves nothing behind.
Single files with a URL of their own (the CUB test-class captions; reference weights) go
through :func:`fetch_file`.

Environment:
    ``MMVAE_LITE_OFFLINE=1`` turns every download off (so does ``download=False`` on the loaders).
    ``MMVAE_LITE_MIRROR=URL`` fetches everything from a server that mirrors a data directory
    (``URL/MNIST/raw/<name>.gz``, ``URL/SVHN/<name>.mat``, ``URL/cub/<name>``) instead of
    the original sources: a local copy, or the loopback server of ``python -m data_prep.serve_mirror``.
"""
from __future__ import annotations

import contextlib
import http.client
import io
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from ..runtime import progress_enabled
from .files import KNOWN_FILES, DataError, digest, known, shown, verify_file, writable_dir

__all__ = ["OFFLINE_ENV", "MIRROR_ENV", "DownloadError", "downloads_enabled", "mirror_url",
           "reachable", "fetch_file", "download_mnist", "download_svhn", "download_known"]

#: Set to 1 to turn every download off.
OFFLINE_ENV = "MMVAE_LITE_OFFLINE"
#: Base URL of a mirror of the data directory, used instead of the original sources.
MIRROR_ENV = "MMVAE_LITE_MIRROR"
#: Seconds a connection may take before a source counts as unreachable (offline: fail fast).
PROBE_TIMEOUT = 3.0
#: Seconds a started download may stall before it is given up.
READ_TIMEOUT = 30.0
_USER_AGENT = "mmvae_lite/0.1"
_probed: dict[tuple[str, int], bool] = {}


class DownloadError(DataError):
    """A download failed (offline, refused, HTTP error, wrong checksum); nothing was kept.

    Attributes:
        cause: the reason in a few words (for one-line banners).
    """

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause or message.splitlines()[0]


def downloads_enabled(download: Optional[bool] = None) -> bool:
    """``download`` if given, else True unless ``$MMVAE_LITE_OFFLINE`` is set to a true value."""
    if download is not None:
        return bool(download)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def mirror_url(rel: str) -> Optional[str]:
    """``$MMVAE_LITE_MIRROR/<rel>``, or None when no mirror is set."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    return base.rstrip("/") + "/" + rel.lstrip("/") if base else None


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds.

    The answer is remembered per host and port for the life of the process, so that an
    offline machine pays the probe once, not once per file.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":   # a mirror on this machine: nothing to connect to
        return True
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if (host, port) not in _probed:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                _probed[(host, port)] = True
        except OSError:
            _probed[(host, port)] = False
    return _probed[(host, port)]


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's downloader opens its URLs without a timeout; a default bounds a stalled transfer
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def fetch_file(url: Union[str, Sequence[str]], dest: Union[str, "os.PathLike[str]"], sha256: Optional[str] = None,
               *, md5: Optional[str] = None, timeout: float = READ_TIMEOUT,
               progress: bool = True) -> Path:
    """Download ``url`` (or the first of several that works) to ``dest``, verified and atomically.

    The bytes go to a temporary file next to ``dest``; only when complete and matching
    ``sha256`` (and/or ``md5``) is it renamed to ``dest``. A failed or corrupt download leaves
    nothing behind. Unreachable hosts are given up after :data:`PROBE_TIMEOUT` seconds.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: naming the file, the expected checksum and every URL tried.
    """
    from tqdm.auto import tqdm

    urls = [url] if isinstance(url, str) else list(url)
    dest = Path(dest)
    want = {a: v for a, v in (("sha256", sha256), ("md5", md5)) if v}
    expected = ", ".join(f"{a} {v}" for a, v in want.items()) or "no checksum given"
    errors = []
    for u in urls:
        if not reachable(u):
            errors.append(f"{u}: host unreachable within {PROBE_TIMEOUT:g} s (offline?)")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            req = urllib.request.Request(u, headers={"User-Agent": _USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                fd = -1
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                          disable=not progress) as bar:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
            got = {a: digest(tmp, a) for a in want}
            bad = [a for a in want if got[a] != want[a]]
            if bad:
                errors.append(f"{u}: the downloaded {dest.name} has {bad[0]} {got[bad[0]]}, "
                              f"expected {want[bad[0]]}")
                continue
            os.replace(tmp, dest)
            return dest
        except urllib.error.HTTPError as e:
            errors.append(f"{u}: HTTP {e.code} {e.reason}")
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            # HTTPException: a transfer cut short (IncompleteRead); ValueError: a malformed mirror URL
            errors.append(f"{u}: {getattr(e, 'reason', None) or str(e) or type(e).__name__}")
        finally:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
    raise DownloadError(f"could not download {dest.name} (expected {expected}); nothing was kept:\n  "
                        + "\n  ".join(errors), errors[-1].split(": ", 1)[-1] if errors else "")


def _check_target(base: Path) -> None:
    if not writable_dir(base):
        raise DownloadError(f"the data directory {shown(base)} is read-only", "read-only data directory")


def _torchvision_download(what: str, urls: Sequence[str], stage: Path, make,
                          expect: Sequence[tuple[Path, str]]) -> None:
    """Run torchvision's download in ``stage`` with its output kept out of the caller's (its
    messages print the machine's paths; the progress bar on stderr still shows). ``expect``:
    (staged file, key) pairs, to name the file that failed and its checksum."""
    if not any(reachable(u) for u in urls):
        hosts = ", ".join(sorted({urllib.parse.urlsplit(u).netloc for u in urls}))
        raise DownloadError(f"{what}: no source reachable within {PROBE_TIMEOUT:g} s ({hosts}; offline?)",
                            f"offline: {hosts} unreachable")
    log = io.StringIO()
    # MMVAE_LITE_PROGRESS=0 (the book's build) also silences torchvision's own progress bar on stderr,
    # which a non-terminal output would otherwise keep as one line per refresh
    quiet = not progress_enabled()
    try:
        with _socket_timeout(READ_TIMEOUT), contextlib.redirect_stdout(log), \
                (contextlib.redirect_stderr(log) if quiet else contextlib.nullcontext()):
            make()
    except (RuntimeError, urllib.error.URLError, OSError) as e:
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        for path, key in expect:
            spec = known(key)
            if not path.is_file() or digest(path, spec.algo) != spec.digest:
                state = "corrupt (wrong checksum)" if path.is_file() else "not downloaded"
                raise DownloadError(f"{what}: {path.name} {state}, expected {spec.algo} {spec.digest} "
                                    f"({why}); nothing was kept", why) from None
        raise DownloadError(f"{what}: torchvision's download failed ({why}); nothing was kept", why) from None


def _install(stage: Path, names: Sequence[str], keys: Sequence[str], base: Path) -> None:
    """Verify the staged files against KNOWN_FILES, then move them into place."""
    for name, key in zip(names, keys):
        spec = known(key)
        got = stage / name
        if not got.is_file():
            raise DownloadError(f"{name} was not downloaded (expected {spec.algo} {spec.digest})")
        actual = digest(got, spec.algo)
        if actual != spec.digest:
            raise DownloadError(f"the downloaded {name} has {spec.algo} {actual}, expected "
                                f"{spec.digest}; it was deleted", f"{name}: wrong checksum")
    for name, key in zip(names, keys):
        target = base / key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / name, target)
        verify_file(target, key, base)  # records the check: later loads do not hash again


def download_mnist(base: Path) -> str:
    """Download the four MNIST files into ``base/MNIST/raw`` with torchvision (its mirrors,
    or ``$MMVAE_LITE_MIRROR/MNIST/raw/``). Returns where they came from.

    Raises:
        DownloadError: offline, read-only directory, failed or corrupt download (nothing kept).
    """
    from torchvision.datasets import MNIST

    _check_target(base)
    mirror = mirror_url("MNIST/raw/")
    mirrors = [mirror] if mirror else list(MNIST.mirrors)
    # torchvision names the folder after the class: a subclass called MNIST keeps its layout
    cls = type("MNIST", (MNIST,), {"mirrors": mirrors})
    stage = Path(tempfile.mkdtemp(dir=base, prefix=".download-mnist-"))
    try:
        names = [k.split("/")[-1] for k in KNOWN_FILES if k.startswith("MNIST/raw/")]
        raw = stage / "MNIST" / "raw"
        gz = [(raw / n, f"MNIST/raw/{n}") for n in names if n.endswith(".gz")]
        _torchvision_download("MNIST", [m + MNIST.resources[0][0] for m in mirrors], stage,
                              lambda: cls(str(stage), train=True, download=True), gz)
        _install(raw, names, [f"MNIST/raw/{n}" for n in names], base)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return mirror or "torchvision's MNIST mirrors"


def download_svhn(base: Path, split: str) -> str:
    """Download SVHN's ``split`` ``.mat`` file into ``base/SVHN`` with torchvision (from
    ufldl.stanford.edu, or ``$MMVAE_LITE_MIRROR/SVHN/``). Returns where it came from."""
    from torchvision.datasets import SVHN

    _check_target(base)
    url, name, md5 = SVHN.split_list[split]
    mirror = mirror_url(f"SVHN/{name}")
    cls = type("SVHN", (SVHN,), {"split_list": {**SVHN.split_list, split: [mirror or url, name, md5]}})
    stage = Path(tempfile.mkdtemp(dir=base, prefix=".download-svhn-"))
    try:
        _torchvision_download("SVHN", [mirror or url], stage,
                              lambda: cls(str(stage), split=split, download=True),
                              [(stage / name, f"SVHN/{name}")])
        _install(stage, [name], [f"SVHN/{name}"], base)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return mirror or urllib.parse.urlsplit(url).netloc


def download_known(key: str, base: Path) -> str:
    """Download known file ``key`` from the mirror or its own URL with :func:`fetch_file`."""
    spec = known(key)
    url = mirror_url(key) or spec.url
    if not url:
        raise DownloadError(f"{key} has no download of its own; fetch it with `python -m {spec.fetch}`")
    if spec.algo not in ("sha256", "md5"):
        raise DownloadError(f"{key} is known only by its {spec.algo}; fetch it with `python -m {spec.fetch}`")
    _check_target(base)
    dest = fetch_file(url, base / key, progress=progress_enabled(), **{spec.algo: spec.digest})
    verify_file(dest, key, base)
    return url if mirror_url(key) else urllib.parse.urlsplit(url).netloc
