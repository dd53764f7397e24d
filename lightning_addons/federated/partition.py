"""Offline partitioners: split a labelled data set among federated clients (IID, Dirichlet, pathological, shards).

Each function takes a label array (or any map-style dataset with ``targets``/``y`` or ``(x, y)`` items)
and returns one sorted index array per client; every sample goes to exactly one client. :func:`partition`
also dispatches to Flower Datasets' partitioners (``"flwr-..."`` names or a ``{class_path, init_args}``
mapping; extra ``fl``, see :mod:`lightning_addons.federated.flwr_partition`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

#: The in-repo partitioners.
PARTITIONS = ("iid", "dirichlet", "pathological", "shards")
#: Flower Datasets' partitioners by name (extra ``fl``).
FLOWER_PARTITIONS = ("flwr-iid", "flwr-dirichlet", "flwr-pathological", "flwr-shards")
#: Every partition name :func:`partition` accepts.
ALL_PARTITIONS = PARTITIONS + FLOWER_PARTITIONS


def labels_of(data: Any) -> np.ndarray:
    """The integer labels of a label array/tensor or a map-style dataset (``targets``, ``y`` or items ``(x, y, ...)``).

    Examples:
        >>> labels_of([0, 1, 1]).tolist()
        [0, 1, 1]
    """
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy().astype(np.int64).reshape(-1)
    if isinstance(data, np.ndarray):
        return data.astype(np.int64).reshape(-1)
    if isinstance(data, (list, tuple)) and (len(data) == 0 or np.isscalar(data[0])):
        return np.asarray(data, dtype=np.int64).reshape(-1)
    for attr in ("targets", "y", "labels"):
        value = getattr(data, attr, None)
        if value is not None and not callable(value):
            return labels_of(value)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return np.asarray([int(data[i][1]) for i in range(len(data))], dtype=np.int64)
    raise TypeError(
        f"Cannot read labels from {type(data).__name__}: pass a label array, or a dataset with `targets`/`y` "
        "or items (x, y)."
    )


def check_partition(method: Any, argument: str = "partition") -> str | dict[str, Any]:
    """Check a partition choice before any data is read; return it (a mapping as a plain dict).

    Raises:
        ValueError: an unknown name (with the allowed values and a "did you mean"), or a bad Flower
            ``{class_path, init_args}`` mapping.
        ModuleNotFoundError: a Flower partitioner without ``flwr-datasets`` installed (names the extra).

    Examples:
        >>> check_partition("dirichlet")
        'dirichlet'
    """
    if isinstance(method, Mapping):
        from lightning_addons.federated.flwr_partition import check_partition_spec

        return check_partition_spec(method, argument)
    if method not in ALL_PARTITIONS:
        import difflib

        close = difflib.get_close_matches(str(method), ALL_PARTITIONS, n=1)
        hint = f" did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"`{argument}` must be one of {list(ALL_PARTITIONS)} or a {{class_path, init_args}} mapping of a "
            f"Flower Datasets partitioner, got {method!r}.{hint}"
        )
    if method in FLOWER_PARTITIONS:
        from lightning_addons.federated.flwr_partition import import_flwr_datasets

        import_flwr_datasets()
    return method


def _check_clients(num_clients: int, n: int) -> None:
    if not isinstance(num_clients, int) or isinstance(num_clients, bool) or num_clients < 1:
        raise ValueError(f"`num_clients` must be a positive integer, got {num_clients!r}.")
    if num_clients > n:
        raise ValueError(f"`num_clients`={num_clients} exceeds the number of samples ({n}).")


def iid_partition(labels: Any, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle and split into ``num_clients`` parts of (almost) equal size.

    Examples:
        >>> [len(p) for p in iid_partition(np.arange(10) % 2, 3)]
        [4, 3, 3]
    """
    y = labels_of(labels)
    _check_clients(num_clients, len(y))
    perm = np.random.default_rng(seed).permutation(len(y))
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet_partition(
    labels: Any,
    num_clients: int,
    alpha: float = 0.5,
    min_size: int = 10,
    seed: int = 0,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split: for each class, client shares ~ Dirichlet(alpha) (Hsu et al., 2019).

    Redraws (up to ``max_tries`` times, seeded) until every client holds at least ``min_size`` samples.
    Small ``alpha`` (0.1) gives clients dominated by one or two classes; large ``alpha`` approaches IID.

    Args:
        labels: label array or dataset.
        num_clients: number of clients.
        alpha: Dirichlet concentration (> 0).
        min_size: minimum samples per client.
        seed: seed of the draw.
        max_tries: redraws before giving up.

    Raises:
        ValueError: non-positive ``alpha``, ``min_size * num_clients`` above the data size, or no draw
            meeting ``min_size`` within ``max_tries``.

    Examples:
        >>> parts = dirichlet_partition(np.arange(200) % 4, 4, alpha=0.5, min_size=5)
        >>> sum(len(p) for p in parts)
        200
    """
    y = labels_of(labels)
    _check_clients(num_clients, len(y))
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"`alpha` must be > 0, got {alpha!r}.")
    if not isinstance(min_size, int) or min_size < 0:
        raise ValueError(f"`min_size` must be a non-negative integer, got {min_size!r}.")
    if min_size * num_clients > len(y):
        raise ValueError(
            f"`min_size`={min_size} x `num_clients`={num_clients} exceeds the {len(y)} samples available."
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            p = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(p) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"No Dirichlet(alpha={alpha}) draw gave every one of {num_clients} clients >= {min_size} samples in "
        f"{max_tries} tries: lower `min_size` or raise `alpha`."
    )


def pathological_partition(
    labels: Any, num_clients: int, classes_per_client: int = 2, seed: int = 0
) -> list[np.ndarray]:
    """Each client sees exactly ``classes_per_client`` classes; a class's samples are split evenly among its clients.

    Classes are assigned round-robin over a seeded permutation so every class is used (when
    ``num_clients * classes_per_client >= num_classes``).

    Raises:
        ValueError: ``classes_per_client`` outside [1, num_classes], or some class left without a client.

    Examples:
        >>> parts = pathological_partition(np.arange(100) % 10, 5, classes_per_client=2)
        >>> sorted({int(c) for c in (np.arange(100) % 10)[parts[0]]}).__len__()
        2
    """
    y = labels_of(labels)
    _check_clients(num_clients, len(y))
    classes = np.unique(y)
    if not isinstance(classes_per_client, int) or not 1 <= classes_per_client <= len(classes):
        raise ValueError(
            f"`classes_per_client` must be an integer in [1, {len(classes)}], got {classes_per_client!r}."
        )
    if num_clients * classes_per_client < len(classes):
        raise ValueError(
            f"{num_clients} clients x {classes_per_client} classes cannot cover the {len(classes)} classes."
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    assign = [
        [order[(k * classes_per_client + j) % len(classes)] for j in range(classes_per_client)]
        for k in range(num_clients)
    ]
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for k, cs in enumerate(assign):
        for c in cs:
            holders[int(c)].append(k)
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for c, ks in holders.items():
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for k, chunk in zip(ks, np.array_split(idx, len(ks))):
            parts[k].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def shard_partition(
    labels: Any, num_clients: int, shards_per_client: int = 2, seed: int = 0
) -> list[np.ndarray]:
    """Sort by label, cut into ``num_clients * shards_per_client`` shards, deal them at random (McMahan et al.).

    Examples:
        >>> [len(p) for p in shard_partition(np.arange(40) % 4, 4, shards_per_client=2)]
        [10, 10, 10, 10]
    """
    y = labels_of(labels)
    _check_clients(num_clients, len(y))
    if not isinstance(shards_per_client, int) or shards_per_client < 1:
        raise ValueError(f"`shards_per_client` must be a positive integer, got {shards_per_client!r}.")
    n_shards = num_clients * shards_per_client
    if n_shards > len(y):
        raise ValueError(f"{n_shards} shards exceed the {len(y)} samples.")
    rng = np.random.default_rng(seed)
    order = np.argsort(y, kind="stable")
    shards = np.array_split(order, n_shards)
    perm = rng.permutation(n_shards)
    return [
        np.sort(
            np.concatenate([shards[s] for s in perm[k * shards_per_client : (k + 1) * shards_per_client]])
        )
        for k in range(num_clients)
    ]


def partition(
    labels: Any,
    num_clients: int,
    method: str | Mapping[str, Any] = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    min_size: int = 10,
    classes_per_client: int = 2,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Dispatch to one of the partitioners by name (YAML-friendly).

    ``method`` is one of :data:`ALL_PARTITIONS` or a mapping ``{class_path, init_args}`` naming a Flower
    Datasets partitioner (see :func:`~lightning_addons.federated.flwr_partition.flower_partition`, which
    returns Flower's index lists unchanged, in Flower's order).

    Raises:
        ValueError: unknown ``method`` (and whatever the chosen partitioner raises).
        ModuleNotFoundError: a Flower partitioner without ``flwr-datasets`` installed (names the extra).

    Examples:
        >>> len(partition(np.arange(30) % 3, 3, "dirichlet", alpha=1.0, min_size=2))
        3
    """
    if isinstance(method, Mapping) or method in FLOWER_PARTITIONS:
        from lightning_addons.federated.flwr_partition import flower_partition

        return flower_partition(
            labels, num_clients, method, seed, alpha, min_size, classes_per_client, shards_per_client
        )
    if method == "iid":
        return iid_partition(labels, num_clients, seed)
    if method == "dirichlet":
        return dirichlet_partition(labels, num_clients, alpha, min_size, seed)
    if method == "pathological":
        return pathological_partition(labels, num_clients, classes_per_client, seed)
    if method == "shards":
        return shard_partition(labels, num_clients, shards_per_client, seed)
    raise ValueError(
        f"`partition` must be one of {list(ALL_PARTITIONS)} or a {{class_path, init_args}} mapping, got {method!r}."
    )


def label_histogram(labels: Any, parts: Sequence[np.ndarray], num_classes: int | None = None) -> np.ndarray:
    """``[num_clients, num_classes]`` sample counts per client and class.

    Examples:
        >>> label_histogram(np.array([0, 1, 1]), [np.array([0]), np.array([1, 2])]).tolist()
        [[1, 0], [0, 2]]
    """
    y = labels_of(labels)
    k = int(num_classes if num_classes is not None else y.max() + 1)
    return np.stack([np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=k) for p in parts])


def plot_label_histogram(labels: Any, parts: Sequence[np.ndarray], path: str | None = None, title: str = ""):
    """Stacked bar chart of each client's label counts; saved to ``path`` when given. Returns the figure.

    Examples:
        >>> fig = plot_label_histogram(np.arange(20) % 2, iid_partition(np.arange(20) % 2, 2))
        >>> len(fig.axes)
        1
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    hist = label_histogram(labels, parts)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(parts) + 2), 3.2))
    bottom = np.zeros(len(parts))
    cmap = plt.get_cmap("tab10" if hist.shape[1] <= 10 else "tab20")
    for c in range(hist.shape[1]):
        ax.bar(np.arange(len(parts)), hist[:, c], bottom=bottom, color=cmap(c % cmap.N), label=str(c))
        bottom += hist[:, c]
    ax.set_xlabel("client")
    ax.set_ylabel("samples")
    ax.set_xticks(np.arange(len(parts)))
    ax.set_title(title or "label distribution per client")
    ax.legend(title="class", fontsize=6, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
