"""Each method switch is set in one place, ``method.<key>``, and reaches the method's callbacks from there."""

import inspect
import json

import pytest
from hydra.utils import instantiate

from conftest import compose_config
from devnets import PROJECT_ROOT
from devnets.callbacks.bound_mask import BoundMask
from devnets.callbacks.synaptic_pruning import SynapticPruning
from devnets.train import accepted_arguments, identity, method_callbacks, run_settings


def defaults(cls) -> dict:
    """The keyword defaults of a callback and of the tensor core it hands its settings to (the callback's own where
    both take a key: BoundMask's ``compile`` is ``auto``, BDNNDsd's False)."""
    functions = (cls.tensor_core.__init__, cls.__init__)
    return {name: parameter.default for function in functions
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("method, cls", [("bdnn_dsd", BoundMask), ("bsp", SynapticPruning)])
def test_the_method_config_holds_the_papers_values_that_the_library_defaults_to(method, cls):
    """`method=bsp` and `SynapticPruning()` in a user's own Trainer run the same paper settings."""
    settings = compose_config(f"method={method}").method
    taken = [key for key in settings if key in accepted_arguments(cls)]
    assert taken, "the method's keys reach its callback"
    assert {key: settings[key] for key in taken} == {key: defaults(cls)[key] for key in taken}


def test_a_method_key_reaches_every_callback_that_takes_it(data_root):
    cfg = compose_config(f"data.root={data_root}", "method=bdnn_dsd+bsp", "method.layers=hidden", "method.alpha=0.05",
                         "method.count_threshold=4", "histogram_every_n_epochs=7", "model.hidden=16")
    bounds, pruning = method_callbacks(cfg, instantiate(cfg.model))
    assert isinstance(bounds, BoundMask) and isinstance(pruning, SynapticPruning)  # in the documented order
    assert bounds.layers == pruning.layers == "hidden"
    assert bounds.bounds.count_threshold == 4 and pruning.pruning.alpha == 0.05
    assert bounds.histogram_every_n_epochs == pruning.histogram_every_n_epochs == 7
    assert pruning.n_neurons == 16  # N_neu from model.hidden, N_sam from data.n_train
    assert pruning.n_samples == cfg.data.n_train


def test_runs_recorded_when_the_callbacks_kept_copies_of_the_switches_keep_their_identity():
    """A committed CIFAR-10 record (its config has method.callbacks.synaptic_pruning.alpha, ...) is the run
    the same command makes today, so a sweep still skips it as finished."""
    record = PROJECT_ROOT / "results/runs/cifar10/cifar10-n50000/h10/bsp/seed0/metrics.json"
    config = json.loads(record.read_text())["config"]
    assert config["method"]["callbacks"]["synaptic_pruning"]["alpha"] == config["method"]["alpha"]
    today = compose_config("experiment=cifar10", "model.hidden=10", "method=bsp", "seed=0")
    assert identity(config) == run_settings(today)
    assert identity(config) != run_settings(compose_config("experiment=cifar10", "model.hidden=10", "method=bsp",
                                                           "seed=0", "method.alpha=0.05"))
