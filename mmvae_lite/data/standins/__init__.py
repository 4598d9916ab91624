"""Synthetic stand-ins for the datasets that cannot be downloaded everywhere.

Two generators live here, both deterministic given ``seed`` and fast enough to run
on a laptop CPU:

* :func:`house_numbers` -- a stand-in for SVHN: 32x32 RGB crops of street-number
  digits rendered from the TrueType fonts that matplotlib ships (DejaVu, STIX,
  Computer Modern), with coloured plates, gradients, partial neighbouring digits
  cut at the left/right edges, small affine jitter, stroke-weight changes, blur
  and noise.
* :func:`bird_captions` -- a stand-in for CUB image-caption pairs: 64x64 bird-like
  sprites whose attributes (part colours, size, bill, tail, background ...) drive
  both the picture and ten captions written in CUB's style by a small grammar.
  Because the captions are generated from the attributes, cross-modal generation
  can be scored by attribute agreement.

Neither is the real data. They exist so that every experiment in the package can
run end to end where SVHN/CUB are missing; results on them are not comparable to
the paper's numbers. :mod:`mmvae_lite.data` decides when they are used and says so.

One module each: :mod:`.house_numbers`, :mod:`.birds`, :mod:`.features` (the stand-in for
ResNet-101 features); :mod:`.common` holds the seeded draws and the ``.npz`` cache keyed by
``(n, seed, version)``.
"""
from .birds import BIRD_ATTRIBUTES, BIRDS_VERSION, BirdCaptions, bird_captions, claimed_attributes
from .features import STANDIN_FEATURE_DIM, standin_features
from .house_numbers import HOUSE_NUMBERS_VERSION, house_numbers

__all__ = [
    "HOUSE_NUMBERS_VERSION",
    "BIRDS_VERSION",
    "BIRD_ATTRIBUTES",
    "BirdCaptions",
    "house_numbers",
    "bird_captions",
    "claimed_attributes",
    "standin_features",
    "STANDIN_FEATURE_DIM",
]
