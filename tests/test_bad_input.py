"""Bad settings: one line naming the key, the value and what is allowed, before anything is trained."""

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from devnets import PROJECT_ROOT
from devnets.errors import InvalidSetting
from devnets.results import read_metrics
from devnets.train import train

BAD_SETTINGS = [
    (["model.hidden=0"], "model.hidden=0 is not allowed: an integer ≥ 1"),
    (["model.hidden=-5"], "model.hidden=-5 is not allowed: an integer ≥ 1"),
    (["model.lr=0"], "model.lr=0 is not allowed: a finite number > 0"),
    (["model.lr=-0.1"], "model.lr=-0.1 is not allowed: a finite number > 0"),
    (["model.lr=fast"], "model.lr='fast' is not allowed: a finite number > 0"),
    (["model.momentum=1.5"], "model.momentum=1.5 is not allowed: a number in [0, 1)"),
    (["model.loss=hinge"], "model.loss='hinge' is not allowed: one of ['cross_entropy', 'mse']"),
    (["model.init=he"], "model.init='he' is not allowed: one of ['torch', 'glorot']"),
    (["model.input_activation=tanh"], "model.input_activation='tanh' is not allowed: one of ['none', 'sigmoid']"),
    (["method=dropout", "method.p=1.0"], "method.p=1.0 is not allowed: a number in [0, 1)"),
    (["method=dropout", "method.p=-0.1"], "method.p=-0.1 is not allowed: a number in [0, 1)"),
    (["method=l2", "method.l2=-1"], "method.l2=-1 is not allowed: a finite number ≥ 0"),
    (["data.n_train=0"], "data.n_train=0 is not allowed: an integer from 1 to 60000 (the mnist training set)"),
    (["data.n_train=70000"], "data.n_train=70000 is not allowed: an integer from 1 to 60000"),
    (["data=cifar10", "data.n_train=60000"], "data.n_train=60000 is not allowed: an integer from 1 to 50000"),
    (["data.n_train=5000"], "data.n_train=5000 is not allowed: at most 300 (the training files under"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed: an integer ≥ 1"),
    (["data.subset=stratified"], "data.subset='stratified' is not allowed: one of ['random', 'balanced']"),
    (["data.val_size=-1"], "data.val_size=-1 is not allowed: an integer from 0 to"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 is not allowed: an integer ≥ 1"),
    (["seed=-1"], "seed=-1 is not allowed: an integer ≥ 0"),
    (["checkpoint_every_n_epochs=0"], "checkpoint_every_n_epochs=0 is not allowed: an integer ≥ 1"),
    (["threads=0"], "threads=0 is not allowed: null or an integer ≥ 1"),
    (["threads=-3"], "threads=-3 is not allowed: null or an integer ≥ 1"),
    (["threads=true"], "threads=True is not allowed: null or an integer ≥ 1"),
    (["seed=true"], "seed=True is not allowed: an integer ≥ 0"),
    (["trainer.max_epochs=true"], "trainer.max_epochs=True is not allowed: an integer ≥ 1"),
    (["data.n_train=true"], "data.n_train=True is not allowed: an integer from 1 to 60000"),
    (["data.batch_size=true"], "data.batch_size=True is not allowed: an integer ≥ 1"),
    (["data.name=cifar"], "data.name='cifar' is not allowed: one of ['cifar10', 'fashion_mnist', 'mnist']"),
    (["model.num_classes=5"], "model.num_classes=5 is not allowed: 10, the mnist data's"),
    (["model.num_classes=0"], "model.num_classes=0 is not allowed: 10, the mnist data's"),
    (["model.input_dim=10"], "model.input_dim=10 is not allowed: 784, the mnist data's"),
    (["data=cifar10", "model.input_dim=784"], "model.input_dim=784 is not allowed: 3072, the cifar10 data's"),
    (["model=lenet", "data=cifar10", "model.input_shape=[1,28,28]"],
     "model.input_shape=[1, 28, 28] is not allowed: [3, 32, 32], the cifar10 data's"),
    (["model=lenet", "model.hidden=0"], "model.hidden=0 is not allowed: an integer ≥ 1"),
    (["trainer.devices=5"], "trainer.devices=5 is not allowed: 1 (a run trains in one process"),
    (["data.download=maybe"], "data.download='maybe' is not allowed: true or false"),
    (["method=bsp", "method.layers=[bogus]"], "method.layers=['bogus'] is not allowed: patterns that each match"),
    (["method=bdnn_dsd", "method.layers=[net.9]"], "method.layers=['net.9'] is not allowed: patterns that each"),
    (["+trainer.max_epoch=5"],
     "trainer.max_epoch=5 is not allowed: not an argument of lightning.pytorch.Trainer (closest: trainer.max_epochs)"),
    (["+model.hiden=5"], "model.hiden=5 is not allowed: not an argument of devnets.model.MLPClassifier (closest: "
                         "model.hidden)"),
    (["method=bsp", "+method.alpah=0.05"],
     "method.alpah=0.05 is not allowed: not a setting of method bsp (closest: method.alpha)"),
    (["method=baseline", "+method.count_threshold=5"],
     "method.count_threshold=5 is not allowed: not a setting of method baseline"),
    (["method=bsp", "method.alpha=-1"], "method.alpha=-1 is not allowed: a finite number > 0"),
    (["tags=dev"], "tags='dev' is not allowed: a list of words, e.g. tags=[first_try,lr_probe]"),
    (["+trainer.fast_dev_run=true"], "trainer.fast_dev_run=True is not allowed: false outside experiment_name=debug"),
]


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS, ids=[" ".join(o) for o, _ in BAD_SETTINGS])
def test_bad_setting_is_refused_before_training(make_config, tmp_path, overrides, message):
    with pytest.raises(InvalidSetting) as error:
        train(make_config(*overrides))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
    assert read_metrics(tmp_path / "run") is None
    assert not (tmp_path / "run" / "last.ckpt").exists()


@pytest.mark.parametrize("override", ["data=imagenet", "method=magic"])
def test_unknown_dataset_or_method_is_hydras_error(make_config, override):
    with pytest.raises((MissingConfigException, ConfigCompositionException), match=override.split("=")[1]):
        make_config(override)


def test_command_line_prints_one_line_and_fails(data_root, tmp_path):
    completed = subprocess.run(
        [sys.executable, "scripts/train.py", "model.hidden=0", f"data.root={data_root}", f"hydra.run.dir={tmp_path}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: model.hidden=0 is not allowed: an integer ≥ 1"
    )
    assert read_metrics(tmp_path) is None
    assert "model.hidden=0" not in completed.stdout  # printed once, on stderr
    assert "model.hidden=0 is not allowed" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("override", ["checkpoint_every_n_epochs=0", "threads=-3", "model.hidden=0"])
def test_bad_setting_is_refused_even_when_the_run_is_complete(run, make_config, override):
    run()
    with pytest.raises(InvalidSetting, match=override.split("=")[0]):
        train(make_config(override))
