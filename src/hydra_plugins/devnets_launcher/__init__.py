"""devnets' Hydra launcher plugin: hydra_plugins is the namespace Hydra looks for plugins in."""
