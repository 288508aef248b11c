"""The W&B sweep backend: the W&B controller picks values; each trial is a normal ``neurotrain fit``.

    run_wandb(spec, count=10, project="neurotrain")   # wandb.sweep(...) then wandb.agent(...) here

Before anything is created, W&B must be usable: no API key fails at once; a server that cannot be
reached, or does not answer, fails within ``timeout_s`` (default 30 s), each with a clear
``WandbUnavailable`` message (``neurotrain sweep --backend auto`` then runs the sweep locally).

Inside ``wandb.agent`` the agent puts the run id, the sweep id and a file of the chosen values in the
environment (``WANDB_RUN_ID``, ``WANDB_SWEEP_ID``, ``WANDB_SWEEP_PARAM_PATH``); the trial process
inherits them, so its W&B run is the sweep's run, and the values become ``--model.optimizer.lr=…``
overrides. The trial's command is `trial.trial_command`'s, as in the local engine; whether W&B can be
reached, and with which credentials, `neurotrain.train.tracking.wandb_server` decides.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from neurotrain.train.sweeps.schema import SweepSpec
from neurotrain.train.sweeps.trial import trial_command
from neurotrain.train.tracking.config_keys import cli_key, flatten
from neurotrain.train.tracking.wandb_server import is_logged_in, probe, resolve_mode, server_url


class WandbUnavailable(RuntimeError):
    """W&B cannot run this sweep (no key, offline, server unreachable or silent)."""


def run_wandb(
    spec: SweepSpec,
    *,
    count: int | None = None,
    extra: Sequence[str] = (),
    root: str | Path = "checkpoints",
    project: str = "neurotrain",
    entity: str | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Create the sweep on the W&B server and run an agent here for ``count`` trials; exit code."""
    url = check_wandb(timeout_s)
    import wandb

    config = wandb_config(spec)
    sweep_id = _bounded(
        lambda: wandb.sweep(sweep=config, project=spec.raw.get("project") or project, entity=entity),
        timeout_s,
        f"creating the sweep on the W&B server at {url}",
    )
    print(f"W&B sweep {sweep_id} created on {url}; running an agent here", flush=True)
    root = Path(root).resolve()
    failures: list[str] = []

    def trial() -> None:
        values = agent_values()
        run_id = os.environ.get("WANDB_RUN_ID", "run")
        run_name = f"{spec.name}-{sweep_id}-{run_id}"
        cmd = trial_command(
            spec,
            values,
            extra=extra,
            root=root,
            run_name=run_name,
            group=f"{spec.name}-{sweep_id}",
            sweep_id=sweep_id,
            wandb_project=spec.raw.get("project") or project,
        )
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            failures.append(run_name)
            print(f"trial {run_name} failed (exit code {rc}); the sweep goes on", flush=True)

    wandb.agent(
        sweep_id, function=trial, project=spec.raw.get("project") or project, entity=entity, count=count
    )
    print(f"W&B sweep {sweep_id}: agent done, {len(failures)} failed trial(s); see {url}", flush=True)
    return 0


def wandb_config(spec: SweepSpec) -> dict[str, Any]:
    """The sweep file as the W&B controller is given it: without project/entity, its metric as logged.

    A W&B-style metric name (``val_loss``) becomes the name the runs log (``val/loss``,
    `run_metrics`), the one the controller reads from each run for bayes search and hyperband.
    """
    config = {k: v for k, v in spec.raw.items() if k not in ("project", "entity")}
    if spec.metric and isinstance(config.get("metric"), dict):
        config["metric"] = {**config["metric"], "name": spec.metric}
    return config


def check_wandb(timeout_s: float = 30.0, env: Mapping[str, str] | None = None) -> str:
    """The W&B server URL when a key exists and the server accepts a connection; else WandbUnavailable."""
    env = dict(os.environ if env is None else env)
    mode = resolve_mode(env)
    var = "WANDB_MODE" if (env.get("WANDB_MODE") or "").strip() else "WANDB_DISABLED"
    if mode == "disabled" or (mode == "offline" and var == "WANDB_MODE"):  # switched off, not logged out
        raise WandbUnavailable(
            f"{var}={env.get(var)}: W&B sweeps need the W&B server; unset {var} or use --backend local"
        )
    if not is_logged_in(env):
        raise WandbUnavailable(
            "no W&B API key: run `wandb login` or set WANDB_API_KEY, or use --backend local"
        )
    url = server_url(env)
    why = probe(url, timeout_s)
    if why is not None:
        raise WandbUnavailable(f"cannot reach the W&B server at {url} within {timeout_s:g} s ({why})")
    return url


def agent_values(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The values the W&B agent chose for this run, as flat CLI keys (``model.lr``)."""
    env = os.environ if env is None else env
    path = env.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        raise RuntimeError("not inside a W&B sweep agent run (no WANDB_SWEEP_PARAM_PATH)")
    raw = yaml.safe_load(Path(path).read_text()) or {}
    out: dict[str, Any] = {}
    for key, item in raw.items():
        if key == "wandb_version":  # the file's format marker, not a parameter
            continue
        value = item.get("value") if isinstance(item, dict) and "value" in item else item
        # W&B's nested parameters arrive as nested dicts
        out.update({cli_key(sub): v for sub, v in flatten(value, str(key)).items()})
    return out


def _bounded(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """``fn()`` in a daemon thread; WandbUnavailable if it raises or takes longer than ``timeout_s``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="wandb-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise WandbUnavailable(
            f"{what}: no answer within {timeout_s:g} s (set --wandb-timeout to wait longer)"
        )
    if "error" in box:
        raise WandbUnavailable(f"{what} failed: {type(box['error']).__name__}: {box['error']}")
    return box["value"]
