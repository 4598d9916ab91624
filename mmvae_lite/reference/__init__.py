"""Shipped reference models: trained by the package's own CLI, stored under ``results/<name>/``.

``ml.pretrained("mnist-svhn-mmvae")`` returns the trained model, ready to evaluate or plot.
The weights are looked for, in this order,

1. in the checkout the package runs from (``results/<name>/`` beside ``mmvae_lite/``),
2. in the data directory's cache (``<data dir>/pretrained/<name>/``),
3. on the project's repository, downloaded into that cache (unless downloads are off),

and every file is checked against the sha256 recorded in the registry before it is read,
so a truncated or altered file is never loaded. The registry lives inside the package
(``reference_models.json``) so that a ``pip install``-ed copy without the checkout (Colab) knows what
to download and how to check it.

Two modules:

* :mod:`.registry`: the shipped files (:func:`pretrained`, :func:`locate`, :func:`load_weights`,
  :func:`export`, which writes a model's weights, split into files of at most ``max_file_mb``, and
  records their checksums);
* :mod:`.runs`: from a finished CLI run folder to a shipped model (:func:`export_run`), with its
  time-to-coherence curve (:func:`coherence_curve`; CUB: :func:`caption_curve`), the warm starts its training includes
  (:func:`warm_start_chain`, :func:`training_summary`) and the check its test re-computes (:func:`recheck`).
"""
from .registry import (BASE_URL, URL_ENV, PretrainedError, ShippedFile, available, export, load_weights, locate,
                       pretrained, pretrained_config, pretrained_record, pretrained_vocab)
from .runs import (caption_curve, check_captions, check_coherence, coherence_curve, export_run, recheck,
                   training_summary, warm_start_chain)

__all__ = ["pretrained", "available", "locate", "load_weights", "export", "pretrained_config",
           "pretrained_record", "pretrained_vocab", "PretrainedError", "ShippedFile", "BASE_URL", "URL_ENV",
           "coherence_curve", "caption_curve", "training_summary", "warm_start_chain", "check_captions", "recheck", "export_run", "check_coherence"]
