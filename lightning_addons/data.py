"""Where data lives: the shared test-data folder, a download cache, and a cached downloader.

Real users download public datasets once into :func:`cache_dir`; tests and CI point loaders at the
copies in ``../shared/data`` (see :func:`shared_data_path`). Every loader also accepts a local path.

Environment variables:
    ``LIGHTNING_ADDONS_DATA``: folder holding shared data files (default: ``../shared/data`` next to
        the repository root, if it exists).
    ``LIGHTNING_ADDONS_CACHE``: cache folder for downloads and built models
        (default: ``~/.cache/lightning_addons``).

Examples:
    >>> from lightning_addons.data import cache_dir
    >>> cache_dir("datasets").name
    'datasets'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

DATA_ENV = "LIGHTNING_ADDONS_DATA"
CACHE_ENV = "LIGHTNING_ADDONS_CACHE"


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The folder of shared data files, or ``None`` when there is none."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    candidate = _repo_root().parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def shared_data_path(name: str) -> Path:
    """Path of a file in the shared data folder.

    Raises:
        FileNotFoundError: naming the folder searched and the variable that overrides it.
    """
    folder = shared_data_dir()
    if folder is None:
        raise FileNotFoundError(
            f"No shared data folder: set {DATA_ENV} to a folder holding {name!r} "
            f"(looked for {_repo_root().parent / 'shared' / 'data'})."
        )
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"{name!r} not found in the shared data folder {folder} (set {DATA_ENV}).")
    return path


def cache_dir(*parts: str) -> Path:
    """The cache folder (created), optionally a subfolder of it."""
    root = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "lightning_addons")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temp file beside ``path``, ``fsync`` it, then ``os.replace``: readers see the old
    file or the new one, never a torn one. Creates the parent folder; returns ``path``.

    Examples:
        >>> import tempfile, os
        >>> p = atomic_write_text(os.path.join(tempfile.mkdtemp(), "sub", "r.json"), "{}")
        >>> p.read_text(), sorted(os.listdir(p.parent))
        ('{}', ['r.json'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file beside ``path``, ``fsync`` it, then ``os.replace``: a crash (or a power
    loss) never leaves a half-written file behind (the previous file, if any, stays intact). Creates the
    parent folder; returns ``path``."""
    import torch  # lazy: importing this module must not import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (POSIX; a no-op where directories cannot be opened)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def sha256sum(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    url: str,
    filename: str,
    local_path: str | os.PathLike | None = None,
    sha256: str | None = None,
    subdir: str = "datasets",
) -> Path:
    """Return a local copy of ``url``: ``local_path`` if given, else the cache, downloading once.

    The download goes to a temporary file and is moved into place only when complete (and, if
    ``sha256`` is given, verified), so an interrupted download never leaves a broken cache entry.

    Raises:
        FileNotFoundError: ``local_path`` was given but does not exist.
        ValueError: the downloaded file does not match ``sha256``.
    """
    if local_path is not None:
        path = Path(local_path).expanduser()
        if path.is_dir():
            path = path / filename
        if not path.exists():
            raise FileNotFoundError(f"local_path={str(local_path)!r} does not exist (expected {filename!r}).")
        return path
    target = cache_dir(subdir) / filename
    if target.exists():
        return target
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.")
    os.close(fd)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out)
        if sha256 is not None and sha256sum(tmp) != sha256:
            raise ValueError(f"Checksum mismatch for {url}: expected sha256 {sha256}.")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


# ----------------------------------------------------------------------------- scikit-learn's digits (pure)
def load_digits_arrays():
    """scikit-learn's digits as ``(images [1797, 8, 8] float32 in [0, 1], labels [1797] int64)`` numpy arrays.

    Examples:
        >>> images, labels = load_digits_arrays()
        >>> images.shape, float(images.max()), int(labels[0])
        ((1797, 8, 8), 1.0, 0)
    """
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def digits_split_indices(
    labels, val_fraction: float, test_fraction: float, public_fraction: float, seed: int
) -> dict:
    """Stratified ``{"public"?, "train", "val", "test"}`` index arrays (sorted) of the digits splits.

    The public split (when ``public_fraction > 0``) is drawn first with ``random_state=seed``, then test
    (``seed + 1``) and val (``seed + 2``) from the rest: the split of
    :class:`~lightning_addons.datamodules.DigitsDataModule` and of the tiny-world pre-training.

    Examples:
        >>> _, labels = load_digits_arrays()
        >>> idx = digits_split_indices(labels, 0.15, 0.15, 0.3, seed=0)
        >>> {k: len(v) for k, v in sorted(idx.items())}
        {'public': 539, 'test': 189, 'train': 880, 'val': 189}
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    idx = np.arange(len(y))
    out: dict = {}
    if public_fraction > 0:
        n_public = int(round(public_fraction * len(idx)))
        idx, out["public"] = train_test_split(idx, test_size=n_public, stratify=y[idx], random_state=seed)
    n_private = len(idx)
    n_test = int(round(test_fraction * n_private))
    n_val = int(round(val_fraction * n_private))
    rest, out["test"] = train_test_split(idx, test_size=n_test, stratify=y[idx], random_state=seed + 1)
    out["train"], out["val"] = train_test_split(
        rest, test_size=n_val, stratify=y[rest], random_state=seed + 2
    )
    return {k: np.sort(v) for k, v in out.items()}
