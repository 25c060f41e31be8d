"""PNG plots: accuracy curves per cell, final weight histograms, BDNN-dsd's sensitivity (Fig. 4)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from devnets.aggregate.markdown import DATASET_TITLES
from devnets.aggregate.runs import SENSITIVITY, method_rank, natural
from devnets.convergence import mean_std

CHECKPOINT = "last.ckpt"
WEIGHT_KEY = re.compile(r"net\.\d+\.weight")


def label(method: str, variant: str) -> str:
    return method + (f" ({variant})" if variant else "")


def by_method(runs: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """The runs grouped by (method, variant), in the papers' method order, variants in natural order."""
    groups = list(runs.groupby(["method", "variant"], sort=False))
    return sorted(groups, key=lambda item: (method_rank(item[0][0]), item[0][0], natural(item[0][1])))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(complete: pd.DataFrame, path: Path, title: str) -> None:
    """Mean ± std test accuracy per epoch for each method of one cell (BSP Fig. 3)."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (method, variant), group in by_method(complete):
        length = max(len(curve) for curve in group["test_acc"])
        matrix = np.full((len(group), length), np.nan)
        for row, curve in enumerate(group["test_acc"]):
            matrix[row, : len(curve)] = curve
        epochs = np.arange(1, length + 1)
        mean = np.nanmean(matrix, axis=0)
        std = np.nanstd(matrix, axis=0, ddof=1) if len(group) > 1 else np.zeros(length)
        axes.plot(epochs, mean, label=f"{label(method, variant)} (n={len(group)})")
        axes.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    axes.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def final_weights(run_dir: Path, warnings: list[str]) -> np.ndarray | None:
    """The run's weight matrices from last.ckpt, flattened; None without a readable checkpoint."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    except Exception as error:  # any unpickling failure: the histogram is skipped, not the aggregation
        warnings.append(f"no weight histogram from {path}: {type(error).__name__}: {error}")
        return None
    tensors = [value.float().reshape(-1).numpy() for key, value in state.items() if WEIGHT_KEY.fullmatch(key)]
    return np.concatenate(tensors) if tensors else None


def plot_weights(complete: pd.DataFrame, path: Path, title: str, warnings: list[str]) -> bool:
    """Final weight histogram per method, from its lowest complete seed (BDNN-dsd Fig. 3, BSP Fig. 4)."""
    panels = []
    for (method, variant), group in by_method(complete):
        for run in group.sort_values("seed").itertuples():
            weights = final_weights(Path(run.path), warnings)
            if weights is not None:
                panels.append((f"{label(method, variant)}, seed {run.seed}", weights))
                break
    if not panels:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharex=True, squeeze=False)
    for axis, (name, weights) in zip(axes[0], panels, strict=True):
        axis.hist(weights, bins=80)
        axis.set_title(f"{name}\nzero: {100 * np.mean(weights == 0):.1f}%", fontsize="small")
        axis.set_xlabel("weight")
    axes[0][0].set_ylabel("connections")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


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
    """Accuracy and L of BDNN-dsd against each of T_num, R_d, R_i the sweep varies (BDNN-dsd Fig. 4)."""
    bdnn = complete[complete["method"] == "bdnn_dsd"]
    varied = [name for name in SENSITIVITY if bdnn[name].nunique() > 1]
    if not varied:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(2, len(varied), figsize=(4 * len(varied), 6.5), squeeze=False)
    others = cells[(cells["method"] != "bdnn_dsd") & (cells["variant"] == "")]
    for column, parameter in enumerate(varied):
        points = sensitivity_points(bdnn, parameter)
        for row, (measure, cell_measure, ylabel) in enumerate(
            (("acc", "final_acc", "final test accuracy (%)"), ("L", "L", "L against the baseline"))
        ):
            axis = axes[row][column]
            axis.errorbar(points["value"], points[measure], yerr=points[f"{measure}_std"].fillna(0),
                          marker="o", capsize=3, label="bdnn_dsd")
            for cell in others.itertuples():
                level = getattr(cell, f"{cell_measure}_mean")
                if math.isfinite(level):
                    color = f"C{cell.Index + 1}"
                    axis.axhline(level, linestyle="--", linewidth=1, label=cell.method, color=color)
            axis.set(xlabel=f"{SENSITIVITY[parameter]} ({parameter})", ylabel=ylabel)
            axis.legend(fontsize="x-small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_plots(runs: pd.DataFrame, cells: pd.DataFrame, out: Path, warnings: list[str]) -> dict[tuple, list]:
    """Every plot of every (dataset, n_train, hidden); returns the file names written per key."""
    figures: dict[tuple, list[str]] = {}
    complete = runs[runs["status"] == "complete"]
    for (dataset, n_train, hidden), group in complete.groupby(["dataset", "n_train", "hidden"], sort=True):
        stem = f"{dataset}-n{n_train}_h{hidden}"
        title = f"{DATASET_TITLES.get(dataset, dataset)}, {n_train} samples, {hidden} hidden"
        names = [f"curves_{stem}.png"]
        plot_curves(group, out / names[0], title)
        if plot_weights(group, out / f"weights_{stem}.png", title, warnings):
            names.append(f"weights_{stem}.png")
        in_cell = (cells["dataset"] == dataset) & (cells["n_train"] == n_train) & (cells["hidden"] == hidden)
        sensitivity = out / f"sensitivity_{stem}.png"
        if plot_sensitivity(group, cells[in_cell].reset_index(drop=True), sensitivity, title):
            names.append(f"sensitivity_{stem}.png")
        figures[(dataset, n_train, hidden)] = names
    return figures
