"""Data: official dataset readers, the uint8 image store, users' class folders and seeded samplers."""

from oneshot.data.folder import load_image_folder
from oneshot.data.images import Preprocessing
from oneshot.data.imageset import ImageSet
from oneshot.data.omniglot import load_lake_runs, load_omniglot
from oneshot.data.samplers import EpisodeIndices, EpisodeSampler

__all__ = [
    "EpisodeIndices",
    "EpisodeSampler",
    "ImageSet",
    "Preprocessing",
    "load_image_folder",
    "load_lake_runs",
    "load_omniglot",
]
