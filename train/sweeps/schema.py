"""Sweep files in the W&B sweep schema: parse, validate against the run config, and turn into overrides.

    spec = load_sweep("sweeps/eeg_pretrain.yaml")   # the file alone: keys, distributions, bounds
    check_against_config(spec, extra=["--data.datasets=[shards/eeg]"])  # every parameter exists in the config
    spec.trial_args({"model.optimizer.lr": 3e-4})    # ["--model.optimizer.lr=0.0003"]

A file names its run config in ``command`` (W&B's own macro syntax, so ``wandb agent`` runs it too)::

    command: [neurotrain, fit, --config, train/configs/eeg_pretrain.yaml, "${args}"]

Here: the top-level keys (method, metric, early_terminate, run_cap, command) and `SweepSpec`; the
parameters and their distributions are in `params`, the names a run logs (what ``metric`` may be) in
`run_metrics`. Everything wrong with a file is reported at once, one ``key: reason`` line each, before
any run starts.

Where the runs go is not a swept parameter: a fixed ``trainer.default_root_dir: {value: DIR}`` (in
``parameters``, flat or nested, or ``--trainer.default_root_dir=DIR`` among the ``command``'s literal
arguments) is the sweep's root, ``SweepSpec.root``, the folder ``neurotrain sweep --root`` names
(`command` checks that the two agree).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neurotrain.train.run.configs import shipped_config
from neurotrain.train.sweeps.params import GRID_DISTRIBUTIONS, Param, override, parse_params

TOP_LEVEL_KEYS = {
    "program",
    "entity",
    "project",
    "description",
    "name",
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "command",
    "run_cap",
}
METHODS = ("grid", "random", "bayes")
ROOT_KEY = "trainer.default_root_dir"  # where the runs go: the sweep's root, never a swept value


class SweepError(ValueError):
    """An invalid sweep file; ``problems`` holds one ``key: reason`` line per fault."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid sweep file {path}:\n{lines}")


@dataclass
class SweepSpec:
    """A parsed sweep file."""

    path: Path
    raw: dict[str, Any]
    method: str
    params: list[Param]
    metric: str | None = None
    goal: str = "minimize"
    early_terminate: dict[str, Any] | None = None
    run_cap: int | None = None
    config: Path | None = None
    command_args: list[str] = field(default_factory=list)
    root: str | None = None  # the file's fixed trainer.default_root_dir, as written
    metric_as_written: str | None = None  # the file's metric.name when it is read as another name

    @property
    def name(self) -> str:
        """The sweep's name: the file stem (``eeg_pretrain``)."""
        return self.path.stem

    @property
    def fingerprint(self) -> str:
        """8 hex digits of the file's content, so the same file names the same study everywhere."""
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def grid_size(self) -> int:
        """How many points the grid has (the product of every parameter's grid values)."""
        n = 1
        for p in self.params:
            n *= len(p.grid_values())
        return n

    def grid_space(self) -> dict[str, list[Any]]:
        """``{key: grid values}``, the search space of Optuna's GridSampler."""
        return {p.key: p.grid_values() for p in self.params}

    def base_args(self) -> list[str]:
        """``fit --config CONFIG`` plus the literal arguments of ``command``."""
        return ["fit", "--config", str(self.config), *self.command_args]

    def trial_args(self, values: dict[str, Any]) -> list[str]:
        """The ``--key=value`` overrides of one trial's values."""
        return [override(k, v) for k, v in values.items()]


def load_sweep(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file on its own (keys, method, metric, distributions, bounds, config)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SweepError(path, [f"file: cannot read it as YAML ({exc})"]) from exc
    if not isinstance(raw, dict):
        raise SweepError(path, ["file: expected a mapping of sweep keys"])
    problems: list[str] = []
    for key in sorted(set(raw) - TOP_LEVEL_KEYS):
        problems.append(f"{key}: unknown top-level key (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    method = raw.get("method")
    if method not in METHODS:
        problems.append(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    metric, goal = _metric(raw.get("metric"), problems)
    if method == "bayes" and not metric:
        problems.append("metric: bayes search needs metric.name (what it optimises)")
    params = parse_params(raw.get("parameters"), problems)
    if method == "grid":
        for p in params:
            if p.distribution not in GRID_DISTRIBUTIONS:
                problems.append(
                    f"parameters.{p.key}: grid search needs values, value, int_uniform or q_uniform, "
                    f"not {p.distribution}"
                )
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        problems.append(f"run_cap: must be a positive integer, got {run_cap!r}")
    early = _early_terminate(raw.get("early_terminate"), problems)
    if early and not metric:
        problems.append("early_terminate: hyperband needs metric.name (the value it compares)")
    config, extra, command_root = _command(raw, path, problems)
    params, root = _root(params, command_root, problems)
    if problems:
        raise SweepError(path, problems)
    return SweepSpec(path, raw, method, params, metric, goal, early, run_cap, config, extra, root)


def check_against_config(spec: SweepSpec, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Parse the run config with every parameter's values through LightningCLI's parser (nothing built).

    Returns the parsed config (the fit subcommand's namespace as a dict). A parameter the config does
    not have, or a value of the wrong type, raises SweepError naming the key and the parser's reason;
    so does a metric the run does not log (`run_metrics`). A W&B-style metric name (``val_loss``) is
    read as the name the run logs: ``spec.metric`` becomes ``val/loss``, ``spec.metric_as_written``
    keeps ``val_loss``.
    """
    from neurotrain.train.run.lightning_cli import parse_config

    base = [*spec.base_args(), *extra]
    try:
        parsed = parse_config(base)
    except Exception as exc:  # the config or the --set overrides themselves are wrong
        raise SweepError(
            spec.path, [f"command/--set: the run config does not parse: {_reason(exc)}"]
        ) from exc
    problems = [] if _all_values_parse(spec, base) else _faulty_params(spec, base)
    _check_metric(spec, parsed, problems)
    if problems:
        raise SweepError(spec.path, problems)
    return parsed


# helpers -------------------------------------------------------------------------------------------------


def _all_values_parse(spec: SweepSpec, base: list[str]) -> bool:
    """Whether every parameter's example values parse, checked together: one parse per round.

    Round ``i`` sets each parameter to its ``i``-th example value (those with fewer values sit out),
    so a file costs as many parses as its longest value list, not one per value.
    """
    from neurotrain.train.run.lightning_cli import parse_config

    examples = [(p.key, p.example_values()) for p in spec.params]
    for i in range(max((len(values) for _, values in examples), default=0)):
        try:
            parse_config([*base, *(override(key, values[i]) for key, values in examples if i < len(values))])
        except Exception:
            return False
    return True


def _faulty_params(spec: SweepSpec, base: list[str]) -> list[str]:
    """One ``parameters.KEY: reason`` line per parameter with a value that does not parse (alone)."""
    from neurotrain.train.run.lightning_cli import parse_config

    problems = []
    for p in spec.params:
        for value in p.example_values():
            try:
                parse_config([*base, override(p.key, value)])
            except Exception as exc:
                problems.append(f"parameters.{p.key}: {_reason(exc)} (value {value!r})")
                break
    return problems


def _check_metric(spec: SweepSpec, parsed: dict[str, Any], problems: list[str]) -> None:
    """The file's metric (else the run's ``--monitor``) against what the run logs; W&B names read."""
    from neurotrain.train.sweeps.run_metrics import logged_metrics, resolve_metric, wandb_style

    logged = logged_metrics(parsed)
    if logged is None:  # a model class not known here: it may log anything
        return
    if spec.metric:
        try:
            name = resolve_metric(spec.metric, logged)
        except ValueError as exc:
            problems.append(f"metric.name: {exc}")
            return
        if name != spec.metric:
            spec.metric_as_written, spec.metric = spec.metric, name
    elif parsed.get("monitor") and parsed["monitor"] not in logged:
        # the fit's own --monitor (no metric in the file): the fit is given it as written, so no reading
        alias = wandb_style(str(parsed["monitor"]))
        hint = f" (write {alias})" if alias in logged else ""
        problems.append(
            f"monitor: the run does not log {parsed['monitor']!r}{hint}; it logs {', '.join(logged)}"
        )


def _root(
    params: list[Param], command_root: str | None, problems: list[str]
) -> tuple[list[Param], str | None]:
    """The parameters without ``trainer.default_root_dir``, and that fixed folder (the sweep's root)."""
    roots = [p for p in params if p.key == ROOT_KEY]
    root = command_root
    for p in roots:
        value = p.spec.get("value") if p.distribution == "constant" else None
        if not isinstance(value, str) or not value.strip():
            problems.append(
                f"parameters.{ROOT_KEY}: where the runs go is one folder, not a swept value: "
                "give {value: DIR} (or neurotrain sweep --root DIR)"
            )
        elif root is not None and root != value:
            problems.append(
                f"parameters.{ROOT_KEY}: {value!r}, but the command says --{ROOT_KEY}={root}: give it once"
            )
        else:
            root = value
    return [p for p in params if p.key != ROOT_KEY], root


def _metric(metric: Any, problems: list[str]) -> tuple[str | None, str]:
    if metric is None:
        return None, "minimize"
    if not isinstance(metric, dict):
        problems.append("metric: expected {name: ..., goal: minimize|maximize}")
        return None, "minimize"
    for key in sorted(set(metric) - {"name", "goal", "target"}):
        problems.append(f"metric.{key}: unknown key (allowed: name, goal, target)")
    goal = metric.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        problems.append(f"metric.goal: must be minimize or maximize, got {goal!r}")
    name = metric.get("name")
    if not isinstance(name, str) or not name:
        problems.append("metric.name: missing (e.g. val/loss)")
        name = None
    return name, goal


def _early_terminate(early: Any, problems: list[str]) -> dict[str, Any] | None:
    if early is None:
        return None
    if not isinstance(early, dict) or early.get("type") != "hyperband":
        problems.append("early_terminate: only {type: hyperband, min_iter | max_iter + s, eta} is supported")
        return None
    for key in sorted(set(early) - {"type", "min_iter", "max_iter", "s", "eta", "strict"}):
        problems.append(
            f"early_terminate.{key}: unknown key (allowed: type, min_iter, max_iter, s, eta, strict)"
        )
    for key in ("min_iter", "max_iter", "s", "eta"):
        value = early.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(f"early_terminate.{key}: must be a positive integer, got {value!r}")
    if early.get("min_iter") is None and (early.get("max_iter") is None or early.get("s") is None):
        problems.append("early_terminate: hyperband needs min_iter, or max_iter and s")
    if early.get("eta", 3) < 2:
        problems.append("early_terminate.eta: must be at least 2")
    return dict(early)


def _command(
    raw: dict[str, Any], path: Path, problems: list[str]
) -> tuple[Path | None, list[str], str | None]:
    """The run config named by ``--config`` in ``command``, its other literal arguments, and its root.

    The root is a literal ``--trainer.default_root_dir`` of the command (taken out of the arguments:
    it is the sweep's root, `SweepSpec.root`).
    """
    command = raw.get("command")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        problems.append(
            'command: expected a list such as [neurotrain, fit, --config, CONFIG.yaml, "${args}"]'
        )
        return None, [], None
    args = list(command)
    if "fit" not in args:
        problems.append("command: must run `neurotrain fit` (sweeps train)")
        return None, [], None
    args = args[args.index("fit") + 1 :]
    config, root, extra, i = None, None, [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", f"--{ROOT_KEY}") and i + 1 < len(args):
            if arg == "--config":
                config = args[i + 1]
            else:
                root = args[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif arg.startswith(f"--{ROOT_KEY}="):
            root = arg.split("=", 1)[1]
        elif not re.fullmatch(r"\$\{\w+\}", arg):
            extra.append(arg)
        i += 1
    if "${args}" not in command:
        problems.append('command: must contain "${args}" (where the swept values go)')
    if config is None:
        problems.append("command: no --config CONFIG.yaml (the run config this sweep varies)")
        return None, extra, root
    found = _find_config(config, path)
    if found is None:
        problems.append(
            f"command: config {config} not found (relative to the working folder or the repository)"
        )
    return found, extra, root


def _find_config(name: str, sweep_file: Path) -> Path | None:
    """The config as given (absolute or from the working folder), else beside the repo or package."""
    candidates = [Path(name)]
    for parent in sweep_file.resolve().parents:
        candidates.append(parent / name)
    candidates.append(shipped_config(Path(name).name))
    return next((c.resolve() for c in candidates if c.is_file()), None)


def _reason(exc: BaseException) -> str:
    """The informative lines of a jsonargparse error (``Option 'x' is not accepted``, type mismatches)."""
    text = str(exc)
    keep = [
        line.strip(" -")
        for line in text.splitlines()
        if re.search(r"not accepted|Expected|Parser key|does not|No action|Unrecognized|not found", line)
        and "Union subtypes" not in line
        and "NoneType" not in line
    ]
    if any("not accepted" in line or "Unrecognized" in line or "No action" in line for line in keep):
        return "the run config has no such option: " + "; ".join(keep)
    return "; ".join(keep) or text.strip().splitlines()[0][:300]
