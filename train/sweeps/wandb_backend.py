"""The W&B sweep backend: the W&B controller picks values; each trial is a normal ``neurotrain fit``.

    run_wandb(spec, count=10, project="neurotrain")   # wandb.sweep(...) then wandb.agent(...) here

Before anything is created, W&B must be usable: no API key fails at once; a server that cannot be
reached, or does not answer, fails within ``timeout_s`` (default 30 s), each with a clear
``WandbUnavailable`` message (``neurotrain sweep --backend auto`` then runs the sweep locally).

Inside ``wandb.agent`` the agent puts the run id, the sweep id and a file of the chosen values in the
environment (``WANDB_RUN_ID``, ``WANDB_SWEEP_ID``, ``WANDB_SWEEP_PARAM_PATH``); the trial process
inherits them, so its W&B run is the sweep's run, and the values become ``--model.lr=…`` overrides.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from neurotrain.train.sweeps.schema import SweepSpec, cli_key

DEFAULT_BASE_URL = "https://api.wandb.ai"


class WandbUnavailable(RuntimeError):
    """W&B cannot run this sweep (no key, offline, server unreachable or silent)."""


def run_wandb(
    spec: SweepSpec,
    *,
    count: int | None = None,
    extra: list[str] = (),
    root: str | Path = "checkpoints",
    project: str = "neurotrain",
    entity: str | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Create the sweep on the W&B server and run an agent here for ``count`` trials; exit code."""
    url = check_wandb(timeout_s)
    import wandb

    config = {k: v for k, v in spec.raw.items() if k not in ("project", "entity")}
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
        cmd = [
            sys.executable,
            "-m",
            "neurotrain.train.cli",
            *spec.base_args(),
            *extra,
            *spec.trial_args(values),
            f"--trainer.default_root_dir={root}",
            f"--run_name={run_name}",
            f"--group={spec.name}-{sweep_id}",
            f"--sweep_id={sweep_id}",
            f"--sweep_params={json.dumps(values)}",
            f"--wandb_project={spec.raw.get('project') or project}",
        ]
        if spec.metric:
            cmd.append(f"--monitor={spec.metric}")
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            failures.append(run_name)
            print(f"trial {run_name} failed (exit code {rc}); the sweep goes on", flush=True)

    wandb.agent(
        sweep_id, function=trial, project=spec.raw.get("project") or project, entity=entity, count=count
    )
    print(f"W&B sweep {sweep_id}: agent done, {len(failures)} failed trial(s); see {url}", flush=True)
    return 0


def check_wandb(timeout_s: float = 30.0, env: dict[str, str] | None = None) -> str:
    """The W&B server URL when a key exists and the server accepts a connection; else WandbUnavailable."""
    from neurotrain.train.tracking.wandb_server import is_logged_in

    env = dict(os.environ if env is None else env)
    mode = (env.get("WANDB_MODE") or "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        raise WandbUnavailable(
            f"WANDB_MODE={mode}: W&B sweeps need the W&B server; unset WANDB_MODE or use --backend local"
        )
    if not is_logged_in(env):
        raise WandbUnavailable(
            "no W&B API key: run `wandb login` or set WANDB_API_KEY, or use --backend local"
        )
    url = env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        raise WandbUnavailable(
            f"cannot reach the W&B server at {url} within {timeout_s:g} s ({exc})"
        ) from exc
    return url


def agent_values(env: dict[str, str] | None = None) -> dict[str, Any]:
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
        if isinstance(value, dict):  # W&B's nested parameters arrive as nested dicts
            for sub, v in _flatten(value, key).items():
                out[cli_key(sub)] = v
        else:
            out[cli_key(key)] = value
    return out


def _flatten(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}"
        out.update(_flatten(value, full) if isinstance(value, dict) else {full: value})
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
