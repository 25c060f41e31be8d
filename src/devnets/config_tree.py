"""The resolved config as a plain-text tree, printed when a run starts (lightning-hydra-template's
``print_config_tree``, without rich): one branch of YAML per top-level key, the run's own groups first."""

from __future__ import annotations

import yaml
from omegaconf import DictConfig, OmegaConf

FIRST = ("data", "model", "method", "trainer", "logger", "paths")
# Lookup tables: the method's keys show the values a run takes from them.
LEFT_OUT = ("per_cell",)


def config_tree(cfg: DictConfig) -> str:
    keys = [key for key in FIRST if key in cfg] + [key for key in cfg if key not in FIRST + LEFT_OUT]
    lines = ["CONFIG"]
    for index, key in enumerate(keys):
        branch, indent = ("└── ", "    ") if index == len(keys) - 1 else ("├── ", "│   ")
        value = cfg[key]
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        first, *rest = yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True).splitlines()
        lines.append(f"{branch}{first}")
        lines.extend(f"{indent}{line}" for line in rest)
    return "\n".join(lines)
