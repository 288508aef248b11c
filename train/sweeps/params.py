"""Swept parameters: W&B's distributions, their checks, grid points, Optuna draws and CLI overrides.

    params = parse_params(raw["parameters"], problems)   # Param(key, distribution, spec), problems listed
    params[0].suggest(trial)                              # a value drawn from an Optuna trial
    override("model.init_args.optimizer.lr", 3e-4)        # "--model.optimizer.lr=0.0003"

Keys are LightningCLI keys in the ``cli_key`` shorthand (``model.init_args.lr`` is ``model.lr``); W&B's
nested form (``model: {parameters: {lr: …}}``) is flattened to ``model.lr``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from neurotrain.train.tracking.config_keys import cli_key

# distribution -> the bound keys it needs
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "categorical": ("values",),
    "int_uniform": ("min", "max"),
    "uniform": ("min", "max"),
    "q_uniform": ("min", "max", "q"),
    "log_uniform": ("min", "max"),  # W&B: min/max are natural logs of the bounds
    "log_uniform_values": ("min", "max"),
    "q_log_uniform_values": ("min", "max", "q"),
    "inv_log_uniform_values": ("min", "max"),
    "normal": ("mu", "sigma"),
    "q_normal": ("mu", "sigma", "q"),
    "log_normal": ("mu", "sigma"),
}
PARAM_KEYS = {"value", "values", "distribution", "min", "max", "mu", "sigma", "q", "probabilities"}
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")


@dataclass
class Param:
    """One swept parameter: its CLI key (``model.lr``) and W&B distribution with bounds."""

    key: str
    distribution: str
    spec: dict[str, Any]

    def grid_values(self) -> list[Any]:
        """The grid points (constant, categorical, int_uniform, q_uniform)."""
        s, d = self.spec, self.distribution
        if d == "constant":
            return [s["value"]]
        if d == "categorical":
            return list(s["values"])
        if d == "int_uniform":
            return list(range(int(s["min"]), int(s["max"]) + 1))
        n = int(math.floor((s["max"] - s["min"]) / s["q"] + 1e-9))
        return [round(s["min"] + i * s["q"], 12) for i in range(n + 1)]

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter's value from an Optuna trial (normal laws through their quantile)."""
        s, d, k = self.spec, self.distribution, self.key
        if d in ("constant", "categorical"):
            return trial.suggest_categorical(k, self.grid_values())
        if d == "int_uniform":
            return trial.suggest_int(k, int(s["min"]), int(s["max"]))
        if d == "uniform":
            return trial.suggest_float(k, s["min"], s["max"])
        if d == "q_uniform":
            return trial.suggest_float(k, s["min"], s["max"], step=s["q"])
        if d == "log_uniform":
            return trial.suggest_float(k, math.exp(s["min"]), math.exp(s["max"]), log=True)
        if d == "log_uniform_values":
            return trial.suggest_float(k, s["min"], s["max"], log=True)
        if d == "q_log_uniform_values":
            return _quantize(trial.suggest_float(k, s["min"], s["max"], log=True), s["q"])
        if d == "inv_log_uniform_values":
            return 1.0 / trial.suggest_float(k, 1.0 / s["max"], 1.0 / s["min"], log=True)
        # Optuna has no normal law: draw its quantile uniformly (exact for random search; TPE models u).
        u = trial.suggest_float(f"{k}:quantile", 1e-6, 1 - 1e-6)
        x = NormalDist(s["mu"], s["sigma"]).inv_cdf(u)
        return _quantize(x, s["q"]) if d == "q_normal" else math.exp(x) if d == "log_normal" else x

    def example_values(self) -> list[Any]:
        """Values that must all parse as this key in the run config (type check before any run)."""
        if self.distribution in GRID_DISTRIBUTIONS:
            return self.grid_values()[:8]
        s = self.spec
        if "min" in s:
            return [s["min"], s["max"]]
        return [s["mu"]]


def override(key: str, value: Any) -> str:
    """``--key=value`` in the form LightningCLI parses (JSON for lists and dicts, lowercase booleans)."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        text = json.dumps(value)
    else:
        text = str(value)
    return f"--{cli_key(key)}={text}"


def parse_params(tree: Any, problems: list[str], prefix: str = "") -> list[Param]:
    """The parameters of a sweep file's ``parameters`` mapping; each fault appended to ``problems``."""
    if not isinstance(tree, dict) or not tree:
        problems.append(f"{prefix or 'parameters'}: expected a non-empty mapping of parameters")
        return []
    out = []
    for key, spec in tree.items():
        full = cli_key(f"{prefix}.{key}" if prefix else str(key))
        where = f"parameters.{full}"
        if isinstance(spec, dict) and "parameters" in spec:  # W&B's nested form
            out.extend(parse_params(spec["parameters"], problems, full))
            continue
        if not isinstance(spec, dict):
            problems.append(f"{where}: expected a mapping such as {{values: [...]}} or {{min: .., max: ..}}")
            continue
        unknown = sorted(set(spec) - PARAM_KEYS)
        if unknown:
            problems.append(
                f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(PARAM_KEYS))})"
            )
            continue
        dist = spec.get("distribution") or _default_distribution(spec)
        if dist not in DISTRIBUTIONS:
            problems.append(f"{where}: unknown distribution {dist!r} (known: {', '.join(DISTRIBUTIONS)})")
            continue
        missing = [k for k in DISTRIBUTIONS[dist] if k not in spec]
        if missing:
            problems.append(f"{where}: distribution {dist} needs {', '.join(missing)}")
            continue
        problem = _bounds(dist, spec)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        out.append(Param(full, dist, dict(spec)))
    keys = [p.key for p in out]
    for dup in sorted({k for k in keys if keys.count(k) > 1}):
        problems.append(f"parameters.{dup}: given twice (model.init_args.x and model.x are the same key)")
    return out


def _default_distribution(spec: dict[str, Any]) -> str | None:
    """W&B's defaults: values -> categorical, value -> constant, int bounds -> int_uniform, else uniform."""
    if "values" in spec:
        return "categorical"
    if "value" in spec:
        return "constant"
    if "min" in spec and "max" in spec:
        ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
        return "int_uniform" if ints else "uniform"
    return None


def _bounds(dist: str, spec: dict[str, Any]) -> str | None:
    if dist == "categorical" and (not isinstance(spec["values"], list) or not spec["values"]):
        return "values must be a non-empty list"
    if "min" in spec:
        lo, hi = spec["min"], spec["max"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)):
            return f"min and max must be numbers, got {lo!r} and {hi!r}"
        if lo > hi:
            return f"min ({lo}) > max ({hi})"
        if dist.endswith("log_uniform_values") and lo <= 0:
            return f"{dist} needs min > 0, got {lo}"
        if dist == "int_uniform" and not (float(lo).is_integer() and float(hi).is_integer()):
            return f"int_uniform needs integer min and max, got {lo} and {hi}"
    if "q" in spec and not (isinstance(spec["q"], int | float) and spec["q"] > 0):
        return f"q must be a positive number, got {spec['q']!r}"
    if "sigma" in spec and not (isinstance(spec["sigma"], int | float) and spec["sigma"] > 0):
        return f"sigma must be a positive number, got {spec['sigma']!r}"
    return None


def _quantize(x: float, q: float) -> float:
    return round(round(x / q) * q, 12)
