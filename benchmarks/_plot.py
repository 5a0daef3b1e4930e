"""The benchmarks' figures: one look for every page, drawn with matplotlib (Agg, no
display) from the numbers a script has just measured.

A figure shows medians with their spread (min-max whiskers), axes labelled with units,
a title naming what was measured and where (``where(threads)``), and a legend. Two kinds
of panel cover the pages:

- ``hbars``: one row per configuration, one bar per series (e.g. per method), a bar's
  length the median and its whisker the min-max range; a cell may instead hold a short
  text (``"fails"``, ``"not run"``) printed where the bar would be;
- ``lines``: a sweep (x: blocks, steps, batch size), one line per series, each point
  the median with a min-max error bar.

``spread(xs)`` turns raw repeats into the (median, min, max) both panels take, and
``save(fig, path)`` writes the PNG. Kept apart from ``_harness`` (standard library only,
imported by workers under other interpreters): only the parent process draws.
"""
import os
import statistics

from _harness import ROOT, cpu_name  # benchmarks/ is on sys.path

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray",
          "tab:cyan"]


def spread(xs):
    """(median, min, max) of the repeats ``xs`` (a number counts as one repeat)."""
    xs = [xs] if isinstance(xs, (int, float)) else list(xs)
    return statistics.median(xs), min(xs), max(xs)


def where(threads="1 thread"):
    """The machine part of a figure's title: ``"AMD EPYC 7B13, 2 cores, torch on 1 thread"``."""
    return f"{cpu_name()}, {os.cpu_count()} cores, torch on {threads}"


def figure(nrows=1, ncols=1, size=(10, 4), **kw):
    """A matplotlib figure and its axes on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(nrows, ncols, figsize=size, **kw)


def span_row(fig, axes, row):
    """Replace the panels of ``axes[row]`` (a 2-D grid from ``figure``) by one axes as wide
    as the figure; returns it. Pages are narrow: a wide panel reads better stacked than
    side by side."""
    gs = axes[row, 0].get_gridspec()
    for ax in axes[row]:
        ax.remove()
    return fig.add_subplot(gs[row, :])


def hbars(ax, rows, series, xlabel, log=False, note=None):
    """Grouped horizontal bars: ``rows`` (labels, top to bottom) by ``series``.

    ``series``: list of ``(name, cells)`` or ``(name, cells, color)``, ``cells`` one per
    row: ``(median, min, max)``, a string printed in place of the bar, or None (nothing).
    ``note(i_series, i_row)``, when given, returns a short text written after the bar's
    whisker (a ratio, a step count). ``log``: logarithmic x axis (values must be > 0).
    """
    n = len(series)
    height = 0.8 / n
    hi_all = [c[2] for _, cells, *_ in series for c in cells if isinstance(c, tuple)]
    for j, (name, cells, *color) in enumerate(series):
        color = color[0] if color else COLORS[j % len(COLORS)]
        ys = [i + (j - (n - 1) / 2) * height for i in range(len(rows))]
        bars = [(y, c) for y, c in zip(ys, cells) if isinstance(c, tuple)]
        if bars:
            med = [c[0] for _, c in bars]
            err = [[c[0] - c[1] for _, c in bars], [c[2] - c[0] for _, c in bars]]
            ax.barh([y for y, _ in bars], med, height, xerr=err, color=color, label=name,
                    capsize=2, error_kw={"lw": 0.8})
        for i, (y, c) in enumerate(zip(ys, cells)):
            text = c if isinstance(c, str) else (note(j, i) if note and c is not None else None)
            if text:
                x = c[2] if isinstance(c, tuple) else (min(hi_all) if log and hi_all else 0)
                ax.text(x, y, f" {text}", va="center", fontsize=7, color="dimgray" if isinstance(c, str) else "k")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # top to bottom, texts of bar-less rows inside
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if hi_all and note:  # room for the notes after the longest whisker
        top = max(hi_all)
        ax.set_xlim(right=top * (4 if log else 1.3))
    if log:
        plain_log_ticks(ax.xaxis)


def lines(ax, xs, series, xlabel, ylabel, logx=False, logy=False):
    """A sweep: ``series`` is a list of ``(name, cells)`` (or ``(name, cells, color)``),
    ``cells`` one ``(median, min, max)`` (or None) per x in ``xs``; points joined by lines,
    whiskers the min-max range."""
    for j, (name, cells, *color) in enumerate(series):
        color = color[0] if color else COLORS[j % len(COLORS)]
        pts = [(x, c) for x, c in zip(xs, cells) if c is not None]
        med = [c[0] for _, c in pts]
        err = [[c[0] - c[1] for _, c in pts], [c[2] - c[0] for _, c in pts]]
        ax.errorbar([x for x, _ in pts], med, yerr=err, marker="o", ms=4, capsize=3, color=color, label=name)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([str(x) for x in xs])
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(list(xs), [str(x) for x in xs])
        ax.minorticks_off()
    if logy:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plain_log_ticks(axis):
    """Tick labels of a logarithmic ``axis`` as plain numbers (0.5, 2, 10), not 2x10^0,
    labelled densely enough for its current range (call it once the limits are set)."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    lo, hi = sorted(axis.get_view_interval())
    decades = math.log10(hi / lo) if lo > 0 else 99
    subs = (2, 3, 4, 5, 6, 8) if decades < 1.5 else (2, 3, 5) if decades < 3.5 else (2, 5)
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_locator(LogLocator(subs=subs))
    axis.set_minor_formatter(fmt if decades < 6 else NullFormatter())


def legend_below(ax, ncol=3, **kw):
    """The legend of ``ax`` under its x label, clear of the bars (``save`` keeps it in the
    picture)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=8, frameon=False, **kw)


def save(fig, path, title=None, dpi=110):
    """Give ``fig`` its title, lay it out and write it to ``path`` (folders created)."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def png_path(name):
    """Where a page's figure lives: ``docs/img/<name>.png``."""
    return os.path.join(ROOT, "docs", "img", f"{name}.png")


def embed(name, alt, caption):
    """The markdown lines that put ``docs/img/<name>.png`` on its page (pages live in
    docs/), followed by a one-line caption saying how to read it."""
    return [f"![{alt}](img/{name}.png)", "", f"*{caption}*", ""]
