"""The weights a method acts on, and the optimiser hooks that advance it once per optimiser step.

As for ``torch.nn.utils.prune.global_unstructured``, the weights are ``(module, name)`` pairs, and a
method keeps its state on ``module`` as buffers named ``<name>_<method>_<what>`` (``weight_bsp_mask``,
``weight_bdnn_bound``, ...), so that they travel in the model's state_dict. The names differ from
torch's ``weight_mask`` and ``weight_orig``, and the methods work on a weight that torch has pruned:
there the parameter the optimiser updates is ``<name>_orig``, which torch multiplies by its
``<name>_mask`` before every forward pass, so the method acts on ``<name>_orig`` and torch's mask
still applies on top.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from devnets.errors import require

# The layers a method acts on by default: their weights, never biases or norms.
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYER_SETS = ("all", "hidden")
Weight = tuple[nn.Module, str]


def is_weight(value: Any) -> bool:
    """A ``(module, parameter name)`` pair."""
    return (
        isinstance(value, Sequence) and len(value) == 2
        and isinstance(value[0], nn.Module) and isinstance(value[1], str)
    )


def shown(value: Any) -> Any:
    """``value`` for a one-line error: a module by its class name."""
    if isinstance(value, nn.Module):
        return type(value).__name__
    if isinstance(value, list | tuple):
        return type(value)(shown(item) for item in value)
    return value


def check_layers(layers: Any) -> str | list:
    """``layers`` as a user gives it, checked: ``all`` (every weight of every nn.Linear and
    nn.Conv1d/2d/3d), ``hidden`` (the first nn.Linear's: inputs -> hidden in the papers' MLP), a list
    of fnmatch patterns of those layers' module names, or a list of ``(module, name)`` pairs."""
    if isinstance(layers, Sequence) and not isinstance(layers, str):
        layers = list(layers)
    listed = isinstance(layers, list) and len(layers) > 0
    ok = layers in LAYER_SETS or (
        listed and (all(isinstance(item, str) for item in layers) or all(is_weight(item) for item in layers))
    )
    allowed = f"one of {list(LAYER_SETS)}, a list of module-name patterns or a list of (module, name) pairs"
    require(ok, "layers", shown(layers), allowed)
    return layers


def module_list(model: nn.Module) -> str:
    """What a model has, for an error: its module names and classes."""
    named = [f"{name} ({type(module).__name__})" for name, module in model.named_modules() if name]
    return ", ".join(named) or f"no submodules ({type(model).__name__})"


def select_weights(model: nn.Module, layers: Any = "all") -> list[Weight]:
    """The ``(module, name)`` pairs ``layers`` (see :func:`check_layers`) selects in ``model``, in model order."""
    layers = check_layers(layers)
    weighted = {name: module for name, module in model.named_modules() if isinstance(module, WEIGHTED)}
    has = f"the model has {module_list(model)}"
    if layers == "all":
        require(bool(weighted), "layers", layers, f"a model with an nn.Linear or nn.Conv1d/2d/3d; {has}")
        return [(module, "weight") for module in weighted.values()]
    if layers == "hidden":
        linears = [module for module in weighted.values() if isinstance(module, nn.Linear)]
        require(bool(linears), "layers", layers, f"a model with an nn.Linear; {has}")
        return [(linears[0], "weight")]
    if all(isinstance(pattern, str) for pattern in layers):
        for pattern in layers:
            matched = any(fnmatchcase(name, pattern) for name in weighted)
            require(matched, "layers", layers, f"patterns that each match an nn.Linear or nn.Conv1d/2d/3d; {has}")
        chosen = [name for name in weighted if any(fnmatchcase(name, pattern) for pattern in layers)]
        return [(weighted[name], "weight") for name in chosen]
    modules = list(model.modules())
    for pair in layers:
        require(any(pair[0] is module for module in modules), "layers", shown(pair), f"modules of the model; {has}")
    return [tuple(pair) for pair in layers]


def weight_names(model: nn.Module, weights: Iterable[Weight]) -> list[str]:
    """Each weight's name in ``model``'s state_dict, as ``net.0.weight``."""
    module_names = {id(module): name for name, module in model.named_modules()}
    return [".".join(filter(None, (module_names[id(module)], name))) for module, name in weights]


def parameter(module: nn.Module, name: str) -> nn.Parameter:
    """The tensor the optimiser updates: ``name``, or ``<name>_orig`` once torch.nn.utils.prune pruned it."""
    registered = module._parameters  # the methods look their weights up after every step: a dict first
    tensor = registered.get(f"{name}_orig")
    if tensor is None:
        tensor = registered.get(name)
    if tensor is not None and tensor.is_floating_point():
        return tensor
    tensor = getattr(module, f"{name}_orig", None)
    if not isinstance(tensor, nn.Parameter):
        tensor = getattr(module, name, None)
    ok = isinstance(tensor, nn.Parameter) and tensor.is_floating_point()
    found = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
    require(ok, "parameters", f"{type(module).__name__}.{name}", f"a floating-point nn.Parameter (found {found})")
    return tensor


def load_renamed(module: nn.Module, name: str, renames: dict[str, str]) -> RemovableHandle:
    """Let ``module`` load a state_dict that holds its buffers under older names (``renames``: old to
    new), unless torch.nn.utils.prune wrote them (``<name>_orig`` is there). Returns the hook's handle."""

    def rename(module: nn.Module, state_dict: dict, prefix: str, *_: Any) -> None:
        if f"{prefix}{name}_orig" not in state_dict:
            for old, new in renames.items():
                if prefix + old in state_dict:
                    state_dict.setdefault(prefix + new, state_dict.pop(prefix + old))

    return module.register_load_state_dict_pre_hook(rename)


# Whole numbers are exact in float32 up to 2^24: a float32 sum of fewer 0/1 terms is the exact count.
EXACT_FLOAT_COUNT = 2**24


def counting_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype of a method's counts beside ``weight``: at least float32, whose whole numbers are exact
    to 2^24 (bfloat16's only to 256)."""
    return torch.promote_types(weight.dtype, torch.float32)


def count_ones(zero_one: torch.Tensor) -> int:
    """The 1s of a tensor of 0s and 1s: its sum where a float sum is exact (float32 or float64, fewer than
    2^24 entries), about 10 times faster on the CPU than ``torch.count_nonzero``; count_nonzero otherwise."""
    if zero_one.dtype in (torch.float32, torch.float64) and zero_one.numel() < EXACT_FLOAT_COUNT:
        return int(zero_one.sum())
    return int(torch.count_nonzero(zero_one))


def compiler_missing() -> str | None:
    """Why ``torch.compile`` cannot build CPU kernels here (its C++ compiler is not found), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch: let torch.compile itself report what it lacks
        return None
    try:
        get_cpp_compiler()
    except Exception as error:  # torch's own InvalidCxxCompiler, or an OS error running the compiler
        return f"no C++ compiler for its CPU kernels: {str(error).strip().splitlines()[0]}"
    return None


class WeightMethod:
    """What both methods share: the weights they act on, their buffers, and the optimiser hooks."""

    # The buffers (``<name>_<what>``) that hold whole-number counts, in at least float32 (counting_dtype).
    count_buffers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.weights: list[Weight] = []
        self.hooks: list[RemovableHandle] = []  # every hook placed for the method, for unhook()
        # Work tensors that a step overwrites, kept from one step to the next (see ``scratch``).
        self._scratch: dict[Hashable, torch.Tensor] = {}

    def attach(self, weights: Iterable[Weight]) -> None:
        """Act on ``weights``, ``(module, name)`` pairs (see :func:`select_weights`)."""
        weights = [tuple(pair) for pair in weights]
        require(bool(weights), "parameters", weights, "at least one (module, name) pair")
        for module, name in weights:
            parameter(module, name)
        self.weights = weights

    def register(self, module: nn.Module, name: str, what: str, tensor: torch.Tensor) -> None:
        """Buffer ``<name>_<what>`` on ``module``, kept if it is there already (a second fit, a restored run)."""
        if not hasattr(module, f"{name}_{what}"):
            module.register_buffer(f"{name}_{what}", tensor)

    @torch.no_grad()
    def keep_counts_exact(self, model: nn.Module, saved: dict[str, torch.Tensor] | None = None) -> None:
        """Put the counts back in at least float32 where something cast the model's buffers down, as
        Lightning's ``bf16-true`` and ``16-true`` precisions do (to bfloat16, whose whole numbers are exact
        only to 256: BSP's counts would stop there, below p_c at 60,000 samples). The values are taken from
        ``saved`` (the state_dict the model was loaded from, before the cast) where it has them."""
        for (module, name), weight_name in zip(self.weights, weight_names(model, self.weights), strict=True):
            dtype = counting_dtype(parameter(module, name))
            for what in self.count_buffers:
                count = module._buffers.get(f"{name}_{what}")
                if count is not None and count.dtype != dtype:
                    exact = (saved or {}).get(f"{weight_name}_{what}", count)
                    module.register_buffer(f"{name}_{what}", exact.to(device=count.device, dtype=dtype))

    @staticmethod
    def state(module: nn.Module, name: str, what: str) -> torch.Tensor:
        """The buffer ``<name>_<what>`` of ``module``."""
        buffer = module._buffers.get(f"{name}_{what}")
        return buffer if buffer is not None else getattr(module, f"{name}_{what}")

    def scratch(
        self, key: Hashable, like: torch.Tensor, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """A work tensor for a step to overwrite, the same one at every step with this ``key``: shaped and typed as
        ``like`` unless ``shape`` or ``dtype`` are given, on its device. On the CPU a fresh tensor of a large
        weight's size costs more than the pass that fills it (its pages are faulted in anew)."""
        shape, dtype = like.shape if shape is None else torch.Size(shape), like.dtype if dtype is None else dtype
        if torch.compiler.is_compiling():  # in a compiled graph, a buffer the compiler fuses away
            return torch.empty(shape, dtype=dtype, device=like.device)
        tensor = self._scratch.get(key)
        if (
            tensor is None or tensor.shape != shape or tensor.dtype != dtype or tensor.device != like.device
            or (tensor.is_inference() and not torch.is_inference_mode_enabled())  # read-only outside inference mode
        ):
            tensor = self._scratch[key] = torch.empty(shape, dtype=dtype, device=like.device)
        return tensor

    def parameters(self, weights: Iterable[Weight] | None = None) -> list[nn.Parameter]:
        return [parameter(module, name) for module, name in (self.weights if weights is None else weights)]

    def hook(self, *optimizers: torch.optim.Optimizer) -> None:
        """Call :meth:`after_step` after every step of each optimiser, on the weights that optimiser updates.

        Gradient accumulation then advances the method once per optimiser step, not per batch; with
        several optimisers, each one's step advances the weights it holds. :meth:`unhook` undoes this.
        """
        for optimizer in optimizers:
            updated = {id(tensor) for group in optimizer.param_groups for tensor in group["params"]}
            held = [weight for weight in self.weights if id(parameter(*weight)) in updated]
            if held:
                self.hooks.append(optimizer.register_step_post_hook(lambda *_, held=held: self.after_step(held)))

    def unhook(self) -> None:
        """Remove the hooks :meth:`hook` (or an adapter, through ``hooks``) placed."""
        for handle in self.hooks:
            handle.remove()
        self.hooks = []

    def after_step(self, weights: list[Weight]) -> None:
        raise NotImplementedError
