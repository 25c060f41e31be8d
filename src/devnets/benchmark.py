"""How close the pipeline runs to a plain PyTorch loop: ``python scripts/benchmark.py [--quick] [--json PATH]``.

In one process, on synthetic data of MNIST's shape (784 inputs) and of CIFAR-10's (3072; no dataset
needed), it times
1. the machine's matmul throughput at the model's shapes,
2. a plain PyTorch loop doing exactly the pipeline's work (same MLP, batch 600, SGD, a full test-set
   evaluation after every epoch), the same loop with the config's dropout rate for the shape on the
   hidden layer, and with BDNN-dsd's and BSP's tensor cores hooked on its optimiser at the papers'
   settings (README, *The methods on your own model*): what each method costs without the pipeline,
3. the same work as a bare LightningModule under a bare ``Trainer`` (no logger, checkpoint or
   callbacks, one optimiser step per Lightning batch): Lightning's own price per batch,
4. the devnets pipeline, through the Trainer that ``devnets.train`` builds, for every method (at the
   config's ``model.steps_per_batch``; BDNN-dsd's time step eager, ``method.compile=false``), and ``baseline``
   at ``model.steps_per_batch=1`` (one optimiser step per Lightning batch, as before that setting),
5. with ``--compile``, BDNN-dsd with ``compile=True`` (its time step as one compiled kernel per weight
   shape) in the plain loop and the pipeline, the compiling done in the warm-up epochs,
and prints ms per epoch (the median over the epochs after each warm-up, in rounds that interleave
the settings, and their mean, which counts the periodic checkpoints and histograms too), GFLOP/s, the
ratio to the plain loop and the process's peak memory so far; then the speed goals (``goals``), each
met or not. ``--rows PATH`` checks the goals on rows saved earlier with ``--json``, without timing.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback
from omegaconf import DictConfig, open_dict

from devnets.data import ShuffledBatches
from devnets.methods.bdnn_dsd import BDNNDsd
from devnets.methods.bsp import BSP
from devnets.methods.weights import select_weights
from devnets.train import CONF_DIR, build, make_trainer

METHODS = ("baseline", "dropout", "l2", "bdnn_dsd", "bsp")
PLAIN_LOOP_CORES = {"bdnn_dsd": BDNNDsd, "bsp": BSP}  # the methods timed in the plain loop too
# A method's row runs eager, as its core in the plain loop does (compile=auto would compile a long enough one).
EAGER = {"bdnn_dsd": ("method.compile=false",)}
N_TEST, CLASSES, BATCH = 10_000, 10, 600
# The datasets' input sizes and the config's data option of each: flattened MNIST and CIFAR-10 images.
INPUTS = {784: "mnist", 3072: "cifar10"}
# The speed goals (issue 17), as ratios of the median epochs. Each pipeline row against the plain loop, at every
# shape (a looser goal at 1200 samples and 10 hidden units, where an epoch is two optimiser steps):
PLAIN_LOOP_GOAL, SMALL_SHAPE_PLAIN_LOOP_GOAL, SMALL_SHAPE = 1.10, 1.25, (1200, 10)
# ... against the plain loop doing the same work (the framework's own share, with the method's arithmetic on
# both sides: the same goals), and the pruning and bounding methods against baseline from 100 hidden units on:
SAME_WORK = {"dropout": "plain loop, dropout", "bdnn_dsd": "plain loop, bdnn_dsd", "bsp": "plain loop, bsp",
             "bdnn_dsd, compile=true": "plain loop, bdnn_dsd, compile=true"}
OVER_BASELINE_GOAL, OVER_BASELINE_FROM_HIDDEN = 1.05, 100
OVER_BASELINE = ("bdnn_dsd", "bsp", "bdnn_dsd, compile=true")
# Every shape of the full run: (n_train, hidden, inputs); --quick: the first two.
SHAPES = [
    (1200, 10, 784), (1200, 100, 784), (1200, 500, 784), (60_000, 10, 784), (60_000, 100, 784), (60_000, 500, 784),
    (50_000, 100, 3072), (50_000, 500, 3072),
]


def synthetic(n: int, seed: int, inputs: int = 784) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, inputs, generator=generator), torch.randint(0, CLASSES, (n,), generator=generator)


def epoch_flops(n_train: int, hidden: int, inputs: int = 784) -> float:
    """Multiply-adds x2 of one epoch: forward+backward (3 matmuls) on the training set, forward on the test set."""
    per_sample = 2 * (inputs * hidden + hidden * CLASSES)
    return 3 * per_sample * n_train + per_sample * N_TEST


def matmul_gflops(hidden: int, repeats: int, inputs: int = 784) -> float:
    """Throughput of the model's largest matmul (a test-set forward through the first layer)."""
    x, w = torch.rand(N_TEST, inputs), torch.rand(hidden, inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x @ w.T
        times.append(time.perf_counter() - start)
    return 2 * N_TEST * inputs * hidden / statistics.median(times) / 1e9


def mlp(hidden: int, inputs: int = 784, dropout: float = 0.0) -> torch.nn.Sequential:
    """The papers' MLP, from the same seed for the plain and the Lightning loop."""
    torch.manual_seed(0)
    dropout_layer = [torch.nn.Dropout(dropout)] if dropout > 0 else []  # as the pipeline's model: none at rate 0
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, hidden), torch.nn.Sigmoid(), *dropout_layer, torch.nn.Linear(hidden, CLASSES)
    )


def plain_loop(
    n_train: int, hidden: int, epochs: int, inputs: int = 784, method: str | None = None, dropout: float = 0.0,
    **settings,
) -> list[float]:
    """Seconds per epoch of a hand-written loop doing the pipeline's work; with ``method`` (``bdnn_dsd`` or
    ``bsp``), that method's tensor core at its defaults (but ``settings``) on every weight, one step of it per
    optimiser step; with ``dropout`` > 0, dropout at that rate on the hidden layer."""
    model = mlp(hidden, inputs, dropout)
    train_x, train_y = synthetic(n_train, 1, inputs)
    test_x, test_y = synthetic(N_TEST, 2, inputs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if method is not None:
        core = PLAIN_LOOP_CORES[method](**settings)
        sizes = {"n_neurons": hidden, "n_samples": n_train} if method == "bsp" else {}
        core.attach(select_weights(model), **sizes)
        core.hook(optimizer)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(epoch))
        model.train()
        for first in range(0, n_train, BATCH):
            index = order[first : first + BATCH]
            batch_x, batch_y = train_x.index_select(0, index), train_y.index_select(0, index)
            loss = torch.nn.functional.cross_entropy(model(batch_x), batch_y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(test_x)
            (logits.argmax(1) == test_y).float().mean().item()
            torch.nn.functional.cross_entropy(logits, test_y).item()
        times.append(time.perf_counter() - start)
    return times


class EpochTimer(Callback):
    """Wall time from one epoch's end to the next: training, evaluation and every hook in between."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self.ends:
            self.ends.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.ends.append(time.perf_counter())

    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]


class BareModule(L.LightningModule):
    """The plain loop's work as the least a LightningModule can be: no logging, no bookkeeping."""

    def __init__(self, hidden: int, inputs: int = 784) -> None:
        super().__init__()
        self.net = mlp(hidden, inputs)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        """Accuracy and loss computed and fetched, as the plain loop does, then dropped."""
        x, y = batch
        logits = self.net(x)
        (logits.argmax(1) == y).float().mean().item()
        torch.nn.functional.cross_entropy(logits, y).item()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def lightning_loop(n_train: int, hidden: int, epochs: int, inputs: int = 784) -> list[float]:
    """Seconds per epoch of ``BareModule`` under a Trainer with everything optional turned off."""
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
    )
    trainer.fit(
        BareModule(hidden, inputs),
        train_dataloaders=ShuffledBatches(
            *synthetic(n_train, 1, inputs), BATCH, seed=0, epoch=lambda: trainer.current_epoch
        ),
        val_dataloaders=ShuffledBatches(*synthetic(N_TEST, 2, inputs), N_TEST),
    )
    return timer.seconds()


def config(method: str, n_train: int, hidden: int, epochs: int, inputs: int = 784, overrides=()) -> DictConfig:
    """The config ``scripts/train.py`` composes for ``method`` at this shape."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[f"data={INPUTS[inputs]}", f"method={method}", f"model.hidden={hidden}",
                       f"data.n_train={n_train}", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=true",
                       *overrides],
        )


def pipeline(
    method: str, n_train: int, hidden: int, epochs: int, inputs: int = 784, steps_per_batch: int | None = None,
    overrides: tuple[str, ...] = (),
) -> list[float]:
    """Seconds per epoch of devnets' own Trainer, data module and callbacks on synthetic data; at the
    config's ``model.steps_per_batch`` unless given, with the config ``overrides`` given."""
    steps = [] if steps_per_batch is None else [f"model.steps_per_batch={steps_per_batch}"]
    cfg = config(method, n_train, hidden, epochs, inputs, [*steps, *overrides])
    data, model, callbacks = build(cfg)
    data.train_x, data.train_y = synthetic(n_train, 1, inputs)
    data.test_x, data.test_y = synthetic(N_TEST, 2, inputs)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as run_dir:
        with open_dict(cfg):
            cfg.paths.output_dir = run_dir
        trainer = make_trainer(cfg, Path(run_dir), [*callbacks, timer])
        trainer.fit(model, datamodule=data)
    return timer.seconds()


def peak_memory_mb() -> float:
    """The process's peak resident memory so far. Trainers hold reference cycles, so ``measure``
    collects them after each run: the peak then reflects one run, not all the runs before it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(shapes, methods, epochs: int, warmup: int, rounds: int = 3, compile: bool = False) -> list[dict]:
    """One row per setting and shape ``(n_train, hidden, inputs)``: the median epoch over ``rounds``
    interleaved rounds of every setting (with ``compile``, BDNN-dsd's compiled time step too).

    Each round runs each setting for ``warmup`` + ``epochs`` epochs and keeps the last ``epochs``;
    interleaving spreads every setting over the whole measurement, so a slow spell on a shared machine
    lands on all settings alike instead of on whichever one it happened to hit.
    """
    rows = []
    for n_train, hidden, inputs in shapes:
        shape = (n_train, hidden, warmup + epochs, inputs)
        dropout = {"plain loop, dropout": partial(plain_loop, *shape, dropout=config("dropout", *shape).method.p)}
        compiled = compile and "bdnn_dsd" in methods
        loops = {
            "plain loop": partial(plain_loop, *shape),
            **(dropout if "dropout" in methods else {}),
            **{f"plain loop, {method}": partial(plain_loop, *shape, method=method)
               for method in methods if method in PLAIN_LOOP_CORES},
            **({"plain loop, bdnn_dsd, compile=true": partial(plain_loop, *shape, method="bdnn_dsd", compile=True)}
               if compiled else {}),
            "lightning loop": partial(lightning_loop, *shape),
            **{method: partial(pipeline, method, *shape, overrides=EAGER.get(method, ())) for method in methods},
            **({"bdnn_dsd, compile=true": partial(pipeline, "bdnn_dsd", *shape, overrides=("method.compile=true",))}
               if compiled else {}),
            "baseline, steps_per_batch=1": partial(pipeline, "baseline", *shape, steps_per_batch=1),
        }
        samples: dict[str, list[float]] = {setting: [] for setting in loops}
        for _ in range(rounds):
            for setting, loop in loops.items():
                samples[setting] += loop()[warmup:]
                gc.collect()
        flops = epoch_flops(n_train, hidden, inputs)
        plain = statistics.median(samples["plain loop"])
        peak = matmul_gflops(hidden, 20, inputs)
        rows.append(row("matmul peak", n_train, hidden, [flops / (peak * 1e9)], flops, plain, inputs))
        for setting, times in samples.items():
            rows.append(row(setting, n_train, hidden, times, flops, plain, inputs))
    return rows


def row(setting: str, n_train: int, hidden: int, times: list[float], flops: float, plain: float, inputs: int = 784):
    """A table row from the timed epochs' seconds: their median, and their mean, which also counts the epochs
    that end in periodic work (a checkpoint every 10 epochs, weight histograms every 25)."""
    seconds = statistics.median(times)
    return {
        "setting": setting,
        "inputs": inputs,
        "n_train": n_train,
        "hidden": hidden,
        "ms_per_epoch": round(seconds * 1e3, 2),
        "mean_ms_per_epoch": round(statistics.mean(times) * 1e3, 2),
        "gflops": round(flops / seconds / 1e9, 2),
        "ratio_to_plain": round(seconds / plain, 3),
        "peak_memory_mb": round(peak_memory_mb()),
    }


def goals(rows: list[dict]) -> list[dict]:
    """Each speed goal that ``rows`` (of ``measure``) can check: the setting and shape, the row it is set
    against, the ratio of their median epochs, the goal and whether the ratio is within it."""
    checks = []
    median = {(r["setting"], r["inputs"], r["n_train"], r["hidden"]): r["ms_per_epoch"] for r in rows}
    for (setting, inputs, n_train, hidden), ms in median.items():
        if setting not in (*METHODS, *SAME_WORK):
            continue
        plain_goal = SMALL_SHAPE_PLAIN_LOOP_GOAL if (n_train, hidden) == SMALL_SHAPE else PLAIN_LOOP_GOAL
        references = [("plain loop", plain_goal)]
        if setting in SAME_WORK:
            references.append((SAME_WORK[setting], plain_goal))
        if setting in OVER_BASELINE and hidden >= OVER_BASELINE_FROM_HIDDEN:
            references.append(("baseline", OVER_BASELINE_GOAL))
        for against, goal in references:
            if (against, inputs, n_train, hidden) in median:
                ratio = round(ms / median[against, inputs, n_train, hidden], 3)
                checks.append({"setting": setting, "inputs": inputs, "n_train": n_train, "hidden": hidden,
                               "against": against, "ratio": ratio, "goal": goal, "met": ratio <= goal})
    return checks


def markdown(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[key]) for key in header) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1200 samples at 10 and 100 hidden: about a minute")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the rows as JSON to PATH ('-': stdout)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--shapes", nargs="+", metavar="N,HIDDEN,INPUTS", type=shape,
                        help="only these shapes, e.g. 60000,100,784 50000,500,3072 (default: all of SHAPES)")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per round (default 4)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up epochs per round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true",
                        help="also time bdnn_dsd with method.compile=true, in the plain loop and the pipeline")
    parser.add_argument("--rows", metavar="PATH", type=Path,
                        help="check the goals on the rows of an earlier --json instead of timing anything")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rows:
        rows = json.loads(args.rows.read_text())
    elif args.quick:
        rows = measure(args.shapes or SHAPES[:2], args.methods, epochs=5, warmup=2, compile=args.compile)
    else:
        rows = measure(args.shapes or SHAPES, args.methods, args.epochs, args.warmup, args.rounds, args.compile)
    print(markdown(rows))
    checks = goals(rows)
    if checks:
        print(f"\nSpeed goals: {sum(check['met'] for check in checks)} of {len(checks)} met\n")
        print(markdown(checks))
    if args.json == Path("-"):
        print(json.dumps(rows, indent=1))
    elif args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def shape(text: str) -> tuple[int, int, int]:
    """``N,HIDDEN,INPUTS`` for --shapes; INPUTS is 784 (MNIST) or 3072 (CIFAR-10)."""
    try:
        n_train, hidden, inputs = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N,HIDDEN,INPUTS (e.g. 60000,100,784)") from None
    if inputs not in INPUTS or n_train < 1 or hidden < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: N and HIDDEN ≥ 1, INPUTS one of {sorted(INPUTS)}")
    return n_train, hidden, inputs


if __name__ == "__main__":
    main()
