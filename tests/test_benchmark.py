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


def test_goals_check_each_method_against_the_plain_loop_the_same_work_and_baseline():
    """Hand-made rows at two shapes: 1200/10 has the looser goal against the plain loop (1.25) and no
    baseline goal (under 100 hidden units); 60,000/100 has 1.10 and 1.05."""
    def at(n_train, hidden, ms):
        return [benchmark.row(setting, n_train, hidden, [seconds], 1e9, plain=1.0) for setting, seconds in ms.items()]
    rows = [*at(1200, 10, {"plain loop": 0.010, "baseline": 0.0125, "bsp": 0.0130, "plain loop, bsp": 0.0110}),
            *at(60_000, 100, {"plain loop": 1.00, "baseline": 1.00, "bdnn_dsd": 1.06, "plain loop, bdnn_dsd": 0.96,
                              "lightning loop": 2.0})]
    checks = [(c["setting"], c["n_train"], c["against"], c["ratio"], c["goal"], c["met"])
              for c in benchmark.goals(rows)]
    assert checks == [
        ("baseline", 1200, "plain loop", 1.25, 1.25, True),
        ("bsp", 1200, "plain loop", 1.3, 1.25, False),
        ("bsp", 1200, "plain loop, bsp", 1.182, 1.25, True),
        ("baseline", 60_000, "plain loop", 1.0, 1.10, True),
        ("bdnn_dsd", 60_000, "plain loop", 1.06, 1.10, True),
        ("bdnn_dsd", 60_000, "plain loop, bdnn_dsd", 1.104, 1.10, False),
        ("bdnn_dsd", 60_000, "baseline", 1.06, 1.05, False),
    ]


def test_the_goals_of_saved_rows_are_checked_without_timing(tmp_path, capsys, monkeypatch):
    rows = [benchmark.row("plain loop", 1200, 100, [0.030], 1e9, 0.030),
            benchmark.row("l2", 1200, 100, [0.036], 1e9, 0.030)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    monkeypatch.setattr(benchmark, "measure", None)  # timing anything would fail
    benchmark.main(["--rows", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    assert "Speed goals: 0 of 1 met" in out
    assert "| l2 | 784 | 1200 | 100 | plain loop | 1.2 | 1.1 | False |" in out
