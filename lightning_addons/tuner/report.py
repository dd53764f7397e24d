"""Reports of a tuning run: Pareto plots (2-D pairs, 3-D), hypervolume over iterations, MOPIR bar chart,
a CSV of all trials and a markdown summary (with the comparison against the default configuration)."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from lightning_addons.tuner._pareto import hypervolume, log_columns, pareto_mask, to_max


def _objective_matrix(result) -> tuple[np.ndarray, list[dict]]:
    complete = [h for h in result.history if h["state"] == "COMPLETE"]
    Y = np.array([[h["values"][o.name] for o in result.objectives] for h in complete], float).reshape(
        -1, len(result.objectives)
    )
    return Y, complete


def hv_curve(result) -> np.ndarray:
    """Hypervolume of the finished trials after each trial, in a normalised space: each objective mapped
    to [0, 1] (better = larger; log scale for log objectives) over all complete trials, reference point
    -0.1, divided by the box volume 1.1^m so that 1.0 means one trial is best on every objective."""
    objs = result.objectives
    hist = sorted(result.history, key=lambda h: h["number"])
    Y = np.array(
        [[h["values"][o.name] if h["state"] == "COMPLETE" else np.nan for o in objs] for h in hist], float
    )
    Y = Y.reshape(-1, len(objs))
    Y = log_columns(Y, [i for i, o in enumerate(objs) if o.log_scale])
    Ym = to_max(Y, [o.direction for o in objs])
    ok = np.all(np.isfinite(Ym), axis=1)
    if not ok.any():
        return np.zeros(len(hist))
    lo, hi = np.nanmin(Ym[ok], 0), np.nanmax(Ym[ok], 0)
    Z = (Ym - lo) / np.where(hi > lo, hi - lo, 1.0)
    ref = np.full(len(objs), -0.1)
    out = []
    for k in range(len(hist)):
        rows = Z[: k + 1][ok[: k + 1]]
        out.append(hypervolume(rows, ref) if len(rows) else 0.0)
    return np.asarray(out) / 1.1 ** len(objs)


def default_comparison(result) -> dict[str, Any]:
    """Compare the Pareto set with the default-configuration trial (trial 0 of an ADUMBO study, or any
    trial whose parameters equal the space defaults). Returns the default's values and the Pareto
    configurations at equal or better value on every non-cost objective that are faster or use less energy."""
    defaults = result.space_defaults if hasattr(result, "space_defaults") else None
    complete = [h for h in result.history if h["state"] == "COMPLETE"]
    base = None
    if defaults is not None:
        for h in complete:
            if all(h["params"].get(k) == v for k, v in defaults.items()):
                base = h
                break
    if base is None:
        return {"default": None, "better": []}
    cost = [o for o in result.objectives if o.name in ("time", "energy")]
    quality = [o for o in result.objectives if o.name not in ("time", "energy")]
    better = []
    for h in result.pareto:
        if h is base:
            continue
        ok_quality = all(
            (h["values"][o.name] >= base["values"][o.name])
            if o.direction == "maximize"
            else (h["values"][o.name] <= base["values"][o.name])
            for o in quality
        )
        cheaper = [o.name for o in cost if h["values"][o.name] < base["values"][o.name]]
        if ok_quality and cheaper:
            better.append(
                {"number": h["number"], "cheaper_in": cheaper, "values": h["values"], "params": h["params"]}
            )
    return {"default": base, "better": better}


def write_report(result, output_dir: str | os.PathLike, space=None) -> dict[str, Path]:
    """Write ``trials.csv``, ``summary.md`` and the plots (PNG) into ``output_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if space is not None:
        result.space_defaults = space.defaults()
    paths: dict[str, Path] = {}
    df = result.dataframe()
    tmp = out / "trials.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "trials.csv")
    paths["csv"] = out / "trials.csv"
    objs = result.objectives
    Y, complete = _objective_matrix(result)
    pareto = np.array([h.get("pareto", False) for h in complete], bool)

    # Pareto fronts: every pair of objectives
    if len(objs) >= 2 and len(Y):
        pairs = list(itertools.combinations(range(len(objs)), 2))
        fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
        for ax, (i, j) in zip(axes[0], pairs):
            Ym = to_max(Y[:, [i, j]], [objs[i].direction, objs[j].direction])
            pm = pareto_mask(Ym)
            ax.scatter(Y[:, i], Y[:, j], c="lightgray", s=18, label="trials")
            ax.scatter(Y[pareto, i], Y[pareto, j], c="tab:blue", s=22, label="Pareto (all objectives)")
            order = np.argsort(Y[pm, i])
            ax.plot(Y[pm, i][order], Y[pm, j][order], "r.-", label="2-D front")
            ax.set_xlabel(f"{objs[i].name} ({objs[i].direction[:3]})")
            ax.set_ylabel(f"{objs[j].name} ({objs[j].direction[:3]})")
            if objs[i].log_scale:
                ax.set_xscale("log")
            if objs[j].log_scale:
                ax.set_yscale("log")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=110)
        plt.close(fig)
        paths["pareto"] = out / "pareto.png"
    if len(objs) >= 3 and len(Y):
        fig = plt.figure(figsize=(5.5, 5))
        ax = fig.add_subplot(projection="3d")
        ax.scatter(Y[~pareto, 0], Y[~pareto, 1], Y[~pareto, 2], c="lightgray", s=14)
        ax.scatter(Y[pareto, 0], Y[pareto, 1], Y[pareto, 2], c="tab:blue", s=24)
        ax.set_xlabel(objs[0].name)
        ax.set_ylabel(objs[1].name)
        ax.set_zlabel(objs[2].name)
        fig.tight_layout()
        fig.savefig(out / "pareto3d.png", dpi=110)
        plt.close(fig)
        paths["pareto3d"] = out / "pareto3d.png"

    curve = hv_curve(result)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(curve) + 1), curve, "o-", ms=3)
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume / max (normalised objectives)")
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png", dpi=110)
    plt.close(fig)
    paths["hypervolume"] = out / "hypervolume.png"

    if result.mopir is not None:
        names = result.mopir.order
        vals = [result.mopir.importances[n] for n in names]
        fig, ax = plt.subplots(figsize=(5, 0.4 * len(names) + 1.2))
        colors = ["tab:green" if n in result.mopir.selected else "tab:gray" for n in names]
        ax.barh(names[::-1], vals[::-1], color=colors[::-1])
        ax.set_xlabel("MOPIR importance (green: kept for the search)")
        fig.tight_layout()
        fig.savefig(out / "mopir.png", dpi=110)
        plt.close(fig)
        paths["mopir"] = out / "mopir.png"

    paths["summary"] = _write_summary(result, out, curve)
    return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _write_summary(result, out: Path, curve: np.ndarray) -> Path:
    objs = result.objectives
    n_fail = sum(h["state"] == "FAIL" for h in result.history)
    lines = [
        "# HyperTuner summary",
        "",
        f"- trials: {len(result.history)} finished ({n_fail} failed)",
        f"- objectives: {', '.join(f'{o.name} ({o.direction})' for o in objs)}",
        f"- energy source(s): {sorted({str(h.get('energy_source')) for h in result.history if h.get('energy_source')})}",
        f"- final hypervolume (normalised): {curve[-1]:.4f}" if len(curve) else "- no trial finished",
        "",
    ]
    if result.pareto:
        pnames = sorted({k for h in result.pareto for k in h["params"]})
        lines += [
            "## Pareto set",
            "",
            "| trial | " + " | ".join(o.name for o in objs) + " | " + " | ".join(pnames) + " |",
            "|" + "---|" * (1 + len(objs) + len(pnames)),
        ]
        for h in sorted(result.pareto, key=lambda h: h["number"]):
            lines.append(
                f"| {h['number']} | "
                + " | ".join(_fmt(h["values"][o.name]) for o in objs)
                + " | "
                + " | ".join(_fmt(h["params"].get(n)) for n in pnames)
                + " |"
            )
        lines.append("")
    cmp = default_comparison(result)
    if cmp["default"] is not None:
        d = cmp["default"]
        lines += [
            "## Against the default configuration",
            "",
            f"Default (trial {d['number']}): "
            + ", ".join(f"{o.name}={_fmt(d['values'][o.name])}" for o in objs),
            "",
        ]
        if cmp["better"]:
            for b in cmp["better"]:
                lines.append(
                    f"- trial {b['number']}: equal or better on every quality objective and cheaper in "
                    f"{', '.join(b['cheaper_in'])}: "
                    + ", ".join(f"{o.name}={_fmt(b['values'][o.name])}" for o in objs)
                )
        else:
            lines.append(
                "- no Pareto configuration is both at least as good on every quality objective and cheaper "
                "than the default."
            )
        lines.append("")
    if result.mopir is not None:
        lines += ["## MOPIR importance", "", "| parameter | importance | kept |", "|---|---|---|"]
        for n in result.mopir.order:
            lines.append(
                f"| {n} | {result.mopir.importances[n]:.3f} | {'yes' if n in result.mopir.selected else 'no'} |"
            )
        lines.append("")
    failed = [h for h in result.history if h["state"] == "FAIL"]
    if failed:
        lines += ["## Failed trials", ""]
        for h in failed:
            lines.append(f"- trial {h['number']}: {str(h.get('error'))[:300]}")
        lines.append("")
    path = out / "summary.md"
    tmp = out / "summary.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path
