"""The ``devnets-train`` command: the command line's overrides checked against the config, then the run.

Hydra reports a misspelled option or key only after devnets.train has imported torch and Lightning,
in many lines (the config search path, a hint to add ``+``). This module imports neither: it composes
the config with Hydra's compose API and reports the first bad override in one line naming the closest
valid option or key, then hands the command line to Hydra unchanged, with :func:`run` as the task: a run
whose folder holds it finished is reported there, still without torch.
"""

from __future__ import annotations

import difflib
import logging

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from devnets import PROJECT_ROOT
from devnets.run_folder import finished_run

CONF_DIR = PROJECT_ROOT / "conf"
CONFIG_NAME = "train"
log = logging.getLogger("devnets")


class BadOverride(ValueError):
    """An override the config does not accept; the message is one line."""


def closest(word: str, candidates: list[str]) -> str:
    """`` (closest: X)`` for the candidate nearest ``word``, or nothing when none is near."""
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (closest: {match[0]})" if match else ""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def values(override: Override, options: list[str]) -> list[str]:
    """The values an override sets, one per job of a sweep."""
    if isinstance(override.value(), Glob):
        return override.value().filter(options)
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def config_keys(node: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a config (as a container), nodes included."""
    keys = []
    for key, value in node.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys.extend(config_keys(value, f"{prefix}{key}."))
    return keys


def unknown_key(override: Override, others: list[str], config_name: str) -> BadOverride:
    """The error for an override of a key the config lacks, naming the nearest key it has."""
    key = override.key_or_group
    cfg = compose(config_name, others, return_hydra_config=key.startswith("hydra."))
    keys = config_keys(OmegaConf.to_container(cfg))
    return BadOverride(f"{override.input_line} is not allowed: no such key{closest(key, keys)}")


def check_overrides(overrides: list[str], multirun: bool = False, config_name: str = CONFIG_NAME) -> None:
    """Raise BadOverride for the first override the config does not accept (with -m, each value of a sweep)."""
    parser = OverridesParser.create()
    parsed = []
    for override in overrides:
        try:
            parsed += parser.parse_overrides([override])
        except HydraException as error:
            hint = " (several overrides in one argument: give each its own)" if len(override.split()) > 1 else ""
            raise BadOverride(f"'{override}'{hint}: {one_line(error)}") from None
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        composed = []
        for override in parsed:
            group = override.key_or_group
            if override.type is OverrideType.DEL:
                composed.append(override.input_line)
                continue
            options = loader.get_group_options(group) if loader.repository.group_exists(group) else []
            choices = values(override, options)
            for value in choices if options else ():
                if value not in options:
                    raise BadOverride(f"{group}={value} is not allowed: one of [{', '.join(options)}]"
                                      f"{closest(value, options)}")
            sweep = multirun and override.is_sweep_override() or isinstance(override.value(), Glob)
            composed.append(f"{override.get_key_element()}={choices[0]}" if sweep and choices else override.input_line)
        try:
            compose(config_name, overrides=composed, return_hydra_config=True)
        except HydraException as error:
            cause = error.__cause__
            missing = cause.full_key if isinstance(cause, ConfigAttributeError | ConfigKeyError) else None
            bad = next((index for index, override in enumerate(parsed) if override.key_or_group == missing), None)
            if bad is not None:
                raise unknown_key(parsed[bad], composed[:bad] + composed[bad + 1 :], config_name) from None
            raise BadOverride(one_line(error)) from None
        except OmegaConfBaseException as error:
            raise BadOverride(one_line(error)) from None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
def run(cfg: DictConfig) -> float | None:
    """A run, or a sweep's job: one its folder already holds, finished, is reported without importing torch or
    Lightning (about a second); any other is :func:`devnets.train.job`'s."""
    previous = finished_run(cfg, cfg.paths.output_dir)
    if previous is not None:
        log.info("%s already holds a %s run; nothing to do", cfg.paths.output_dir, previous["status"])
        return previous["final_test_acc"]
    from devnets.train import job  # torch and Lightning

    return job(cfg)


def main() -> None:
    """``devnets-train`` and ``scripts/train.py``: check the overrides, then run."""
    args = get_args_parser().parse_args()
    if args.overrides and not (args.config_path or args.config_dir or args.shell_completion):
        try:
            check_overrides(args.overrides, args.multirun, args.config_name or CONFIG_NAME)
        except BadOverride as error:
            raise SystemExit(f"error: {error}") from None
    run()
