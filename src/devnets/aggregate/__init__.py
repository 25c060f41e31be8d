"""Aggregate sweeps into the papers' tables: ``python scripts/aggregate.py SWEEP_DIR... [--out DIR]``;
``devnets-status SWEEP_DIR...`` prints a sweep's progress instead (devnets.aggregate.status).

Every ``metrics.json`` under the sweep dirs is one run. Runs are grouped into cells by dataset,
n_train, hidden and method (and, when runs of one cell differ in other settings, such as a
sensitivity sweep's ``method.count_threshold``, or the epochs a run was set to train, by those settings:
the cell's variant). Only ``complete`` runs of the expected seeds (``--seeds``, or else every seed some run
has) count; each cell names its missing seeds, its failed, diverged, running and unreadable runs, and the
runs of other seeds. Runs set to different epochs, or a cell holding runs of several experiments, are warned
of.

Written to ``--out`` (default ``<first sweep dir>/aggregate/``):

- ``tables.md``: per dataset, our cells beside the papers' values, laid out as each paper's table
  (rows: hidden sizes; columns: methods; a cell reads ``ours (paper)``), then every cell with its
  best accuracy, seeds and uncounted runs. The same text goes to stdout.
- ``cells.csv`` (one row per cell, with the papers' values) and ``runs.csv`` (one row per run).
- ``claims.csv`` and the *Claims* section of tables.md: each of the papers' claims (devnets.claims) per
  cell, our value beside the paper's, its seeds and epochs, and where it holds: ``not judged`` in a cell
  off the papers' protocol (fewer than 5 seeds, or other than 500 epochs) unless ``--judge-any-protocol``.
- PNG plots (devnets.aggregate.plots), from the records alone: mean ± std test-accuracy curves per cell,
  every seed's final weight histograms (``weight_histograms``), BDNN-dsd's zero weights and bounds per
  epoch (its Fig. 5), and its sensitivity to T_num, R_d and R_i when a sweep varies them.

Accuracies are final test accuracies in %, mean ± sample std (ddof=1) over seeds. L is the
convergence rate of devnets.convergence, against the baseline and against dropout (``--against``
adds more methods); the papers' values come from paper_tables.csv in this package.

The package, by step: runs.py reads the runs, pairing.py pairs them and computes L, cells.py summarises
the cells, markdown.py writes tables.md, plots.py the plots, status.py the progress view, cli.py the
command line.
"""

from devnets.aggregate.cli import aggregate, main, status_main
from devnets.aggregate.runs import load_paper_tables

__all__ = ["aggregate", "load_paper_tables", "main", "status_main"]
