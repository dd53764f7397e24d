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

#: Units of the built-in objectives (``time``: fit wall seconds; ``energy``: joules).
OBJECTIVE_UNITS = {"time": "s", "energy": "J"}
#: MOPIR importances fitted on fewer finished trials than this are not shown as a ranking.
MIN_TRIALS_FOR_IMPORTANCE = 10
#: A Pareto configuration is reported cheaper than the default only if it saves more than this share of
#: the default's time/energy: both are single measurements per trial, noisy on a shared machine.
MIN_RELATIVE_SAVING = 0.1
#: Where both trials' time/energy were repeated (``HyperTuner(repeats=...)``), a saving counts when it
#: exceeds this many standard errors of the difference (``sqrt(sem_a**2 + sem_b**2)``) instead.
SEM_Z = 2.0


def _sem(h: dict, name: str) -> float | None:
    return (h.get("sem") or {}).get(name)


def is_cheaper(h: dict, base: dict, name: str, min_saving: float = MIN_RELATIVE_SAVING) -> bool:
    """Whether trial ``h`` uses less of cost objective ``name`` than ``base``: by more than ``SEM_Z``
    standard errors of the difference when both were repeated (their SEMs known), else by more than
    ``min_saving`` of the base's value.

    Examples:
        >>> a = {"values": {"time": 9.0}, "sem": {"time": 0.1}}
        >>> b = {"values": {"time": 10.0}, "sem": {"time": 0.1}}
        >>> is_cheaper(a, b, "time")  # 10% saving, not more than 10% -- but 7 SEMs
        True
        >>> is_cheaper({"values": {"time": 9.0}}, {"values": {"time": 10.0}}, "time")  # no SEM: 10% rule
        False
    """
    v, b = h["values"][name], base["values"][name]
    sv, sb = _sem(h, name), _sem(base, name)
    if sv is not None and sb is not None:
        return b - v > SEM_Z * math.sqrt(sv**2 + sb**2)
    return v < (1.0 - min_saving) * b


def axis_label(objective) -> str:
    """``"time [s] (lower is better)"``: the objective's name, its unit where known, and its direction."""
    unit = OBJECTIVE_UNITS.get(objective.name)
    better = "lower" if objective.direction == "minimize" else "higher"
    return f"{objective.name}{f' [{unit}]' if unit else ''} ({better} is better)"


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


def default_comparison(result, min_saving: float = MIN_RELATIVE_SAVING) -> dict[str, Any]:
    """Compare the Pareto set with the default-configuration trial (trial 0 of an ADUMBO study, or any
    trial whose parameters equal the space defaults). Returns the default's values and the Pareto
    configurations at equal or better value on every non-cost objective that are faster or use less energy
    by more than ``min_saving`` (a share of the default's value: single timings on a shared machine are
    noisy, so a smaller saving is not called a win). Where both trials' time/energy were repeated, the
    saving must exceed ``SEM_Z`` standard errors of the difference instead (:func:`is_cheaper`)."""
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
        cheaper = [o.name for o in cost if is_cheaper(h, base, o.name, min_saving)]
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
    from matplotlib.ticker import MaxNLocator

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
    base = default_comparison(result)["default"]
    is_default = np.array([h is base for h in complete], bool)
    default_label = f"default config (trial {base['number']})" if base is not None else None

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
            E = np.array(
                [[_sem(h, objs[i].name) or 0.0, _sem(h, objs[j].name) or 0.0] for h in complete], float
            ).reshape(-1, 2)
            if (E > 0).any():
                ax.errorbar(
                    Y[:, i], Y[:, j], xerr=E[:, 0], yerr=E[:, 1], fmt="none", ecolor="tab:gray", elinewidth=0.8,
                    capsize=2, label="± SEM of repeats",
                )  # fmt: skip
            if is_default.any():
                ax.scatter(
                    Y[is_default, i], Y[is_default, j], marker="*", s=160, c="black", label=default_label
                )
            ax.set_xlabel(axis_label(objs[i]))
            ax.set_ylabel(axis_label(objs[j]))
            if objs[i].log_scale:
                ax.set_xscale("log")
                _plain_log_ticks(ax.xaxis)
            if objs[j].log_scale:
                ax.set_yscale("log")
                _plain_log_ticks(ax.yaxis)

        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=110)
        plt.close(fig)
        paths["pareto"] = out / "pareto.png"
    if len(objs) >= 3 and len(Y):
        fig = plt.figure(figsize=(5.5, 5))
        ax = fig.add_subplot(projection="3d")
        ax.scatter(Y[~pareto, 0], Y[~pareto, 1], Y[~pareto, 2], c="lightgray", s=14)
        ax.scatter(Y[pareto, 0], Y[pareto, 1], Y[pareto, 2], c="tab:blue", s=24, label="Pareto")
        if is_default.any():
            d = Y[is_default][0]
            ax.scatter([d[0]], [d[1]], [d[2]], marker="*", s=160, c="black", label=default_label)
        ax.legend(fontsize=7)
        ax.set_xlabel(axis_label(objs[0]), fontsize=8)
        ax.set_ylabel(axis_label(objs[1]), fontsize=8)
        ax.set_zlabel(axis_label(objs[2]), fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "pareto3d.png", dpi=110)
        plt.close(fig)
        paths["pareto3d"] = out / "pareto3d.png"

    curve = hv_curve(result)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(curve) + 1), curve, "o-", ms=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume / max (normalised, unitless)")
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png", dpi=110)
    plt.close(fig)
    paths["hypervolume"] = out / "hypervolume.png"

    if _importance_readable(result.mopir):
        names = result.mopir.order
        vals = [result.mopir.importances[n] for n in names]
        errs = [result.mopir.std.get(n, 0.0) for n in names]
        fig, ax = plt.subplots(figsize=(5, 0.4 * len(names) + 1.2))
        colors = ["tab:green" if n in result.mopir.selected else "tab:gray" for n in names]
        ax.barh(names[::-1], vals[::-1], xerr=errs[::-1], color=colors[::-1], capsize=3)
        ax.set_xlabel(f"MOPIR importance share, mean ± std ({result.mopir.n_trials} trials; green: kept)")
        fig.tight_layout()
        fig.savefig(out / "mopir.png", dpi=110)
        plt.close(fig)
        paths["mopir"] = out / "mopir.png"

    paths["summary"] = _write_summary(result, out, curve)
    return paths


def _plain_log_ticks(axis) -> None:
    """Log-scale ticks as plain numbers (``20``, ``6``) rather than ``2x10^1``."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def _importance_readable(ranking) -> bool:
    """A MOPIR ranking is shown only when it was fitted on enough finished trials."""
    return ranking is not None and ranking.n_trials >= MIN_TRIALS_FOR_IMPORTANCE


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _fmt_value(h: dict, name: str) -> str:
    """``"12.3 ± 0.4 (mean of 3)"`` for a repeated objective, else the value."""
    sem = _sem(h, name)
    if sem is None:
        return _fmt(h["values"][name])
    k = (h.get("n_repeats") or {}).get(name)
    return (
        f"{_fmt(h['values'][name])} ± {sem:.2g} (mean of {k})"
        if k
        else f"{_fmt(h['values'][name])} ± {sem:.2g}"
    )


def _write_summary(result, out: Path, curve: np.ndarray) -> Path:
    objs = result.objectives
    n_fail = sum(h["state"] == "FAIL" for h in result.history)
    n_pruned = sum(h["state"] == "PRUNED" for h in result.history)
    repeated = sorted({n for h in result.history for n in (h.get("sem") or {})})
    lines = [
        "# HyperTuner summary",
        "",
        f"- trials: {len(result.history)} finished ({n_fail} failed"
        + (
            f", {n_pruned} stopped early (pruned; their partial values are not on the front)"
            if n_pruned
            else ""
        )
        + ")",
        f"- objectives: {', '.join(f'{o.name} ({o.direction})' for o in objs)}",
        f"- energy source(s): {sorted({str(h.get('energy_source')) for h in result.history if h.get('energy_source')})}",
        f"- final hypervolume (normalised): {curve[-1]:.4f}" if len(curve) else "- no trial finished",
        "- units: "
        + ", ".join(f"{o.name} in {OBJECTIVE_UNITS[o.name]}" for o in objs if o.name in OBJECTIVE_UNITS)
        if any(o.name in OBJECTIVE_UNITS for o in objs)
        else "",
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
                + " | ".join(_fmt_value(h, o.name) for o in objs)
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
            f"Default (trial {d['number']}): " + ", ".join(f"{o.name}={_fmt_value(d, o.name)}" for o in objs),
            "",
        ]
        if repeated:
            lines += [
                f"{', '.join(repeated)}: mean of the repeated runs, ± the standard error of the mean. A "
                f"configuration is listed as cheaper when its saving exceeds {SEM_Z:g} standard errors of the "
                f"difference (trials without repeats: more than {MIN_RELATIVE_SAVING:.0%} of the default's value).",
                "",
            ]
        elif any(o.name in OBJECTIVE_UNITS for o in objs):
            lines += [
                f"Time and energy are one measurement per trial, with no repeats: on a shared machine they vary "
                f"by tens of percent for the same work. A configuration is listed as cheaper only when it saves "
                f"more than {MIN_RELATIVE_SAVING:.0%} of the default's value; rerun the listed trials before "
                "relying on a saving.",
                "",
            ]
        if cmp["better"]:
            for b in cmp["better"]:
                lines.append(
                    f"- trial {b['number']}: equal or better on every quality objective and cheaper in "
                    f"{', '.join(b['cheaper_in'])}: "
                    + ", ".join(f"{o.name}={_fmt_value(b, o.name)}" for o in objs)
                )
        else:
            lines.append(
                "- no Pareto configuration is both at least as good on every quality objective and cheaper "
                f"(by more than {MIN_RELATIVE_SAVING:.0%}) than the default."
            )
        lines.append("")
    if result.mopir is not None:
        r = result.mopir
        kept = ", ".join(r.selected)
        lines += ["## MOPIR importance", ""]
        if _importance_readable(r):
            lines += [
                f"Fitted on {r.n_trials} finished trials; ± is the standard deviation over the forest's trees "
                "(or permutation repeats).",
                "",
                "| parameter | importance | kept |",
                "|---|---|---|",
            ]
            for n in r.order:
                lines.append(
                    f"| {n} | {r.importances[n]:.3f} ± {r.std.get(n, float('nan')):.3f} | "
                    f"{'yes' if n in r.selected else 'no'} |"
                )
        else:
            lines.append(
                f"Not shown: the ranking was fitted on {r.n_trials or 'an unknown number of'} finished trials, "
                f"fewer than the {MIN_TRIALS_FOR_IMPORTANCE} needed for importances worth reading. The search "
                f"kept: {kept}."
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
