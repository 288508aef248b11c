"""Weights & Biases tracking for every ``neurotrain fit | validate | test`` run, online or offline.

``neurotrain fit`` attaches, after the CSV logger, a `RunWandbLogger` whose files live in the run folder
(``<run_dir>/wandb/``) and a `WandbRunTracker` callback that records what Lightning does not::

    mode = resolve_mode()                      # WANDB_MODE wins; else online when logged in, else offline
    logger = wandb_logger(run_dir, mode=mode, project="neurotrain", name="pre1", job_type="pretrain")
    tracker = WandbRunTracker(config=cli_config, provenance={...}, monitor="val/loss", mode="min")

Offline is first-class: the run is written under ``<run_dir>/wandb/offline-run-*`` with no network call,
one line says how to upload it (``neurotrain sync <run_dir>``), and ``WANDB_MODE=disabled`` attaches no
W&B logger at all (the local run folder is still complete). Only global rank zero creates a run:
Lightning's ``rank_zero_experiment`` gives other ranks a dummy, and the tracker acts on rank zero only.
A resumed fit continues the W&B run whose id its ``summary.json`` recorded (``run_id``), online or
offline, so one run holds the whole history.

The best checkpoint becomes a ``model`` artifact at the end of fit: ``file`` uploads it, ``reference``
records a ``file://`` reference (checksum and path, no copy), ``auto`` (default) means ``file`` online,
so other machines can start from it, and ``reference`` offline, where the checkpoint already sits in
the run folder and a second copy would only fill the disk. A fine-tune names it with
``--model.init_from=wandb:ENTITY/PROJECT/model-RUNID:best`` (online only; `resolve_init_from`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only, rank_zero_warn

from neurotrain.train.tracking.run_folder import read_summary
from neurotrain.train.tracking.wandb_server import WandbMode

ArtifactPolicy = Literal["auto", "file", "reference", "none"]
WANDB_PREFIX = "wandb:"
# wandb.init waits 90 s by default for its service; online with a dead network that is too long, and
# offline the wait is local only, so a shorter bound costs nothing.
INIT_TIMEOUT_S = 30.0


class TrackingError(RuntimeError):
    """A W&B request that cannot be served (e.g. an artifact named while offline)."""


def wandb_logger(
    run_dir: str | Path,
    *,
    mode: WandbMode,
    project: str = "neurotrain",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    job_type: str | None = None,
    run_id: str | None = None,
) -> RunWandbLogger:
    """A WandbLogger writing into ``<run_dir>/wandb``, its run started now on global rank zero.

    The run is created here with ``wandb.init`` (rank zero only; other ranks get Lightning's dummy
    experiment) and handed to the logger, so an online start that fails (no network, bad key,
    server down) can fall back to offline with a warning instead of stopping the training.

    ``run_id`` continues that W&B run (``resume="allow"``: the same run when it exists, a new one
    with that id otherwise), as a resumed fit does with the id its ``summary.json`` recorded.
    Online the history goes on in the same run. Offline, W&B 0.31 writes each process into its own
    ``wandb/offline-run-<time>-<id>`` folder, the later ones marked ``resume``; ``wandb sync`` (and
    ``neurotrain sync``, which passes every unsynced part together) uploads the parts of one id in
    order of start time into that one run.
    """
    kwargs: dict[str, Any] = {
        "dir": str(run_dir),
        "project": project,
        "entity": entity,
        "name": name,
        "group": group,
        "tags": list(tags or []) or None,
        "job_type": job_type,
    }
    if run_id:
        kwargs.update(id=run_id, resume="allow")
    run, started = None, mode
    if rank_zero_only.rank == 0:
        run, started = _start_run(Path(run_dir), mode, kwargs)
    names = {k: v for k, v in kwargs.items() if k not in ("dir", "id", "resume")}
    return RunWandbLogger(mode=started, experiment=run, save_dir=str(run_dir), **names)


def _start_run(run_dir: Path, mode: WandbMode, kwargs: dict[str, Any]) -> tuple[Any, WandbMode]:
    """``wandb.init`` in ``mode``; an online start that fails is retried offline (said once)."""
    run = None
    if mode == "online":
        try:
            run = _init("online", kwargs)
        except Exception as exc:  # no network, bad key, server down: keep training, offline
            rank_zero_warn(f"W&B online start failed ({type(exc).__name__}: {exc}); logging offline instead")
            print_offline_hint(run_dir)
            mode = "offline"
    if run is None:
        try:
            run = _init("offline", kwargs)
        except Exception as exc:
            if not _id_in_use(exc):
                raise
            rank_zero_warn(
                f"W&B run {kwargs['id']} is still held by the W&B service of a process that ended; "
                "this run logs into a new W&B run instead"
            )
            fresh = {k: v for k, v in kwargs.items() if k not in ("id", "resume")}
            run = _init("offline", fresh)
    # Charts over the trainer's step, which Lightning's logger adds to every row it logs.
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return run, mode


def _init(mode: WandbMode, kwargs: dict[str, Any]) -> Any:
    """``wandb.init``; a resumed id starts in a W&B service of this process's own.

    A W&B service is shared with child processes through ``WANDB_SERVICE`` (a sweep or a test
    runner that started the fit); when the process that had the run was killed, that service
    keeps its stream open a while and refuses the id ("run ID ... is in use").
    """
    import wandb

    if "id" in kwargs:
        os.environ.pop("WANDB_SERVICE", None)
    return wandb.init(mode=mode, settings=_settings(offline=mode == "offline"), **kwargs)


def _id_in_use(exc: BaseException) -> bool:
    return "is in use" in str(exc)


def _settings(offline: bool) -> Any:
    import wandb

    extra: dict[str, Any] = {}
    if offline:  # our one line replaces W&B's banner and its "wandb sync" hint
        extra["silent"] = True
    if "WANDB_INIT_TIMEOUT" not in os.environ:  # explicit settings would override the user's variable
        extra["init_timeout"] = INIT_TIMEOUT_S
    return wandb.Settings(**extra)


@rank_zero_only
def print_offline_hint(run_dir: str | Path) -> None:
    """The one line an offline run prints: where it is and how to upload it."""
    print(
        f"W&B offline: this run is saved under {Path(run_dir) / 'wandb'}; upload it later with "
        f"`neurotrain sync {run_dir}`",
        file=sys.stderr,
    )


class RunWandbLogger(WandbLogger):
    """WandbLogger over a run `wandb_logger` started, finished when the stage ends.

    Lightning leaves the W&B run open after ``fit``; a second run in the same process (tests, a
    chain of fits) would then be appended to the first. Finishing in ``finalize`` closes it with exit
    code 0 on success and 1 on failure, which W&B shows as finished or failed; the logger serves one
    stage (``neurotrain`` runs one subcommand per process). ``mode`` says where the run went.
    """

    def __init__(self, *, mode: WandbMode, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self._finished = False

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        # Under ``hparams``: the top level of the W&B config is the resolved CLI config, and the module's
        # and datamodule's hyperparameters (normalisation tables included) would bury it.
        super().log_hyperparams({"hparams": dict(params) if isinstance(params, Mapping) else vars(params)})

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._finished:
            return
        self._finished = True
        self.experiment.finish(exit_code=0 if status == "success" else 1)


class WandbRunTracker(Callback):
    """Records the resolved config, provenance, best monitored value and best checkpoint artifact.

    Args:
        config: the full resolved LightningCLI config as a nested dict (what ``config.yaml`` holds).
        provenance: JSON-able facts stored under ``neurotrain`` in the W&B config (git, data manifest
            hashes, dataset names, versions, job type, parent run).
        monitor, mode: the metric whose best value goes to ``summary["best/<monitor>"]``.
        artifact: ``auto`` | ``file`` | ``reference`` | ``none`` (see the module docstring).
        use_artifact: a W&B artifact name this run started from, linked as its input when online.
        best, best_step: the best value so far, when the run resumes one that recorded it.
    """

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        provenance: Mapping[str, Any],
        monitor: str,
        mode: str = "min",
        artifact: ArtifactPolicy = "auto",
        use_artifact: str | None = None,
        best: float | None = None,
        best_step: int | None = None,
    ) -> None:
        self.config = dict(config)
        self.provenance = dict(provenance)
        self.monitor = monitor
        self.mode = mode
        self.artifact = artifact
        self.use_artifact = use_artifact
        self.best: float | None = best
        self.best_step: int | None = best_step

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = find_wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        run = logger.experiment
        dm = trainer.datamodule
        manifests = getattr(dm, "manifests", None) or []
        data = {
            "datasets": list(getattr(dm, "datasets", []) or []),
            "manifest_sha256": [m.get("_sha256") for m in manifests],
        }
        run.config.update(
            {**self.config, "neurotrain": {**self.provenance, "data": data}}, allow_val_change=True
        )
        if self.use_artifact and not getattr(run, "offline", True):
            run.use_artifact(self.use_artifact)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = find_wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.best_step = value, trainer.global_step
        summary = logger.experiment.summary
        summary[f"best/{self.monitor}"] = self.best
        summary["best/step"] = self.best_step

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = find_wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero or self.artifact == "none":
            return
        ckpt = trainer.checkpoint_callback
        path = (getattr(ckpt, "best_model_path", "") or getattr(ckpt, "last_model_path", "")) if ckpt else ""
        if not path or not Path(path).exists():
            return
        try:
            log_checkpoint_artifact(logger.experiment, Path(path), self._policy(logger), self._metadata(ckpt))
        except Exception as exc:  # the checkpoint is safe on disk; a failed upload must not fail the run
            rank_zero_warn(f"could not log {path} as a W&B artifact: {type(exc).__name__}: {exc}")

    def _policy(self, logger: RunWandbLogger | WandbLogger) -> str:
        if self.artifact != "auto":
            return self.artifact
        return "reference" if getattr(logger.experiment, "offline", False) else "file"

    def _metadata(self, ckpt: Any) -> dict[str, Any]:
        score = getattr(ckpt, "best_model_score", None)
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "score": float(score) if score is not None else None,
            **{k: self.provenance.get(k) for k in ("job_type", "git")},
        }


def log_checkpoint_artifact(run: Any, path: Path, policy: str, metadata: dict[str, Any]) -> Any:
    """Log ``path`` (file, or DeepSpeed folder) as artifact ``model-<run id>`` aliased ``best``."""
    import wandb

    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
    path = path.resolve()
    if policy == "reference":
        artifact.add_reference(path.as_uri(), name=path.name)
    elif path.is_dir():
        artifact.add_dir(str(path), name=path.name)
    else:
        artifact.add_file(str(path), name=path.name)
    return run.log_artifact(artifact, aliases=["best", "latest"])


def recorded_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id a run folder's ``summary.json`` recorded (None when it had no W&B run)."""
    info = (read_summary(run_dir) or {}).get("wandb") or {}
    run_id = info.get("id")
    return str(run_id) if run_id and info.get("mode") in ("online", "offline") else None


def find_wandb_logger(trainer: pl.Trainer) -> WandbLogger | None:
    """The trainer's W&B logger, if one is attached (none with ``WANDB_MODE=disabled``)."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def resolve_init_from(value: str, root: str | Path, mode: WandbMode) -> str:
    """A local checkpoint path for ``init_from``: ``wandb:ENTITY/PROJECT/NAME:VERSION`` is downloaded.

    Offline or disabled W&B cannot fetch an artifact; the error says what to use instead.
    """
    if not value.startswith(WANDB_PREFIX):
        return value
    name = value.removeprefix(WANDB_PREFIX)
    if mode != "online":
        raise TrackingError(
            f"--model.init_from={value} names a W&B artifact, but W&B is {mode} here (WANDB_MODE or no "
            "login); log in (`wandb login`) or pass the checkpoint's local path"
        )
    import wandb

    try:
        artifact = wandb.Api(timeout=INIT_TIMEOUT_S).artifact(name, type="model")
        folder = Path(artifact.download(root=str(Path(root) / name.replace("/", "_").replace(":", "_"))))
    except Exception as exc:
        raise TrackingError(f"could not fetch W&B artifact {name}: {type(exc).__name__}: {exc}") from exc
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) != 1:
        raise TrackingError(
            f"W&B artifact {name} holds {len(entries)} entries in {folder}; expected 1 checkpoint"
        )
    return str(entries[0])


def parent_run_info(init_from: str | None) -> dict[str, Any]:
    """The run a fine-tune starts from: the ``init_from`` value and, when its run folder is found
    (``<run>/checkpoints/<ckpt>`` or up to 3 folders above the file), that run's name and W&B id."""
    if not init_from:
        return {}
    info: dict[str, Any] = {"parent_run": init_from}
    path = Path(init_from)
    for folder in list(path.parents)[:3]:
        summary = read_summary(folder)
        if summary:
            info["parent_run_dir"] = str(folder)
            info["parent_run_name"] = summary.get("name")
            info["parent_wandb_id"] = (summary.get("wandb") or {}).get("id")
            break
    return info
