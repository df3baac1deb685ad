"""The report's PNG figures, drawn with matplotlib's object API (no pyplot, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from egressaudit.report.measures import CATEGORY_ORDER, DATA_CLASS_ORDER, NONE, human_bytes
from egressaudit.session import atomic_write

DATA_CLASS_COLORS: dict[str, str] = {
    "customer_content": "#1f77b4",
    "service_generated": "#d62728",
    "service_operation": "#7f7f7f",
    "unknown": "#c7c7c7",
}
PARTY_COLORS: dict[str, str] = {"first": "#1f77b4", "third": "#d62728", "unknown": "#9e9e9e"}
CATEGORY_COLORS: dict[str, str] = {
    "media": "#1f77b4",
    "content_upload": "#6baed6",
    "telemetry": "#d62728",
    "signaling": "#2ca02c",
    "auth": "#98df8a",
    "config_update": "#9467bd",
    "web_asset": "#c5b0d5",
    "dns": "#8c564b",
    "other": "#e0e0e0",
    "unknown": "#c7c7c7",
}
FALLBACK = "#bcbd22"
DPI = 100


def _unit(max_value: float) -> tuple[float, str]:
    for div, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if max_value >= div:
            return div, name
    return 1.0, "B"


def _empty(ax: Axes, title: str, message: str = "no egress in this session") -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig: Figure, path: Path) -> Path:
    """Write the figure atomically: a full disk leaves no empty or partial PNG behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}))


def data_class_figure(by_class_category: pd.DataFrame, path: Path) -> Path:
    """Horizontal stacked bars: egress per data class, stacked by category."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.add_subplot()
    title = "Egress by data class and category"
    df = by_class_category[by_class_category["bytes_out"] > 0] if not by_class_category.empty else by_class_category
    if df.empty:
        _empty(ax, title)
        return _save(fig, path)
    pivot = df.pivot_table(index="data_class", columns="category", values="bytes_out", aggfunc="sum", fill_value=0)
    classes = [d for d in DATA_CLASS_ORDER if d in pivot.index] + [d for d in pivot.index if d not in DATA_CLASS_ORDER]
    cats = [c for c in CATEGORY_ORDER if c in pivot.columns] + [c for c in pivot.columns if c not in CATEGORY_ORDER]
    pivot = pivot.reindex(index=classes, columns=cats)
    left, unit = _stacked_by_category(ax, pivot, cats, [str(c).replace("_", " ") for c in classes])
    ax.invert_yaxis()
    ax.set_xlabel(f"bytes sent ({unit})")
    ax.set_xlim(0, max(left) * 1.2)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7, ncols=2, frameon=False)
    return _save(fig, path)


def _stacked_by_category(ax: Axes, pivot: pd.DataFrame, cats: Sequence[object], labels: list[str]) -> tuple[list[float], str]:
    """Horizontal bars, one per pivot row, stacked by category column and labelled with their totals.

    Returns the bar lengths (in the chosen unit) and the unit's name.
    """
    div, unit = _unit(float(pivot.to_numpy().sum(axis=1).max()))
    y = list(range(len(labels)))
    left = [0.0] * len(labels)
    for cat in cats:
        vals = [float(v) / div for v in pivot[cat]]
        ax.barh(y, vals, left=left, color=CATEGORY_COLORS.get(str(cat), FALLBACK), label=str(cat), edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for yi, total in zip(y, left, strict=True):
        ax.text(total, yi, " " + human_bytes(total * div), va="center", fontsize=8)
    ax.set_yticks(y, labels)
    return left, unit


def vendor_figure(by_vendor: pd.DataFrame, path: Path, top: int = 15) -> Path:
    """Horizontal bars: egress per vendor and service, coloured by party."""
    fig = Figure(figsize=(8, 1.2 + 0.32 * max(1, min(top, len(by_vendor)))), layout="constrained")
    ax = fig.add_subplot()
    title = "Egress by vendor and service (colour: party)"
    df = by_vendor[by_vendor["bytes_out"] > 0].head(top) if not by_vendor.empty else by_vendor
    if df.empty:
        _empty(ax, title)
        return _save(fig, path)
    div, unit = _unit(float(df["bytes_out"].max()))
    labels = [v if s == NONE else f"{v} / {s}" for v, s in zip(df["vendor"], df["service"], strict=True)]
    vals = [float(v) / div for v in df["bytes_out"]]
    colors = [PARTY_COLORS.get(str(p), FALLBACK) for p in df["party"]]
    y = list(range(len(df)))
    ax.barh(y, vals, color=colors)
    for yi, v in zip(y, df["bytes_out"], strict=True):
        ax.text(float(v) / div, yi, " " + human_bytes(int(v)), va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"bytes sent ({unit})")
    ax.set_xlim(0, max(vals) * 1.25)
    ax.set_title(title)
    from matplotlib.patches import Patch

    present = [p for p in PARTY_COLORS if p in set(map(str, df["party"]))]
    ax.legend(
        handles=[Patch(color=PARTY_COLORS[p], label=f"{p} party" if p != "unknown" else "unknown") for p in present], loc="lower right", fontsize=8
    )
    return _save(fig, path)


STATE_SHADES = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def over_time_figure(series: pd.DataFrame, bin_s: int, path: Path, states: pd.DataFrame | None = None) -> Path:
    """Stacked area: egress rate over time per data class; the call states (``states``: the report's per-state table,
    :mod:`egressaudit.report.states`) shaded behind, each labelled at the top."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.add_subplot()
    title = "Egress over time by data class"
    if series.empty or float(series.to_numpy().sum()) <= 0:
        _empty(ax, title)
        return _save(fig, path)
    cols = [c for c in series.columns if float(series[c].sum()) > 0]
    rate = series[cols] / bin_s
    div, unit = _unit(float(rate.to_numpy().sum(axis=1).max()))
    t0 = series.index[0]
    x = [(t - t0).total_seconds() for t in series.index]
    if len(x) == 1:  # one bin: draw it as a step of the bin's width
        x = [x[0], x[0] + bin_s]
        ys = [[float(rate[c].iloc[0]) / div] * 2 for c in cols]
    else:
        x = [xi + bin_s / 2 for xi in x]
        ys = [[float(v) / div for v in rate[c]] for c in cols]
    ax.stackplot(x, ys, labels=[c.replace("_", " ") for c in cols], colors=[DATA_CLASS_COLORS.get(c, FALLBACK) for c in cols], alpha=0.85)
    lo, hi = min(x), max(x)
    if states is not None and not states.empty:
        colour: dict[str, str] = {}
        for rec in states.to_dict("records"):
            a = (pd.Timestamp(rec["from"]) - t0).total_seconds()
            b = a + float(rec["seconds"])
            c = colour.setdefault(str(rec["state"]), STATE_SHADES[len(colour) % len(STATE_SHADES)])
            ax.axvspan(a, b, color=c, alpha=0.12, linewidth=0, zorder=0)
            ax.text(a, 1.0, f" {rec['state']}", transform=ax.get_xaxis_transform(), fontsize=7, va="top", ha="left", color=c, clip_on=True)
            lo, hi = min(lo, a), max(hi, b)
    ax.set_xlabel(f"seconds since {t0.strftime('%Y-%m-%d %H:%M:%S')} UTC (bins of {bin_s} s)")
    ax.set_ylabel(f"{unit}/s sent")
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def http_vendor_figure(by_vendor_category: pd.DataFrame, path: Path, top: int = 15) -> Path:
    """Horizontal stacked bars: HTTP request bytes sent per vendor, stacked by category (the ``top`` vendors)."""
    df = by_vendor_category[by_vendor_category["bytes_out"] > 0] if not by_vendor_category.empty else by_vendor_category
    totals = df.groupby("vendor", sort=False)["bytes_out"].sum().sort_values(ascending=False, kind="stable") if not df.empty else None
    n = 0 if totals is None else min(top, len(totals))
    fig = Figure(figsize=(8, 1.4 + 0.32 * max(1, n)), layout="constrained")
    ax = fig.add_subplot()
    title = "HTTP requests: bytes sent per vendor, by category"
    if totals is None or df.empty:
        _empty(ax, title, "no HTTP requests in this session")
        return _save(fig, path)
    vendors = list(totals.index[:n])
    pivot = df.pivot_table(index="vendor", columns="category", values="bytes_out", aggfunc="sum", fill_value=0).reindex(index=vendors)
    cats = [c for c in CATEGORY_ORDER if c in pivot.columns] + [c for c in pivot.columns if c not in CATEGORY_ORDER]
    pivot = pivot.reindex(columns=cats).fillna(0)
    left, unit = _stacked_by_category(ax, pivot, cats, [str(v) for v in vendors])
    ax.invert_yaxis()
    ax.set_xlabel(f"request bytes sent, head and body as on the wire ({unit})")
    ax.set_xlim(0, max(left) * 1.25)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7, ncols=2, frameon=False)
    return _save(fig, path)
