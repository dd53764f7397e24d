"""Flower Datasets' partitioners on a label array (extra ``fl``; pure, no Lightning).

:func:`flower_partition` runs any ``flwr_datasets.partitioner`` class on a Hugging Face ``datasets.Dataset``
holding the labels and a row-index column, and returns each client's row indices exactly as Flower's
``load_partition(k)`` orders them. :func:`plot_label_distribution` draws any partition (Flower's or the
in-repo ones) with Flower Datasets' ``plot_label_distributions``.

A partitioner is chosen by name (``"flwr-iid"``, ``"flwr-dirichlet"``, ``"flwr-pathological"``,
``"flwr-shards"``; arguments from ``alpha``, ``min_size``, ``classes_per_client``, ``shards_per_client`` and
``seed``) or as a YAML-friendly mapping ``{class_path: DirichletPartitioner, init_args: {...}}`` naming any
class of ``flwr_datasets.partitioner`` (or a dotted path to a ``Partitioner`` subclass). ``num_partitions``
is the number of clients, ``partition_by`` the label column and ``seed`` the partition seed unless given.

Flower Datasets sends usage telemetry unless ``FLWR_TELEMETRY_ENABLED=0``; this module sets that default
before importing it (set the variable to ``1`` to opt in).

Examples:
    >>> import numpy as np
    >>> y = np.arange(40) % 4
    >>> parts = flower_partition(y, 4, "flwr-shards", seed=0, shards_per_client=2)
    >>> sorted(len(p) for p in parts)
    [10, 10, 10, 10]
    >>> spec = {"class_path": "DirichletPartitioner", "init_args": {"alpha": 1.0, "min_partition_size": 2}}
    >>> sum(len(p) for p in flower_partition(y, 4, spec, seed=0))
    40
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_addons._imports import require
from lightning_addons.federated.partition import FLOWER_PARTITIONS, labels_of

#: Partition names served by Flower Datasets, and the partitioner class each one builds.
FLOWER_CLASSES = {
    "flwr-iid": "IidPartitioner",
    "flwr-dirichlet": "DirichletPartitioner",
    "flwr-pathological": "PathologicalPartitioner",
    "flwr-shards": "ShardPartitioner",
}
assert tuple(FLOWER_CLASSES) == FLOWER_PARTITIONS
LABEL_COLUMN, INDEX_COLUMN = "label", "index"


def import_flwr_datasets():
    """``flwr_datasets.partitioner`` (telemetry off unless set), or ``ModuleNotFoundError`` naming the extra."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    return require("flwr_datasets.partitioner", feature="Flower Datasets' partitioning")


def _resolve_class(class_path: Any, argument: str = "partition") -> type:
    partitioners = import_flwr_datasets()
    base = partitioners.Partitioner
    # Vertical partitioners split columns, not samples: every client would get every sample.
    names = sorted(n for n in partitioners.__all__ if n != "Partitioner" and not n.startswith("Vertical"))
    if not isinstance(class_path, str) or not class_path:
        raise ValueError(f"`{argument}.class_path` must be a Flower partitioner name, got {class_path!r}.")
    cls = None
    if "." not in class_path:
        cls = getattr(partitioners, class_path, None)
    else:
        module, _, name = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
    if not (
        isinstance(cls, type)
        and issubclass(cls, base)
        and cls is not base
        and not cls.__name__.startswith("Vertical")
    ):
        close = difflib.get_close_matches(class_path.rpartition(".")[2], names, n=1)
        hint = f" did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"`{argument}.class_path` must name a Flower Datasets partitioner of samples (one of {names} or a "
            f"dotted path to a flwr_datasets Partitioner subclass), got {class_path!r}.{hint}"
        )
    return cls


def _init_args(cls: type, given: Mapping[str, Any], num_clients: int, seed: int) -> dict[str, Any]:
    params = inspect.signature(cls).parameters
    args = dict(given)
    if "num_partitions" in params:
        if args.setdefault("num_partitions", num_clients) != num_clients:
            raise ValueError(
                f"`partition.init_args.num_partitions`={args['num_partitions']!r} differs from "
                f"`num_clients`={num_clients}; leave it out."
            )
    if "partition_by" in params:
        if args.setdefault("partition_by", LABEL_COLUMN) != LABEL_COLUMN:
            raise ValueError(
                f"`partition.init_args.partition_by` must be {LABEL_COLUMN!r} (the label column), got "
                f"{args['partition_by']!r}."
            )
    if "seed" in params:
        args.setdefault("seed", seed)
    return args


def check_partition_spec(spec: Any, argument: str = "partition") -> dict[str, Any]:
    """Check a ``{class_path, init_args}`` mapping (class and argument names) and return it as a dict.

    Raises:
        ModuleNotFoundError: ``flwr-datasets`` is not installed (names the extra).
        ValueError: not a mapping with ``class_path`` (and optional ``init_args``), an unknown class (with a
            "did you mean"), or an argument the class does not take.
    """
    if not isinstance(spec, Mapping) or "class_path" not in spec or set(spec) - {"class_path", "init_args"}:
        raise ValueError(
            f"`{argument}` must be a name or a mapping {{class_path: <Flower partitioner>, init_args: {{...}}}}, "
            f"got {spec!r}."
        )
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise ValueError(f"`{argument}.init_args` must be a mapping, got {init_args!r}.")
    cls = _resolve_class(spec["class_path"], argument)
    params = inspect.signature(cls).parameters
    unknown = sorted(set(init_args) - set(params))
    if unknown:
        raise ValueError(
            f"Unknown `{argument}.init_args` {unknown} for {cls.__name__}; allowed: {sorted(params)}."
        )
    return {"class_path": spec["class_path"], "init_args": dict(init_args)}


def flower_partitioner(
    spec: str | Mapping[str, Any],
    num_clients: int,
    seed: int = 0,
    alpha: float = 0.5,
    min_size: int = 10,
    classes_per_client: int = 2,
    shards_per_client: int = 2,
):
    """A Flower Datasets ``Partitioner`` (no data assigned yet) for a name in :data:`FLOWER_CLASSES` or a mapping.

    Named partitioners take: ``flwr-iid`` nothing (contiguous blocks in data order; no seed),
    ``flwr-dirichlet`` ``alpha``, ``min_size`` (as ``min_partition_size``) and ``seed``;
    ``flwr-pathological`` ``classes_per_client`` (``num_classes_per_partition``, random class assignment) and
    ``seed``; ``flwr-shards`` ``shards_per_client`` (``num_shards_per_partition``) and ``seed``.

    Raises:
        ModuleNotFoundError: ``flwr-datasets`` is not installed.
        ValueError: an unknown name or class, or bad ``init_args``.
    """
    if isinstance(spec, str):
        if spec not in FLOWER_CLASSES:
            raise ValueError(f"`partition` must be one of {list(FLOWER_CLASSES)} here, got {spec!r}.")
        named = {
            "flwr-iid": {},
            "flwr-dirichlet": {"alpha": float(alpha), "min_partition_size": int(min_size)},
            "flwr-pathological": {"num_classes_per_partition": int(classes_per_client)},
            "flwr-shards": {"num_shards_per_partition": int(shards_per_client)},
        }[spec]
        spec = {"class_path": FLOWER_CLASSES[spec], "init_args": named}
    spec = check_partition_spec(spec)
    cls = _resolve_class(spec["class_path"])
    return cls(**_init_args(cls, spec["init_args"], num_clients, int(seed)))


def label_dataset(labels: Any):
    """A ``datasets.Dataset`` with the integer labels (column ``label``) and their row indices (``index``)."""
    import_flwr_datasets()
    import datasets

    y = labels_of(labels)
    return datasets.Dataset.from_dict({LABEL_COLUMN: y, INDEX_COLUMN: np.arange(len(y), dtype=np.int64)})


def flower_partition(
    labels: Any,
    num_clients: int,
    spec: str | Mapping[str, Any],
    seed: int = 0,
    alpha: float = 0.5,
    min_size: int = 10,
    classes_per_client: int = 2,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Each client's row indices from a Flower Datasets partitioner, in the order ``load_partition`` gives them.

    No sample goes to two clients (checked); some Flower partitioners leave samples on no client (e.g.
    ``ShardPartitioner`` drops the remainder of ``len(labels)`` over the shard count), which is warned about.

    Raises:
        ModuleNotFoundError: ``flwr-datasets`` is not installed.
        ValueError: bad partitioner arguments (and whatever the Flower partitioner raises), or a partitioner
            that gives a sample to two clients.

    Examples:
        >>> [p.tolist() for p in flower_partition([0, 0, 1, 1], 2, "flwr-iid")]
        [[0, 1], [2, 3]]
    """
    y = labels_of(labels)
    if not isinstance(num_clients, int) or isinstance(num_clients, bool) or num_clients < 1:
        raise ValueError(f"`num_clients` must be a positive integer, got {num_clients!r}.")
    partitioner = flower_partitioner(
        spec, num_clients, seed, alpha, min_size, classes_per_client, shards_per_client
    )
    partitioner.dataset = label_dataset(y)
    name = type(partitioner).__name__
    try:
        with warnings.catch_warnings():
            # pyarrow >= 25 deprecates an argument that ``datasets.Dataset.sort`` still passes (ShardPartitioner)
            warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)
            parts = [
                np.asarray(partitioner.load_partition(k)[INDEX_COLUMN], dtype=np.int64)
                for k in range(num_clients)
            ]
    except ValueError as exc:
        raise ValueError(
            f"Flower's {name} (`partition`={spec!r}) cannot split {len(y)} samples: {exc}"
        ) from exc
    used = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if len(np.unique(used)) != len(used):
        raise ValueError(f"{name} gave some samples to two clients; choose a horizontal partitioner.")
    if len(used) < len(y):
        warnings.warn(
            f"{name} left {len(y) - len(used)} of {len(y)} samples on no client.", UserWarning, stacklevel=2
        )
    return parts


def plot_label_distribution(
    labels: Any,
    parts: Sequence[Any],
    path: str | None = None,
    plot_type: str = "bar",
    size_unit: str = "absolute",
    title: str = "label distribution per client",
    legend: bool = True,
):
    """Flower Datasets' ``plot_label_distributions`` of any partition (index arrays, e.g. :func:`partition`'s).

    Saved to ``path`` when given. Returns Flower's ``(figure, axes, counts)``; ``counts`` is a DataFrame with
    one row per client and one column per class.

    Examples:
        >>> import numpy as np
        >>> fig, ax, counts = plot_label_distribution(np.arange(8) % 2, [np.arange(4), np.arange(4, 8)])
        >>> counts.to_numpy().tolist()
        [[2, 2], [2, 2]]
    """
    import_flwr_datasets()
    import matplotlib

    matplotlib.use("Agg", force=False)
    from flwr_datasets.partitioner import Partitioner
    from flwr_datasets.visualization import plot_label_distributions

    index_lists = [np.asarray(p, dtype=np.int64).tolist() for p in parts]

    class _Given(Partitioner):
        """A fixed partition as a Flower ``Partitioner``."""

        def load_partition(self, partition_id: int):
            return self.dataset.select(index_lists[partition_id])

        @property
        def num_partitions(self) -> int:
            return len(index_lists)

    given = _Given()
    given.dataset = label_dataset(labels)
    fig, ax, counts = plot_label_distributions(
        given,
        label_name=LABEL_COLUMN,
        plot_type=plot_type,
        size_unit=size_unit,
        title=title,
        legend=legend,
        legend_title="class",
        verbose_labels=False,
    )
    ax.set_xlabel("client")
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig, ax, counts
