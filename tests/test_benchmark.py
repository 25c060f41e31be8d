"""The benchmark script runs end to end (its timings are printed, never asserted)."""

import json

from devnets import benchmark
from test_bound_mask import NEEDS_COMPILER


def test_benchmark_rows_cover_the_plain_loop_and_every_method(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark, "N_TEST", 500)
    rows = benchmark.measure([(600, 8, 784), (600, 8, 3072)], benchmark.METHODS, epochs=2, warmup=1, rounds=1)
    settings = ["matmul peak", "plain loop", "plain loop, dropout", "plain loop, bdnn_dsd", "plain loop, bsp",
                "lightning loop", *benchmark.METHODS, "baseline, steps_per_batch=1"]
    assert [row["setting"] for row in rows] == settings * 2
    assert [row["inputs"] for row in rows] == [784] * len(settings) + [3072] * len(settings)
    assert all(row["ms_per_epoch"] > 0 and row["peak_memory_mb"] > 0 for row in rows)
    assert rows[1]["ratio_to_plain"] == 1.0


@NEEDS_COMPILER
def test_benchmark_times_bdnn_dsd_compiled_beside_it(monkeypatch):
    monkeypatch.setattr(benchmark, "N_TEST", 500)
    rows = benchmark.measure([(600, 8, 784)], ["bdnn_dsd"], epochs=1, warmup=1, rounds=1, compile=True)
    assert [row["setting"] for row in rows] == [
        "matmul peak", "plain loop", "plain loop, bdnn_dsd", "plain loop, bdnn_dsd, compile=true", "lightning loop",
        "bdnn_dsd", "bdnn_dsd, compile=true", "baseline, steps_per_batch=1"]


def test_benchmark_writes_json_beside_the_table(tmp_path, capsys, monkeypatch):
    one_row = [benchmark.row("plain loop", 1, 2, [0.5], 1e9, 0.5)]
    monkeypatch.setattr(benchmark, "measure", lambda *args, **kwargs: one_row)
    benchmark.main(["--quick", "--json", str(tmp_path / "rows.json")])
    assert capsys.readouterr().out.splitlines()[0].startswith("| setting | inputs | n_train | hidden | ms_per_epoch")
    assert json.loads((tmp_path / "rows.json").read_text())[0]["gflops"] == 2.0


def test_a_row_gives_the_median_epoch_and_the_mean_that_counts_the_checkpoint_epochs():
    """Nine 10 ms epochs and one of 30 (a checkpoint): the median says 10 ms, the mean 12."""
    cells = benchmark.row("baseline", 1200, 10, [0.010] * 9 + [0.030], 1e9, plain=0.008)
    assert (cells["ms_per_epoch"], cells["mean_ms_per_epoch"], cells["ratio_to_plain"]) == (10.0, 12.0, 1.25)
