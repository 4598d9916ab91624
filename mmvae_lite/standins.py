"""Former home of the stand-in generators, now :mod:`mmvae_lite.data.standins`; kept so that
``mmvae_lite.standins`` and ``from mmvae_lite.standins import ...`` keep working."""
from .data.standins import (BIRD_ATTRIBUTES, BIRDS_VERSION, HOUSE_NUMBERS_VERSION,  # noqa: F401
                            STANDIN_FEATURE_DIM, BirdCaptions, bird_captions, house_numbers,
                            standin_features)
from .data.standins import __all__  # noqa: F401
