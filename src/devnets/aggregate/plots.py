"""PNG plots, one set per (dataset, training-set size, hidden units), drawn from the runs' metrics.json alone:

- ``curves_<cell>.png``: test accuracy per epoch, mean ± std over the seeds, beside a zoom on the last
  epochs, where the curves lie close (BSP Fig. 3);
- ``weights_<cell>.png``: the final weight histograms of every seed on log counts (BDNN-dsd Fig. 3, BSP
  Fig. 4), from each run's ``weight_histograms`` (devnets.callbacks.run_record.weight_histograms);
- ``zeros_<cell>.png``: BDNN-dsd's zero weights and zero bounds per epoch and how many of them stay zero
  into the next epoch (BDNN-dsd Fig. 5), from ``method_stats.per_epoch`` (devnets.callbacks.bound_mask);
- ``sensitivity_<cell>.png``: BDNN-dsd's accuracy and L against each of T_num, R_d, R_i a sweep varies
  (BDNN-dsd Fig. 4).

Each method has one colour and line style in every figure (``METHOD_STYLES``, colour-blind safe); the
variants of a method share its colour, in shades, each with its own marker. A figure whose data no run
records (records written before devnets recorded it) is skipped with a one-line warning.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from devnets.aggregate.markdown import DATASET_TITLES
from devnets.aggregate.runs import SENSITIVITY, method_rank, natural
from devnets.claims import epochs_text
from devnets.convergence import mean_std

DPI = 130
# BDNN-dsd Fig. 5: method_stats.per_epoch's counts, written by devnets.callbacks.bound_mask.BoundMask.
ZERO_SETS = (("weights", "zero_weights", "zero_weight_overlap"), ("bounds", "zero_bounds", "zero_bound_overlap"))
# Fig. 5's second line, the synapses zero in two epochs running: one colour for every method.
OVERLAP_COLOR = "#222222"
# The accuracy curves' zoom fits its axis to the methods within this many points of the best there.
ZOOM_POINTS = 10


@dataclass(frozen=True)
class Style:
    color: str
    linestyle: str | tuple
    linewidth: float = 1.6


# Okabe & Ito's colour-blind-safe palette; a method's colour and dashes are the same in every figure.
METHOD_STYLES = {
    "baseline": Style("#555555", "--"),
    "dropout": Style("#E69F00", "-."),
    "l2": Style("#009E73", ":", 2.0),
    "bdnn_dsd": Style("#D55E00", "-"),
    "bsp": Style("#0072B2", (0, (6, 1.5, 1.5, 1.5, 1.5, 1.5))),
    "bdnn_dsd+bsp": Style("#CC79A7", (0, (9, 2.5))),
}
# Methods devnets does not know (a user's own) draw from these, by a hash of their name: stable across runs.
OTHER_COLORS = ("#56B4E9", "#8C510A", "#762A83", "#1B7837", "#B2182B", "#F0E442")
OTHER_LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def method_style(method: str) -> Style:
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    key = zlib.crc32(method.encode())
    return Style(OTHER_COLORS[key % len(OTHER_COLORS)], OTHER_LINESTYLES[key // len(OTHER_COLORS) % 4])


def shade(color: str, index: int, count: int) -> tuple[float, float, float]:
    """``color`` for the ``index``-th of ``count`` variants: darker first, lighter last; itself for one."""
    rgb = np.array([int(color[k : k + 2], 16) / 255 for k in (1, 3, 5)])
    if count <= 1:
        return tuple(rgb)
    position = index / (count - 1)  # 0 .. 1
    if position < 0.5:  # towards black, at most 45%
        mixed = rgb * (1 - 0.9 * (0.5 - position))
    else:  # towards white, at most 50%
        mixed = rgb + (1 - rgb) * (position - 0.5)
    return tuple(mixed)


@dataclass(frozen=True)
class Series:
    """One (method, variant) of a figure: its runs, legend label and look."""

    method: str
    variant: str
    runs: pd.DataFrame
    color: tuple[float, float, float]
    style: Style
    marker: str | None

    @property
    def label(self) -> str:
        return label(self.method, self.variant)

    def line(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``Axes.plot``."""
        return {"color": self.color, "linestyle": self.style.linestyle, "linewidth": self.style.linewidth,
                "marker": self.marker, **overrides}


def label(method: str, variant: str) -> str:
    return method + (f" ({variant})" if variant else "")


def by_method(runs: pd.DataFrame) -> list[Series]:
    """The runs grouped by (method, variant), in the papers' method order, variants in natural order,
    each with its method's style (variants: its colour in shades, and a marker each)."""
    groups = sorted(runs.groupby(["method", "variant"], sort=False),
                    key=lambda item: (method_rank(item[0][0]), item[0][0], natural(item[0][1])))
    count = {method: sum(1 for (other, _), _ in groups if other == method) for (method, _), _ in groups}
    series, index = [], {}
    for (method, variant), group in groups:
        k = index[method] = index.get(method, -1) + 1
        style = method_style(method)
        series.append(Series(method, variant, group, shade(style.color, k, count[method]), style,
                             MARKERS[k % len(MARKERS)] if count[method] > 1 else None))
    return series


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
                         "grid.alpha": 0.25, "grid.linewidth": 0.6, "legend.frameon": False})
    return plt


def save(figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)


def epochs_title(runs: pd.DataFrame) -> str:
    text = epochs_text(runs["max_epochs"])
    return f"{text} epochs" if text else "epochs unknown"


def seeds_label(runs: pd.DataFrame) -> str:
    return f"n={len(runs)}" if len(runs) != 1 else f"seed {runs['seed'].iloc[0]}"


# BSP Fig. 3: accuracy curves.


def curve_matrix(curves: pd.Series) -> np.ndarray:
    """The runs' curves as rows, NaN past a curve's end."""
    length = max((len(curve) for curve in curves), default=0)
    matrix = np.full((len(curves), length), np.nan)
    for row, curve in enumerate(curves):
        matrix[row, : len(curve)] = curve
    return matrix


def plot_curves(complete: pd.DataFrame, path: Path, title: str) -> None:
    """Mean ± std test accuracy per epoch for each method of one cell (BSP Fig. 3), and a zoom on the last
    80% of the epochs, its accuracy axis fitted to the curves there that end within ZOOM_POINTS of the best."""
    plt = pyplot()
    series = [(item, curve_matrix(item.runs["test_acc"])) for item in by_method(complete)]
    length = max(matrix.shape[1] for _, matrix in series)
    zoom_from = int(0.2 * length) if length >= 10 else None
    figure, axes = plt.subplots(1, 2 if zoom_from is not None else 1, figsize=(11, 4.2), squeeze=False)
    axes = axes[0]
    windows = []  # per series: (label, lowest and highest of mean ± std, mean) over the zoom's epochs
    for item, matrix in series:
        epochs = np.arange(1, matrix.shape[1] + 1)
        with np.errstate(all="ignore"):
            mean = np.nanmean(matrix, axis=0)
            std = np.nanstd(matrix, axis=0, ddof=1) if len(matrix) > 1 else np.zeros(matrix.shape[1])
        std = np.nan_to_num(std)
        markevery = max(1, matrix.shape[1] // 8)
        for axis in axes:
            axis.fill_between(epochs, mean - std, mean + std, color=item.color, alpha=0.15, linewidth=0)
            axis.plot(epochs, mean, label=f"{item.label} ({seeds_label(item.runs)})",
                      **item.line(markevery=markevery, markersize=4))
        window = slice(zoom_from, None)
        if zoom_from is not None and np.isfinite(mean[window]).any():
            windows.append((item.label, np.nanmin(mean[window] - std[window]), np.nanmax(mean[window] + std[window]),
                            np.nanmean(mean[window])))
    axes[0].set(xlabel="epoch", ylabel="test accuracy (%)", xlim=(1, length), title="all epochs")
    if zoom_from is not None:
        best = max((level for *_, level in windows), default=math.nan)
        shown = [window for window in windows if window[3] >= best - ZOOM_POINTS]
        below = [name for name, *_, level in windows if level < best - ZOOM_POINTS]
        zoom_title = f"epochs {zoom_from + 1}–{length}, zoomed" + (f" ({', '.join(below)} below)" if below else "")
        axes[1].set(xlabel="epoch", xlim=(zoom_from + 1, length), title=zoom_title)
        if shown:
            low, high = min(window[1] for window in shown), max(window[2] for window in shown)
            margin = max(0.05 * (high - low), 0.1)
            axes[1].set_ylim(low - margin, high + margin)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small", title="mean ± std over seeds",
                    title_fontsize="small")
    figure.suptitle(f"{title}, {epochs_title(complete)}: test accuracy")
    figure.tight_layout()
    save(figure, path)


# BDNN-dsd Fig. 3, BSP Fig. 4: final weight histograms.


@dataclass
class Histogram:
    """Counts of the nonzero finite weights in equal bins over [-limit, limit]; ``zeros``: weights at 0."""

    limit: float
    counts: np.ndarray
    zeros: int

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(-self.limit, self.limit, len(self.counts) + 1)

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.zeros

    def rebinned(self, limit: float) -> Histogram:
        """The same counts in as many bins over the wider [-limit, limit] (``limit`` = 2^k ``self.limit``):
        as 0 is an edge of both, each bin falls inside one of the wider bins."""
        bins = len(self.counts)
        factor = limit / self.limit
        index = np.floor(bins / 2 - bins / (2 * factor) + np.arange(bins) / factor).astype(int)
        counts = np.zeros(bins)
        np.add.at(counts, index, self.counts)
        return Histogram(limit, counts, self.zeros)


def add(histograms: list[Histogram]) -> Histogram:
    """The sum of ``histograms`` (of the same bin count), in the bins of the widest."""
    limit = max(histogram.limit for histogram in histograms)
    wide = [histogram.rebinned(limit) for histogram in histograms]
    return Histogram(limit, sum(h.counts for h in wide), sum(h.zeros for h in wide))


def power_of_two(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0 and math.log2(value).is_integer()


def run_histogram(record: Any) -> Histogram | None:
    """A run's ``weight_histograms`` (every weight matrix) as one histogram; None if absent or not readable."""
    try:
        matrices = [Histogram(float(entry["limit"]), np.asarray(entry["counts"], dtype=float), int(entry["zeros"]))
                    for entry in record.values()]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    bins = {len(matrix.counts) for matrix in matrices}
    if not matrices or len(bins) != 1 or bins.pop() % 2 or not all(power_of_two(m.limit) for m in matrices):
        return None
    return add(matrices)


def runs_text(runs: pd.DataFrame) -> str:
    """``bsp seeds 0 1, l2 seed 3``."""
    parts = []
    for name, group in runs.groupby(runs["method"] + runs["variant"].map(lambda v: f" ({v})" if v else "")):
        seeds = sorted(group["seed"])
        parts.append(f"{name} seed{'s' if len(seeds) > 1 else ''} {' '.join(map(str, seeds))}")
    return ", ".join(parts)


def readable(complete: pd.DataFrame, column: str, read, figure: str, what: str,
             warnings: list[str]) -> pd.DataFrame:
    """The runs whose ``column`` ``read`` can read, what it read in ``read_value``; one warning line names the
    others (``figure``: the file name; ``what``: the data they lack)."""
    values = complete[column].map(read)
    has = values.notna()
    missing = complete[~has]
    if not has.any():
        warnings.append(f"no {figure}: none of its {len(complete)} runs records {what} (records written before "
                        f"devnets recorded it)")
    elif len(missing):
        warnings.append(f"{figure} leaves out {len(missing)} of {len(complete)} runs that record no {what}: "
                        f"{runs_text(missing)}")
    return complete[has].assign(read_value=values[has])


def zero_text(shares: list[float]) -> str:
    """The seeds' shares of weights at 0: ``84.0% (83.9–84.1)``, ``none``."""
    if not any(shares):
        return "none"
    return f"{np.mean(shares):.1f}%" + (f" ({min(shares):.1f}–{max(shares):.1f})" if len(shares) > 1 else "")


def reach(histograms: list[Histogram], limit: float) -> tuple[float, float]:
    """A symmetric weight axis just wide enough for every nonzero bin of ``histograms``."""
    outermost = 0.0
    for histogram in histograms:
        wide = histogram.rebinned(limit)
        filled = np.flatnonzero(wide.counts)
        if len(filled):
            edges = wide.edges
            outermost = max(outermost, abs(edges[filled[0]]), abs(edges[filled[-1] + 1]))
    outermost = 1.05 * outermost or limit
    return -outermost, outermost


def plot_weights(complete: pd.DataFrame, path: Path, title: str, warnings: list[str]) -> bool:
    """Each method's final weight histogram, every seed a line, log counts (BDNN-dsd Fig. 3, BSP Fig. 4); last,
    every method's mean over its seeds on one axis. From the runs' ``weight_histograms`` alone."""
    runs = readable(complete, "weight_histograms", run_histogram, path.name, "weight_histograms", warnings)
    if runs.empty:
        return False
    series = by_method(runs)
    panels = len(series) + 1
    columns = min(panels, 4)
    rows = math.ceil(panels / columns)
    plt = pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.1 * rows), squeeze=False)
    axes = axes.flatten()
    overall = add([h for item in series for h in item.runs["read_value"]]).limit
    for axis, item in zip(axes, series, strict=False):
        histograms = list(item.runs["read_value"])
        limit = max(h.limit for h in histograms)
        shares = []
        for histogram in histograms:
            wide = histogram.rebinned(limit)
            axis.stairs(wide.counts, wide.edges, color=item.color, linewidth=1.0, alpha=0.75)
            shares.append(100 * histogram.zeros / max(histogram.total, 1))
        axis.set_title(f"{item.label} ({seeds_label(item.runs)})\nweights at 0: {zero_text(shares)}",
                       fontsize="small")
        width = 2 * limit / len(histograms[0].counts)
        axis.set(yscale="log", xlim=reach(histograms, limit), xlabel=f"final weight (bins of {width:.3g})")
    everything = axes[len(series)]
    for item in series:
        mean = add(list(item.runs["read_value"])).rebinned(overall)
        everything.stairs(mean.counts / len(item.runs), mean.edges, label=item.label, **{
            key: value for key, value in item.line().items() if key != "marker"})
    width = 2 * overall / len(series[0].runs["read_value"].iloc[0].counts)
    everything.set(yscale="log", xlim=reach([h for item in series for h in item.runs["read_value"]], overall),
                   xlabel=f"final weight (bins of {width:.3g})",
                   title="every method, mean over seeds")
    everything.title.set_fontsize("small")
    everything.legend(fontsize="x-small")
    for axis in axes[panels:]:
        axis.set_visible(False)
    for axis in axes[:panels]:
        axis.set_ylim(bottom=0.7)
    for row in range(rows):
        axes[row * columns].set_ylabel("nonzero weights per bin")
    figure.suptitle(f"{title}, {epochs_title(runs)}: final weights (each line a seed)")
    figure.tight_layout()
    save(figure, path)
    return True


# BDNN-dsd Fig. 5: zero weights and bounds per epoch, and those zero in two epochs running.


def zero_curves(per_epoch: Any) -> dict[str, np.ndarray] | None:
    """The four per-epoch counts Fig. 5 needs, or None where the record lacks one."""
    names = [name for _, *pair in ZERO_SETS for name in pair]
    if not isinstance(per_epoch, dict) or not all(isinstance(per_epoch.get(name), list) for name in names):
        return None
    curves = {name: np.array([np.nan if value is None else value for value in per_epoch[name]], dtype=float)
              for name in names}
    return curves if len({len(curve) for curve in curves.values()}) == 1 else None


def plot_zero_sets(complete: pd.DataFrame, path: Path, title: str, warnings: list[str]) -> bool:
    """BDNN-dsd Fig. 5 for each variant of each method with bounds: at epoch k, the synapses whose weight
    (a) or bound (b) was 0 after epoch k−1 (the paper's blue line), and those of them still 0 after epoch k
    (its red line). Each seed a thin line, their mean a thick one; symmetric log counts (0 at the foot)."""
    bounded = complete[complete["per_epoch"].map(bool) | complete["method"].str.startswith("bdnn_dsd")]
    if bounded.empty:
        return False
    runs = readable(bounded, "per_epoch", zero_curves, path.name, "zero weight and bound counts per epoch",
                    warnings)
    if runs.empty:
        return False
    series = by_method(runs)
    plt = pyplot()
    figure, axes = plt.subplots(len(series), 2, figsize=(12, 3.1 * len(series)), squeeze=False, sharex=True)
    for row, item in enumerate(series):
        synapses = item.runs["bounded_weights"].dropna()
        seeds = len(item.runs)
        for column, (what, zero_name, overlap_name) in enumerate(ZERO_SETS):
            axis = axes[row][column]
            befores, overlaps = [], []
            for curves in item.runs["read_value"]:
                befores.append(curves[zero_name][:-1])
                overlaps.append(curves[overlap_name][1:])
                if seeds > 1:
                    epochs = np.arange(2, len(curves[zero_name]) + 1)
                    axis.plot(epochs, befores[-1], color=item.color, linewidth=0.5, alpha=0.3)
                    axis.plot(epochs, overlaps[-1], color=OVERLAP_COLOR, linewidth=0.5, alpha=0.3)
            with np.errstate(all="ignore"):
                before, overlap = (np.nanmean(curve_matrix(pd.Series(lines)), axis=0) for lines in (befores, overlaps))
            epochs = np.arange(2, len(before) + 2)
            mean = f", mean of {seeds} seeds" if seeds > 1 else ""
            axis.plot(epochs, before, color=item.color, linewidth=1.6, label=f"0 after epoch k−1{mean}")
            axis.plot(epochs, overlap, color=OVERLAP_COLOR, linewidth=1.3, linestyle="--",
                      label=f"0 after both k−1 and k{mean}")
            axis.set_yscale("symlog", linthresh=1, linscale=0.4)
            known = synapses.nunique() == 1
            axis.set_ylim(0, synapses.iloc[0] if known else None)
            axis.set_ylabel(f"synapses (of {synapses.iloc[0]:,.0f})" if known else "synapses")
            axis.set_title(f"({'ab'[column]}) zero {what}: {item.label} ({seeds_label(item.runs)})", fontsize="small")
        axes[row][1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small",
                            title="thin lines: each seed" if seeds > 1 else None, title_fontsize="small")
    for axis in axes[-1]:
        axis.set_xlabel("epoch k")
    figure.suptitle(f"{title}, {epochs_title(runs)}: zero weights and bounds per epoch (BDNN-dsd Fig. 5)")
    figure.tight_layout()
    save(figure, path)
    return True


# BDNN-dsd Fig. 4: sensitivity.


def sensitivity_points(bdnn: pd.DataFrame, parameter: str) -> pd.DataFrame:
    """Mean ± std of final accuracy and L per value of ``parameter``, the other parameters at their mode."""
    others = [name for name in SENSITIVITY if name != parameter and bdnn[name].notna().any()]
    for name in others:
        bdnn = bdnn[bdnn[name] == bdnn[name].mode().iloc[0]]
    rows = []
    for value, group in bdnn.groupby(parameter):
        acc, acc_std, _ = mean_std(group["final_test_acc"])
        rate, rate_std, _ = mean_std(group["L"])
        rows.append({"value": value, "acc": acc, "acc_std": acc_std, "L": rate, "L_std": rate_std})
    return pd.DataFrame(rows)


def plot_sensitivity(complete: pd.DataFrame, cells: pd.DataFrame, path: Path, title: str) -> bool:
    """Accuracy and L of BDNN-dsd against each of T_num, R_d, R_i the sweep varies (BDNN-dsd Fig. 4), beside
    the other methods' cell means (horizontal lines)."""
    bdnn = complete[complete["method"] == "bdnn_dsd"]
    varied = [name for name in SENSITIVITY if bdnn[name].nunique() > 1]
    if not varied:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(2, len(varied), figsize=(4 * len(varied), 6.5), squeeze=False)
    others = cells[(cells["method"] != "bdnn_dsd") & (cells["variant"] == "")]
    others = others.iloc[sorted(range(len(others)), key=lambda k: method_rank(others["method"].iloc[k]))]
    mine = method_style("bdnn_dsd")
    for column, parameter in enumerate(varied):
        points = sensitivity_points(bdnn, parameter)
        for row, (measure, cell_measure, ylabel) in enumerate(
            (("acc", "final_acc", "final test accuracy (%)"), ("L", "L", "L against the baseline"))
        ):
            axis = axes[row][column]
            axis.errorbar(points["value"], points[measure], yerr=points[f"{measure}_std"].fillna(0),
                          marker="o", capsize=3, label="bdnn_dsd (mean ± std)", color=mine.color,
                          linestyle=mine.linestyle, linewidth=mine.linewidth)
            for cell in others.itertuples():
                level = getattr(cell, f"{cell_measure}_mean")
                if cell_measure == "L" and cell.method == "baseline":
                    level = 1.0  # L's reference: the baseline reaches every level at its own epoch
                if math.isfinite(level):
                    style = method_style(cell.method)
                    axis.axhline(level, label=cell.method, color=style.color, linestyle=style.linestyle,
                                 linewidth=1.2)
            axis.set(xlabel=f"{SENSITIVITY[parameter]} ({parameter})", ylabel=ylabel)
            axis.legend(fontsize="x-small")
    figure.suptitle(f"{title}, {epochs_title(bdnn)}: BDNN-dsd's sensitivity (BDNN-dsd Fig. 4)")
    figure.tight_layout()
    save(figure, path)
    return True


def write_plots(runs: pd.DataFrame, cells: pd.DataFrame, out: Path, warnings: list[str]) -> dict[tuple, list]:
    """Every plot of every (dataset, n_train, hidden); returns the file names written per key."""
    figures: dict[tuple, list[str]] = {}
    complete = runs[runs["status"] == "complete"]
    for (dataset, n_train, hidden), group in complete.groupby(["dataset", "n_train", "hidden"], sort=True):
        stem = f"{dataset}-n{n_train}_h{hidden}"
        title = f"{DATASET_TITLES.get(dataset, dataset)}, {n_train:,} samples, {hidden} hidden"
        names = []
        with_curves = group[group["test_acc"].map(len) > 0]
        if len(with_curves):
            names.append(f"curves_{stem}.png")
            plot_curves(with_curves, out / names[0], title)
        if len(with_curves) < len(group):
            warnings.append(f"{title}: {len(group) - len(with_curves)} runs read from a runs table have no "
                            "per-epoch curves: the curves plot leaves them out")
        if plot_weights(group, out / f"weights_{stem}.png", title, warnings):
            names.append(f"weights_{stem}.png")
        if plot_zero_sets(group, out / f"zeros_{stem}.png", title, warnings):
            names.append(f"zeros_{stem}.png")
        in_cell = (cells["dataset"] == dataset) & (cells["n_train"] == n_train) & (cells["hidden"] == hidden)
        sensitivity = out / f"sensitivity_{stem}.png"
        if plot_sensitivity(group, cells[in_cell].reset_index(drop=True), sensitivity, title):
            names.append(f"sensitivity_{stem}.png")
        figures[(dataset, n_train, hidden)] = names
    return figures
