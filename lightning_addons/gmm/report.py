"""Writers and figures of GMM audits (pure: no Lightning): an audit is a dict of primitives (as in
``GMMFilterAuditor.history``); these functions turn it into JSON/CSV/markdown text and PNG figures.

Examples:
    >>> audit = {"epoch": 0, "filters": [{"epoch": 0, "layer": "conv", "filter": 0, "k": 2, "ch": 5.0,
    ...          "min_fraction": 0.1, "dead": False, "anomaly": True, "score": 0.02, "n_flagged": 1,
    ...          "flagged_ids": [7]}]}
    >>> audit_csv(audit).splitlines()[1]
    '0,conv,0,2,5.0,0.1,False,True,0.02,1,7'
    >>> anomaly_markdown(audit).splitlines()[-1]
    '| conv | 0 | 2 | 5.0 | 0.020 | 1 |'
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from lightning_addons.data import atomic_write_text

FILTER_FIELDS = (
    "epoch",
    "layer",
    "filter",
    "k",
    "ch",
    "min_fraction",
    "dead",
    "anomaly",
    "score",
    "n_flagged",
)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (never a torn file)."""
    atomic_write_text(path, text)


def audit_json(audit: dict[str, Any]) -> str:
    """The whole audit as indented JSON."""
    return json.dumps(audit, indent=1)


def audit_csv(audit: dict[str, Any]) -> str:
    """One CSV row per filter (``FILTER_FIELDS`` and the space-separated ``flagged_ids``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=[*FILTER_FIELDS, "flagged_ids"], extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in audit["filters"]:
        writer.writerow({**row, "flagged_ids": " ".join(map(str, row["flagged_ids"]))})
    return buf.getvalue()


def anomaly_markdown(audit: dict[str, Any]) -> str:
    """A markdown table of the audit's anomaly filters (for TensorBoard's text panel)."""
    lines = ["| layer | filter | k | ch | score | n_flagged |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {x['layer']} | {x['filter']} | {x['k']} | {x['ch']:.1f} | {x['score']:.3f} | {x['n_flagged']} |"
        for x in audit["filters"]
        if x["anomaly"]
    ]
    return "\n".join(lines)


def table_rows(audit: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """``(columns, rows)`` of the per-filter table (for W&B tables)."""
    cols = list(FILTER_FIELDS)
    return cols, [[x[c] for c in cols] for x in audit["filters"]]


def save_figures(
    history: list[dict[str, Any]],
    plot_data: dict[str, dict[str, Any]],
    layers: list[str],
    folder: str | os.PathLike,
) -> list[Path]:
    """One PNG per layer: the PCA scatter (2-sigma mixture ellipses, flagged samples) of the layer's most
    anomalous filter in ``plot_data`` and the CH heat map (filters x audits) over ``history``. Returns the
    paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    epochs = [a["epoch"] for a in history]
    for name in layers or list(plot_data):
        rows = [[row["ch"] for row in a["filters"] if row["layer"] == name] for a in history]
        if not rows or not rows[0]:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        pdata = plot_data.get(name)
        ax = axes[0]
        if pdata is not None:
            pts, fl = pdata["points"], pdata["flagged"]
            ax.scatter(pts[~fl, 0], pts[~fl, 1], s=6, c="tab:blue", label="samples")
            if bool(fl.any()):
                ax.scatter(pts[fl, 0], pts[fl, 1], s=14, c="tab:red", marker="x", label="flagged")
            for mean, cov in zip(pdata["means"], pdata["covariances"]):
                vals, vecs = torch.linalg.eigh(cov.double())
                angle = math.degrees(math.atan2(float(vecs[1, 1]), float(vecs[0, 1])))
                w, h = (2 * 2 * vals.clamp_min(0).sqrt()).tolist()[::-1]
                ax.add_patch(Ellipse(mean.tolist(), w, h, angle=angle, fill=False, color="k", lw=1))
            ax.set_title(f"{name} filter {pdata['filter']} (epoch {pdata['epoch']}), 2-sigma ellipses")
            ax.legend(loc="best", fontsize=7)
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
        width = max(len(r) for r in rows)
        mat = torch.tensor([r + [0.0] * (width - len(r)) for r in rows]).T
        im = axes[1].imshow(mat.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        axes[1].set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
        axes[1].set_xlabel("audit epoch")
        axes[1].set_ylabel("filter")
        axes[1].set_title("CH index")
        fig.colorbar(im, ax=axes[1])
        fig.tight_layout()
        path = folder / f"gmm_{name.replace('.', '_')}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
