"""Where data lives: resolution order, the user cache, and verified downloads.

Resolution order for a dataset folder: an explicit ``data_dir`` argument (``--data-dir``), then the
``ONESHOT_DATA`` environment variable, then the user cache (``$ONESHOT_CACHE`` or
``$XDG_CACHE_HOME/oneshot`` or ``~/.cache/oneshot``). Files missing from all of these are downloaded
into the cache from their official address and verified by checksum; with no network the error names
each file and the folder to put it in.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from oneshot.errors import OneshotError
from oneshot.files import atomic_path


def cache_dir() -> Path:
    """The user cache folder (created on demand): downloads and decoded tensor caches go here."""
    if os.environ.get("ONESHOT_CACHE"):
        root = Path(os.environ["ONESHOT_CACHE"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "oneshot"
    else:
        root = Path.home() / ".cache" / "oneshot"
    root.mkdir(parents=True, exist_ok=True)
    return root


def candidate_roots(data_dir: str | Path | None) -> list[Path]:
    """Folders searched for data, in order: explicit, ``$ONESHOT_DATA``, the user cache."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("ONESHOT_DATA"):
        roots.append(Path(os.environ["ONESHOT_DATA"]).expanduser())
    roots.append(cache_dir())
    return roots


@dataclass(frozen=True)
class RemoteFile:
    """A file a dataset needs: its name, official address and checksum (``algo:hexdigest``)."""

    name: str
    url: str
    checksum: str


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(remote: RemoteFile, folder: Path) -> Path:
    """Download ``remote`` into ``folder``, verify its checksum, and move it into place atomically
    (:func:`oneshot.files.atomic_path`).

    A file whose checksum does not match is deleted and reported; nothing half-written is left behind.
    """
    target = folder / remote.name
    algorithm, expected = remote.checksum.split(":", 1)
    try:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
                shutil.copyfileobj(response, out, length=1 << 20)
            actual = file_digest(tmp, algorithm)
            if actual != expected:
                raise OneshotError(
                    f"downloaded {remote.name} from {remote.url} but its {algorithm} is {actual}, expected "
                    f"{expected}; the download is corrupt or the file changed upstream -- try again or place a "
                    f"good copy in {folder}"
                )
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise OneshotError(f"could not download {remote.url} ({exc})") from exc


def locate_files(
    dataset: str,
    remotes: list[RemoteFile],
    data_dir: str | Path | None,
    allow_download: bool = True,
) -> dict[str, Path]:
    """Find every file of ``remotes`` in one folder, downloading into the cache what is missing.

    A folder counts when it holds the files directly or in a subfolder named ``dataset``
    (so ``ONESHOT_DATA=../shared/data`` finds ``../shared/data/omniglot/images_background.zip``).
    The first folder that holds all files wins; otherwise the cache is completed by downloads.
    """
    names = [r.name for r in remotes]
    searched: list[Path] = []
    for root in candidate_roots(data_dir):
        for folder in (root / dataset, root):
            searched.append(folder)
            if all((folder / n).is_file() for n in names):
                return {n: folder / n for n in names}
    if data_dir is not None and not Path(data_dir).expanduser().exists():
        raise OneshotError(f"--data-dir {data_dir} does not exist")
    target = cache_dir() / dataset
    found: dict[str, Path] = {}
    for remote in remotes:
        path = target / remote.name
        if not path.is_file():
            if not allow_download:
                break
            try:
                path = download(remote, target)
            except OneshotError as exc:
                missing = ", ".join(names)
                raise OneshotError(
                    f"{dataset} data not found and the download failed ({exc}). Put {missing} into "
                    f"{target} (or a folder named by --data-dir or $ONESHOT_DATA, directly or in a "
                    f"'{dataset}/' subfolder); official address: {remote.url.rsplit('/', 1)[0]}/"
                ) from None
        found[remote.name] = path
    if len(found) != len(remotes):
        raise OneshotError(
            f"{dataset} data not found: put {', '.join(names)} into one of: " + ", ".join(str(s) for s in searched)
        )
    return found
