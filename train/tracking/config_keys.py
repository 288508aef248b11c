"""Config keys as runs, sweeps and the dashboard name them: dotted, with LightningCLI's ``init_args`` dropped.

``model.init_args.lr`` and ``model.lr`` are the same key: the shorthand LightningCLI's command
line, W&B sweeps and ``neurotrain compare`` all use, so a swept parameter, a config column and a
``--set`` override match.
"""

from __future__ import annotations

from typing import Any


def cli_key(key: str) -> str:
    """``model.init_args.lr`` -> ``model.lr``."""
    return ".".join(part for part in key.split(".") if part != "init_args")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as `cli_key` dotted keys; lists (and empty dicts) stay whole values."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = prefix if key == "init_args" and prefix else (f"{prefix}.{key}" if prefix else str(key))
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out
