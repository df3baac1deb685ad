"""The report's figures, drawn with matplotlib's object API (no pyplot, no display needed).

Each function draws one :class:`~matplotlib.figure.Figure`; :func:`inline_svg` turns it into the markup the page
embeds (so that ``report.html`` is one file that can be sent on its own, sharp at any zoom), :func:`write_png` into
a PNG for other documents (``figures/*.png``, at :data:`DPI`).

One colour means one thing everywhere: each data class has one colour (:data:`DATA_CLASS_COLORS`), each category
one colour (:data:`CATEGORY_COLORS`), a shade of its class's hue (a class has the colour of its main category), and
no figure colours anything else with them: parties are named in words, call states shaded in greys.  Legends sit
beside the plot, never over the data.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Sequence
from html import escape
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from egressaudit.report.measures import CATEGORY_ORDER, DATA_CLASS_ORDER, NONE, human_bytes, words
from egressaudit.session import atomic_write

DATA_CLASS_COLORS: dict[str, str] = {
    "customer_content": "#1f77b4",
    "service_generated": "#d62728",
    "service_operation": "#2ca02c",
    "unknown": "#969696",
}
CATEGORY_COLORS: dict[str, str] = {
    # customer content: blues
    "media": "#1f77b4",
    "content_upload": "#9ecae1",
    # service-generated data: red
    "telemetry": "#d62728",
    # service operation: greens
    "signaling": "#2ca02c",
    "auth": "#a1d99b",
    "config_update": "#00441b",
    "web_asset": "#d9f0d3",
    "dns": "#5aae61",
    # unknown: greys
    "other": "#d9d9d9",
    "unknown": "#969696",
}
#: Parties, for figures that must colour them (the report's name them in words instead): hues no class or category
#: uses.
PARTY_COLORS: dict[str, str] = {"first": "#6a51a3", "third": "#e6550d", "unknown": "#bdbdbd"}
FALLBACK = "#bcbd22"
#: Resolution of the PNG files: sharp on a laptop's screen.
DPI = 200
#: Call states: alternate bands in these greys (with a line where each begins), numbered above the plot.
STATE_BANDS = ("#000000", "#ffffff")
STATE_ALPHA = 0.06
TEXT = "#333333"
MUTED = "#666666"


def mpl_text(s: object) -> str:
    """Text for matplotlib: a ``$`` in a name is a dollar sign, never the start of mathtext."""
    return str(s).replace("$", r"\$")


def byte_unit(max_value: float) -> tuple[float, str]:
    for div, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if max_value >= div:
            return div, name
    return 1.0, "B"


def _figure(height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(8, height), layout="constrained")
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _empty(fig: Figure, ax: Axes, title: str, message: str = "no egress in this session") -> Figure:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color=MUTED)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _legend_beside(fig: Figure, ax: Axes, title: str | None = None) -> None:
    """The legend to the right of the plot, outside it (constrained layout makes room)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False, title=title, title_fontsize=8)


def _ordered(values: Sequence[object], known: list[str]) -> list[str]:
    present = [str(v) for v in values]
    return [k for k in known if k in present] + [v for v in present if v not in known]


def _stacked(ax: Axes, pivot: pd.DataFrame, colors: dict[str, str], labels: list[str]) -> tuple[list[float], float, str]:
    """Horizontal bars, one per pivot row, stacked by column (each in its colour, named in words in the legend) and
    labelled with their totals.  Returns the bar lengths (in the chosen unit), the unit's divisor and its name."""
    div, unit = byte_unit(float(pivot.to_numpy().sum(axis=1).max()))
    y = list(range(len(labels)))
    left = [0.0] * len(labels)
    for col in pivot.columns:
        vals = [float(v) / div for v in pivot[col]]
        ax.barh(y, vals, left=left, color=colors.get(str(col), FALLBACK), label=mpl_text(words(col)), edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for yi, total in zip(y, left, strict=True):
        ax.text(total, yi, " " + human_bytes(total * div), va="center", fontsize=8, color=TEXT)
    ax.set_yticks(y, [mpl_text(lb) for lb in labels])
    ax.invert_yaxis()
    ax.set_xlim(0, max(left) * 1.2 or 1)
    return left, div, unit


def data_class_figure(by_class_category: pd.DataFrame) -> Figure:
    """Horizontal bars: egress per data class, stacked by category."""
    title = "Egress by data class and category"
    df = by_class_category[by_class_category["bytes_out"] > 0] if not by_class_category.empty else by_class_category
    fig, ax = _figure(3.0)
    if df.empty:
        return _empty(fig, ax, title)
    pivot = df.pivot_table(index="data_class", columns="category", values="bytes_out", aggfunc="sum", fill_value=0)
    classes = _ordered(list(pivot.index), DATA_CLASS_ORDER)
    pivot = pivot.reindex(index=classes, columns=_ordered(list(pivot.columns), CATEGORY_ORDER))
    _, _, unit = _stacked(ax, pivot, CATEGORY_COLORS, [words(c) for c in classes])
    ax.set_xlabel(f"bytes sent to remote networks ({unit})")
    ax.set_title(title)
    _legend_beside(fig, ax, "category")
    return fig


def _vendor_label(vendor: object, service: object, party: object) -> str:
    name = str(vendor) if service in (NONE, vendor, None) else f"{vendor} / {service}"
    return name if party in (None, "unknown", NONE) else f"{name} ({party} party)"


def vendor_figure(by_vendor_data_class: pd.DataFrame, top: int = 15) -> Figure:
    """Horizontal bars: egress per vendor and service (its party in words), stacked by data class; the ``top``
    vendors."""
    title = "Egress by vendor and service, by data class"
    df = by_vendor_data_class[by_vendor_data_class["bytes_out"] > 0] if not by_vendor_data_class.empty else by_vendor_data_class
    keys = ["vendor", "service", "party"]
    names = list(dict.fromkeys(zip(df["vendor"], df["service"], df["party"], strict=True)))[:top] if not df.empty else []
    fig, ax = _figure(1.3 + 0.3 * max(1, len(names)))
    if not names:
        return _empty(fig, ax, title)
    pivot = df.pivot_table(index=keys, columns="data_class", values="bytes_out", aggfunc="sum", fill_value=0)
    pivot = pivot.reindex(index=pd.MultiIndex.from_tuples(names, names=keys), columns=_ordered(list(pivot.columns), DATA_CLASS_ORDER))
    _, _, unit = _stacked(ax, pivot.fillna(0), DATA_CLASS_COLORS, [_vendor_label(*n) for n in names])
    ax.set_xlabel(f"bytes sent to remote networks ({unit})")
    ax.set_title(title)
    _legend_beside(fig, ax, "data class")
    return fig


def _state_key(numbered: list[str], width: int = 120) -> str:
    return "\n".join(textwrap.wrap("call states: " + ", ".join(numbered), width=width))


def over_time_figure(series: pd.DataFrame, bin_s: int, states: pd.DataFrame | None = None) -> Figure:
    """Stacked areas: egress rate over time per data class; the call states (``states``: the report's per-state table,
    :mod:`egressaudit.report.states`) as bands behind, numbered above the plot and named below it."""
    title = "Egress over time by data class"
    fig, ax = _figure(3.4)
    if series.empty or float(series.to_numpy().sum()) <= 0:
        return _empty(fig, ax, title)
    cols = [c for c in series.columns if float(series[c].sum()) > 0]
    rate = series[cols] / bin_s
    div, unit = byte_unit(float(rate.to_numpy().sum(axis=1).max()))
    t0 = series.index[0]
    x = [(t - t0).total_seconds() for t in series.index]
    if len(x) == 1:  # one bin: draw it as a step of the bin's width
        x = [x[0], x[0] + bin_s]
        ys = [[float(rate[c].iloc[0]) / div] * 2 for c in cols]
    else:
        x = [xi + bin_s / 2 for xi in x]
        ys = [[float(v) / div for v in rate[c]] for c in cols]
    ax.stackplot(x, ys, labels=[mpl_text(words(c)) for c in cols], colors=[DATA_CLASS_COLORS.get(c, FALLBACK) for c in cols], alpha=0.9, zorder=2)
    lo, hi = min(x), max(x)
    xlabel = f"seconds since {t0.strftime('%Y-%m-%d %H:%M:%S')} UTC (bins of {bin_s} s)"
    if states is not None and not states.empty:
        spans = []
        for rec in states.to_dict("records"):
            a = (pd.Timestamp(rec["from"]) - t0).total_seconds()
            spans.append((a, a + float(rec["seconds"]), str(rec["state"])))
        lo, hi = min(lo, *(a for a, _, _ in spans)), max(hi, *(b for _, b, _ in spans))
        numbered = []
        last_x: list[float] = []  # per label row, where its last number was put (so that numbers do not overlap)
        gap = (hi - lo) * 0.025
        for i, (a, b, state) in enumerate(spans, 1):
            ax.axvspan(a, b, color=STATE_BANDS[i % 2], alpha=STATE_ALPHA, linewidth=0, zorder=0)
            ax.axvline(a, color=MUTED, linewidth=0.6, zorder=3)
            row = next((r for r, xr in enumerate(last_x) if a - xr >= gap), len(last_x))
            if row == len(last_x):
                last_x.append(a)
            last_x[row] = a
            ax.annotate(
                str(i), (a, 1.0), xycoords=ax.get_xaxis_transform(), xytext=(1, 2 + 9 * row), textcoords="offset points",
                fontsize=7, color=TEXT, ha="left", va="bottom", annotation_clip=False,
            )  # fmt: skip
            numbered.append(f"{i} {mpl_text(state)}")
        xlabel += "\n" + _state_key(numbered)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(f"{unit}/s sent")
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom=0)
    ax.set_title(title, pad=14 if states is not None and not states.empty else 6)
    _legend_beside(fig, ax, "data class")
    return fig


def http_vendor_figure(by_vendor_category: pd.DataFrame, top: int = 15) -> Figure:
    """Horizontal bars: HTTP request bytes sent per vendor, stacked by category (the ``top`` vendors)."""
    title = "HTTP requests: bytes sent per vendor, by category"
    df = by_vendor_category[by_vendor_category["bytes_out"] > 0] if not by_vendor_category.empty else by_vendor_category
    totals = df.groupby("vendor", sort=False)["bytes_out"].sum().sort_values(ascending=False, kind="stable") if not df.empty else None
    vendors = [] if totals is None else list(totals.index[:top])
    fig, ax = _figure(1.4 + 0.3 * max(1, len(vendors)))
    if not vendors:
        return _empty(fig, ax, title, "no HTTP requests in this session")
    pivot = df.pivot_table(index="vendor", columns="category", values="bytes_out", aggfunc="sum", fill_value=0).reindex(index=vendors)
    pivot = pivot.reindex(columns=_ordered(list(pivot.columns), CATEGORY_ORDER)).fillna(0)
    _, _, unit = _stacked(ax, pivot, CATEGORY_COLORS, [str(v) for v in vendors])
    ax.set_xlabel(f"request bytes sent, head and body as on the wire ({unit})")
    ax.set_title(title)
    _legend_beside(fig, ax, "category")
    return fig


def write_png(fig: Figure, path: Path) -> Path:
    """Write the figure as a PNG at :data:`DPI`, atomically: a full disk leaves no empty or partial file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}))


_XML_HEAD = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_SIZE = re.compile(r'<svg\b([^>]*?)\s+width="[^"]*"\s+height="[^"]*"')


def inline_svg(fig: Figure, key: str, title: str) -> str:
    """The figure as an ``<svg>`` element to put in a page: text as text (sharp, searchable, in the page's fonts'
    fallbacks), sized by the page (``class="figure"``), its ids prefixed with ``key`` so that several figures can
    share a page, its stylesheet scoped to itself, titled for screen readers.  The same figure gives the same
    markup."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": key}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = _METADATA.sub("", _XML_HEAD.sub("", buf.getvalue(), count=1), count=1)

    def prefixed(tag: re.Match[str]) -> str:  # (in tags only: text, a vendor's name, is left as it is)
        t = re.sub(r'(\sid=")', rf"\1{key}-", tag.group(0))
        t = re.sub(r"url\(#", f"url(#{key}-", t)
        return re.sub(r'(href="#)', rf"\1{key}-", t)

    svg = re.sub(r"<[^>]+>", prefixed, svg)
    svg = svg.replace('<style type="text/css">*{', f'<style type="text/css">#{key} *{{', 1)
    svg = _SIZE.sub(rf'<svg\1 id="{key}" class="figure" role="img" aria-labelledby="{key}-title"', svg, count=1)
    return re.sub(r"(<svg\b[^>]*>)", lambda m: f'{m.group(1)}<title id="{key}-title">{escape(title)}</title>', svg, count=1).strip()
