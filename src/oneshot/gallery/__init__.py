"""The gallery: enrol classes from one example, identify, verify and reject strangers, persistently.

See ``docs/gallery.md``. :class:`Gallery` is the API; ``oneshot gallery ...`` (:mod:`oneshot.gallery.cli`) is
the command line on top of it.
"""

from oneshot.gallery.encode import CheckpointEncoder, Encoder
from oneshot.gallery.gallery import ClassInfo, EnrolReport, Gallery, Identification, Match, Verification
from oneshot.gallery.index import IndexSettings

__all__ = ["CheckpointEncoder", "ClassInfo", "Encoder", "EnrolReport", "Gallery", "Identification", "IndexSettings",
           "Match", "Verification"]
