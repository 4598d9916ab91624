"""Serve a data directory over loopback HTTP as ``$MMVAE_LITE_MIRROR``, optionally around a command.

Usage::

    python -m data_prep.serve_mirror --dir DIR                 # serve until Ctrl-C, print the URL
    python -m data_prep.serve_mirror --dir DIR -- CMD [ARG...]  # run CMD with MMVAE_LITE_MIRROR set

A new machine downloads MNIST, SVHN and the CUB test-class captions from their sources; with
a mirror the same download path (torchvision's download, checksums, atomic moves) fetches them
from DIR instead, which holds them in a data directory's layout (``MNIST/raw/*.gz``,
``SVHN/*.mat``, ``cub/text_testclasses.txt``). CI builds the book this way: an empty data
directory filled through the loaders' own downloads, served from the shared data over
127.0.0.1 (see the Makefile's ``book`` target). Files the directory lacks answer 404, so the
loaders fall back to the stand-ins as they would offline.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, Optional, Sequence

__all__ = ["serving"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # a client that hangs up early (torchvision's redirect probe reads no body) is no error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serving(directory: Path, port: int = 0) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port unless ``port``) in a thread; yields the base URL."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--dir {directory} is not a directory")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = _Server(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m data_prep.serve_mirror",
                                     description="Serve a data directory as $MMVAE_LITE_MIRROR over "
                                                 "127.0.0.1, optionally while running a command.")
    parser.add_argument("--dir", type=Path, required=True, help="data directory to serve")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    args = parser.parse_args(argv)
    from mmvae_lite.data import MIRROR_ENV

    try:
        with serving(args.dir, args.port) as url:
            if not command:
                print(f"serving the data directory at {url} (export {MIRROR_ENV}={url}); Ctrl-C stops",
                      flush=True)
                threading.Event().wait()
            env = {**os.environ, MIRROR_ENV: url}
            print(f"[serve_mirror] {MIRROR_ENV}={url}: {' '.join(command)}", flush=True)
            return subprocess.call(command, env=env)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
