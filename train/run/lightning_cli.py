"""``neurotrain fit | validate | test | predict``: LightningCLI over our modules and ShardDataModule.

Every class signature is the config schema, so a shipped YAML plus ``--model.optimizer.lr=3e-4`` style
overrides (what W&B sweeps pass) configure a run with no glue::

    neurotrain fit --config eeg_pretrain --run_name pre1
    neurotrain fit --config eeg_finetune --model.init_from=checkpoints/pre1/checkpoints/last.ckpt
    neurotrain fit --config eeg_pretrain --ckpt_path last --run_name pre1  # resume

``--config NAME`` reads a shipped config (``train/configs/NAME.yaml``) from any folder; a path that
exists wins (``train/run/configs.py``). Relative paths inside a config stay relative to the
working folder.

Each run lives in ``<trainer.default_root_dir>/<run_name>/`` (default root ``checkpoints``):
``config.yaml`` (the resolved config), ``metrics.csv``, and ``checkpoints/`` with the best-k
and ``last.ckpt``, each self-describing (see ``train/run/callbacks.py``). One live process runs in
a run folder (a lock, ``train/tracking/run_lock.py``): a second run of the same name is refused
while the first lives, and a ``fit`` into a folder that holds checkpoints is refused unless it
continues them (``--ckpt_path last``). A resumed fit validates an epoch whose validation the
interruption skipped and goes on in the same W&B run. Data, checkpoint, tracking and run-folder
errors print ``error: <message>`` and exit 2 (``--verbose``: the traceback).

Progress: a terminal gets Lightning's bar; where stdout or stderr is not a terminal (nohup, SLURM,
CI), a plain line on stderr every ``--progress_every_s`` seconds (``train/run/progress.py``). Lightning's messages
that ask nothing of the user are silenced by message (``train/run/quiet.py``).

Every fit/validate/test is also a W&B run (``train/tracking/wandb_run.py``), online when logged in and offline
otherwise (``WANDB_MODE`` wins; ``disabled`` attaches none), with its files in ``<run>/wandb/``; and
validations draw figures into ``<run>/media/`` (``train/run/media.py``)::

    neurotrain fit --config eeg_pretrain --run_name pre1 --group eeg --tags=[tiny] \
        --wandb_project neurotrain --wandb_artifact auto --media_every_n_val 1
    neurotrain fit --config eeg_finetune --model.init_from=wandb:me/neurotrain/model-ID:best
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import yaml
from jsonargparse import ActionYesNo, Namespace
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.strategies import DeepSpeedStrategy
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from neurotrain.datamodules.format.manifest import ManifestError
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.tar_index import CorruptShardError
from neurotrain.models.checkpoint_io import CheckpointError, check_checkpoint
from neurotrain.models.metric_names import metric_mode
from neurotrain.train.run import strategies
from neurotrain.train.run.callbacks import (
    BestCheckpoint,
    CheckpointMetadata,
    FinalValidation,
    ResumeCheckpoint,
    throughput_monitor,
)
from neurotrain.train.run.configs import ConfigNameError, resolve_config_args
from neurotrain.train.run.media import ValidationMedia
from neurotrain.train.run.predictions import HeldOutPredictions
from neurotrain.train.run.progress import LogProgress
from neurotrain.train.run.quiet import quiet_lightning
from neurotrain.train.run.threads import set_compute_threads
from neurotrain.train.tracking import wandb_run as tracking
from neurotrain.train.tracking.csv_logger import csv_logger
from neurotrain.train.tracking.provenance import git_info, package_versions
from neurotrain.train.tracking.run_folder import RunFolderError, read_summary
from neurotrain.train.tracking.run_lock import RunLock, claim_run_folder
from neurotrain.train.tracking.run_record import RunRecord
from neurotrain.train.tracking.wandb_server import WandbMode, resolve_mode

COMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_ROOT = "checkpoints"


class NeurotrainCLI(LightningCLI):
    """LightningCLI with a run folder per run, checkpoints, throughput and fine-tuning normalisation."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # ``--verbose`` is ours on every subcommand (full tracebacks of errors); the ``verbose`` of
        # Trainer.validate/test (print the results) is left at its default, on.
        return {name: {*skip, "verbose"} for name, skip in LightningCLI.subcommands().items()}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_name", type=str | None, default=None, help="run folder name (default: config + time)"
        )
        parser.add_argument("--group", type=str | None, default=None, help="group of runs (e.g. a sweep)")
        parser.add_argument("--tags", type=list[str], default=[], help="free-form tags")
        parser.add_argument("--sweep_id", type=str | None, default=None, help="the sweep this run belongs to")
        parser.add_argument(
            "--sweep_params", type=dict | None, default=None, help="the swept values of this run (JSON)"
        )
        parser.add_argument("--monitor", type=str | None, default=None, help="metric for best checkpoints")
        parser.add_argument("--save_top_k", type=int, default=2, help="best checkpoints kept")
        parser.add_argument(
            "--throughput_window",
            type=int,
            default=20,
            help="steps throughput is averaged over (logged every trainer.log_every_n_steps)",
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int | None,
            default=None,
            help="also refresh last.ckpt every N steps",
        )
        parser.add_argument("--wandb_project", type=str, default="neurotrain", help="W&B project")
        parser.add_argument("--wandb_entity", type=str | None, default=None, help="W&B entity (user or team)")
        parser.add_argument(
            "--wandb_artifact",
            type=Literal["auto", "file", "reference", "none"],
            default="auto",
            help="best checkpoint as a W&B artifact: file (upload), reference (file:// path), none; "
            "auto = file online, reference offline",
        )
        parser.add_argument(
            "--media_every_n_val",
            type=int,
            default=1,
            help="validation figures every N validations (0: none)",
        )
        parser.add_argument("--media_examples", type=int, default=2, help="reconstruction examples drawn")
        parser.add_argument(
            "--threads",
            type=int | None,
            default=None,
            help="PyTorch compute threads of this process (default: PyTorch's, one per core or "
            "OMP_NUM_THREADS; train/run/threads.py)",
        )
        parser.add_argument(
            "--progress_every_s",
            type=float,
            default=30.0,
            help="where stdout or stderr is not a terminal (nohup, SLURM, CI): a progress line on stderr "
            "every N seconds "
            "(0: Lightning's own bar); a terminal always gets Lightning's bar",
        )
        parser.add_argument(
            "--verbose",
            action=ActionYesNo,
            default=False,
            help="show the full traceback of data, checkpoint, tracking and run-folder errors "
            "(default: a one-line 'error: ...' and exit code 2)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Before Lightning reads the checkpoint's hyperparameters and before anything is built.
        _check_ckpt_path(self.config)

    def before_instantiate_classes(self) -> None:
        # ``init_from`` may name a W&B artifact; the model needs a local file, so fetch it first.
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        # before any model or loader exists
        self.threads = set_compute_threads(cfg.get("threads"))
        self.wandb_mode: WandbMode = resolve_mode()
        self.init_artifact: str | None = None
        value = cfg.get("model.init_args.init_from")
        if isinstance(value, str) and value.startswith(tracking.WANDB_PREFIX):
            root = Path(cfg.get("trainer.default_root_dir") or DEFAULT_ROOT) / "artifacts"
            cfg["model.init_args.init_from"] = tracking.resolve_init_from(value, root, self.wandb_mode)
            self.init_artifact = value.removeprefix(tracking.WANDB_PREFIX)
        init_from = cfg.get("model.init_args.init_from")
        if (
            isinstance(init_from, str)
            and Path(init_from).is_file()
            and not init_from.endswith(".safetensors")
        ):
            # the model loads it weights-only; checked here so a refusal is one line, not a parser error
            check_checkpoint(init_from)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        init = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_cfg = init.get("trainer") or {}
        root = Path(trainer_cfg.get("default_root_dir") or DEFAULT_ROOT)
        self.run_name = cfg.get("run_name") or _default_run_name(cfg)
        self.run_dir = root / self.run_name
        self.resume = resume = self._claim_run_folder(cfg)
        monitor = cfg.get("monitor") or getattr(self.model, "monitor", "val/loss")
        mode = getattr(self.model, "monitor_mode", "min") if not cfg.get("monitor") else metric_mode(monitor)
        every = cfg.get("checkpoint_every_n_steps")
        ckpt_dir = self.run_dir / "checkpoints"
        callbacks = [
            BestCheckpoint(  # none in a fit without validation
                dirpath=ckpt_dir,
                filename="best-{epoch}-{step}",
                monitor=monitor,
                mode=mode,
                save_top_k=cfg.get("save_top_k", 2),
                save_last=False,  # ResumeCheckpoint keeps last.ckpt
            ),
            # last.ckpt at each epoch end and, with checkpoint_every_n_steps, every N optimizer steps
            # (never between a step and the validation due after it)
            ResumeCheckpoint(ckpt_dir, every_n_train_steps=every),
            FinalValidation(),
            CheckpointMetadata(),
            throughput_monitor(
                getattr(getattr(self.model, "encoder", None), "patch_size", None),
                cfg.get("throughput_window", 20),
            ),
        ]
        job_type = "eval" if self.subcommand in ("validate", "test", "predict") else self.model.job_type
        parent = tracking.parent_run_info(getattr(self.model, "hparams", {}).get("init_from"))
        if self.init_artifact:
            parent["parent_artifact"] = self.init_artifact
        callbacks.append(
            RunRecord(
                self.run_dir,
                name=self.run_name,
                group=cfg.get("group"),
                tags=cfg.get("tags") or [],
                job_type=job_type,
                monitor=monitor,
                sweep_id=cfg.get("sweep_id"),
                sweep_params=cfg.get("sweep_params"),
                mode=mode,
                parent_run=getattr(self.model, "hparams", {}).get("init_from"),
                extra={"datasets": list(getattr(self.datamodule, "datasets", []) or []), **parent},
                resume=resume,
            )
        )
        from neurotrain.models.modules import RegressorModule

        classifier = getattr(self.model, "monitor", None) == "val/balanced_accuracy"
        if classifier or isinstance(self.model, RegressorModule):
            callbacks.append(HeldOutPredictions(self.run_dir))
        if cfg.get("media_every_n_val", 1) > 0:
            callbacks.append(
                ValidationMedia(cfg.get("media_every_n_val", 1), examples=cfg.get("media_examples", 2))
            )
        kwargs["default_root_dir"] = str(self.run_dir)
        if trainer_cfg.get("logger") in (None, True):
            # The CSV logger first: trainer.log_dir is its folder, where config.yaml is written.
            kwargs["logger"] = [csv_logger(self.run_dir, resume=resume)]
            # fast_dev_run replaces every logger with a dummy, so a W&B run would stay empty.
            if (
                self.subcommand != "predict"
                and self.wandb_mode != "disabled"
                and not trainer_cfg.get("fast_dev_run")
            ):
                kwargs["logger"].append(self._wandb_logger(cfg, job_type))
                callbacks.append(
                    tracking.WandbRunTracker(
                        config=self._resolved_config(cfg),
                        provenance={
                            "job_type": job_type,
                            "git": git_info(),
                            "versions": package_versions(),
                            **parent,
                        },
                        monitor=monitor,
                        mode=mode,
                        artifact=cfg.get("wandb_artifact", "auto"),
                        use_artifact=self.init_artifact,
                        **self._recorded_best(monitor),
                    )
                )
        existing = trainer_cfg.get("callbacks") or []
        if _log_progress(trainer_cfg, existing, cfg.get("progress_every_s", 30.0)):
            callbacks.append(LogProgress(cfg.get("progress_every_s", 30.0)))
        kwargs["callbacks"] = [*existing, *callbacks]
        trainer = super().instantiate_trainer(**kwargs)
        if isinstance(trainer.strategy, DeepSpeedStrategy) and isinstance(trainer.strategy.config, dict):
            # Lightning reads the micro-batch size off a DataLoader's batch sampler; ours batches
            # inside the stream, so tell DeepSpeed directly.
            batch = getattr(getattr(self.datamodule, "hparams", {}), "get", lambda *_: None)("batch_size")
            trainer.strategy.config.setdefault("train_micro_batch_size_per_gpu", batch or 1)
        return trainer

    def _claim_run_folder(self, cfg: Any) -> bool:
        """Lock the run folder for this run (global rank zero) and say whether the run resumes it.

        See `neurotrain.train.tracking.run_lock`: a folder a live run holds is refused; a ``fit``
        without a checkpoint to continue from is refused where checkpoints exist (pass
        ``--ckpt_path last`` or choose another ``--run_name``), and started over with a warning
        where the old run left none. ``build_cli`` releases the lock when the run ends.
        """
        ckpt_path = cfg.get("ckpt_path")
        if not _is_global_rank_zero():  # rank zero holds the lock and writes the record
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return bool(ckpt_path)
        lock, resume = claim_run_folder(
            self.run_dir, fit=self.subcommand == "fit", ckpt_path=str(ckpt_path) if ckpt_path else None
        )
        _HELD_LOCKS.append(lock)
        return resume

    def _resumed_fit(self) -> bool:
        return self.subcommand == "fit" and getattr(self, "resume", False)

    def _recorded_best(self, monitor: str) -> dict[str, Any]:
        """The best monitored value the resumed run recorded, for the W&B summary to go on from."""
        if not self._resumed_fit():
            return {}
        recorded = (read_summary(self.run_dir) or {}).get("monitor") or {}
        if recorded.get("name") != monitor or recorded.get("best") is None:
            return {}
        return {"best": recorded["best"], "best_step": recorded.get("best_step")}

    def _wandb_logger(self, cfg: Any, job_type: str) -> tracking.RunWandbLogger:
        if self.wandb_mode == "offline":
            tracking.print_offline_hint(self.run_dir)
        return tracking.wandb_logger(
            self.run_dir,
            mode=self.wandb_mode,
            project=cfg.get("wandb_project") or "neurotrain",
            entity=cfg.get("wandb_entity"),
            name=self.run_name,
            group=cfg.get("group"),
            tags=cfg.get("tags") or [],
            job_type=job_type,
            # a resumed fit goes on in the W&B run its summary.json recorded
            run_id=tracking.recorded_run_id(self.run_dir) if self._resumed_fit() else None,
        )

    def _resolved_config(self, cfg: Any) -> dict[str, Any]:
        """The full config as config.yaml holds it (same parser dump), as plain nested data."""
        return yaml.safe_load(self._parser(self.subcommand).dump(cfg, skip_none=False)) or {}

    def before_fit(self) -> None:
        self._check_resolved_ckpt_path()
        _share_normalization(self.model, self.datamodule)

    def _check_resolved_ckpt_path(self) -> None:
        """``--ckpt_path last|hpc`` name files only the trainer can find: check each candidate."""
        value = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        candidates: set[Path] = set()
        if value == "last":  # Lightning picks the newest last*.ckpt of a ModelCheckpoint's folder
            for cb in self.trainer.checkpoint_callbacks:
                if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                    candidates |= set(Path(cb.dirpath).glob(f"{cb.CHECKPOINT_NAME_LAST}*{cb.FILE_EXTENSION}"))
        elif value == "hpc":
            candidates |= set(Path(self.trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"))
        for path in sorted(candidates):
            check_checkpoint(path)

    before_validate = before_test = before_predict = before_fit


def run_lightning(argv: list[str]) -> int:
    """Run one LightningCLI subcommand with ``argv`` (``["fit", "--config", …]``); exit code.

    The errors a user can act on (`_USER_ERRORS`) end the command with ``error: <message>`` on
    one line and exit code 2; ``--verbose`` raises them instead, with the full traceback.
    """
    try:
        build_cli(argv)
    except _USER_ERRORS as exc:
        # e.g. a W&B artifact named while offline, a dataset of an unknown manifest schema, a
        # checkpoint that is not weights-only, a corrupt shard, a run folder in use: a message,
        # not a traceback
        if _verbose(argv):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0


_USER_ERRORS = (
    tracking.TrackingError,
    ManifestError,
    CheckpointError,
    CorruptShardError,
    RunFolderError,
    ConfigNameError,
)


def _log_progress(trainer_cfg: Any, callbacks: list[Any], every_s: float | None) -> bool:
    """Whether the run gets `LogProgress`: stdout or stderr is not a terminal (Lightning's Rich bar
    draws on stdout, TQDM on stderr), the progress bar is not turned off
    (``--trainer.enable_progress_bar=false``), no progress bar is configured, and N > 0."""
    return (
        not (sys.stdout.isatty() and sys.stderr.isatty())
        and trainer_cfg.get("enable_progress_bar") is not False
        and not any(isinstance(cb, ProgressBar) for cb in callbacks)
        and bool(every_s)
        and float(every_s) > 0
    )


def _verbose(argv: list[str]) -> bool:
    """``--verbose`` on the command line (the last of ``--verbose`` and ``--no_verbose`` wins)."""
    flags = [arg for arg in argv if arg in ("--verbose", "--no_verbose")]
    return bool(flags) and flags[-1] == "--verbose"


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; for an error re-raised from a DataLoader worker (its
    message then holds the worker's traceback), the original message."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1].strip()
        prefix = f"{type(exc).__name__}: "
        text = last.split(prefix, 1)[1] if prefix in last else last
    return " ".join(text.split("\n"))


_HELD_LOCKS: list[RunLock] = []  # run-folder locks taken by the CLIs `build_cli` is running


def _is_global_rank_zero() -> bool:
    """The process that writes a run's record: global rank zero, on node zero (set before launch)."""
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") in ("", "0")


def build_cli(args: list[str] | Namespace) -> NeurotrainCLI:
    """Parse, build model, data and trainer, and run the subcommand; returns the CLI.

    ``args`` is a command line (``["fit", "--config", …]``) or a ``fit`` config as `load_config`
    returns it (a jsonargparse Namespace, changed by key: ``cfg["trainer.max_steps"] = 300``).
    """
    # a command line's ``--config NAME``: a shipped config, from any folder
    args = Namespace(subcommand="fit", fit=args) if isinstance(args, Namespace) else resolve_config_args(args)
    strategies.register_strategies()
    held = len(_HELD_LOCKS)
    try:
        with warnings.catch_warnings():
            # Called from Python (quickstart, tests) argv is not sys.argv, which LightningCLI warns about.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            quiet_lightning()  # Lightning's messages that ask nothing of the user, by message
            subclass_data = (
                data_names_a_class(args) if isinstance(args, list) else bool(args.get("fit.data.class_path"))
            )
            return NeurotrainCLI(
                model_class=pl.LightningModule,
                subclass_mode_model=True,
                # A config whose data section names its class (``data: {class_path: ...}``, e.g.
                # the paired T1 + fMRI datamodule of fusion_pretrain) gets any LightningDataModule;
                # every other config's data section is ShardDataModule's arguments, as before.
                datamodule_class=pl.LightningDataModule if subclass_data else ShardDataModule,
                subclass_mode_data=subclass_data,
                args=args,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"prog": "neurotrain", "default_env": False},
                auto_configure_optimizers=False,
            )
    finally:  # the run is over (or never started): its folder is free again
        while len(_HELD_LOCKS) > held:
            _HELD_LOCKS.pop().release()


def data_names_a_class(argv: list[str]) -> bool:
    """Whether a command line's config files give ``data`` a ``class_path`` (or it is passed)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--data.class_path") or arg.startswith("--data=") and "class_path" in arg:
            return True
        path = argv[i + 1] if arg in ("--config", "-c") and i + 1 < len(argv) else None
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        if path and Path(path).is_file():
            try:
                data = (yaml.safe_load(Path(path).read_text()) or {}).get("data")
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and "class_path" in data:
                return True
    return False


class _ConfigOnly(NeurotrainCLI):
    """The CLI's parser and nothing else: nothing is seeded, fetched (W&B artifacts) or instantiated.

    LightningCLI seeds in its constructor, between parsing and instantiating, with the parsed
    ``seed_everything`` (the shipped configs say 0, hence a "Seed set to 0" per parse). Only the
    parse is wanted here: the parse hook hands the constructor ``seed_everything: false`` and keeps
    the parsed value in ``seed``, put back before the (skipped) instantiation, so the config is the
    one parsed. `build_cli` seeds when the config runs. One instance parses many command lines
    (`config_of`): building the parser (every class signature) is the slow part.
    """

    seed: Any = False

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        self.seed = self.config.get("seed_everything", False)
        self.config["seed_everything"] = False  # LightningCLI's constructor seeds from this key

    def before_instantiate_classes(self) -> None:
        self.config["seed_everything"] = self.seed

    def instantiate_classes(self) -> None:
        pass

    def config_of(self, argv: list[str]) -> Namespace:
        """``argv`` parsed by this CLI's parser (built once), through the same parse hook; a new Namespace."""
        self.parse_arguments(self.parser, argv)
        self.config["seed_everything"] = self.seed
        return self.config


_CONFIG_CLI: dict[bool, _ConfigOnly] = {}  # the parse-only CLIs of this process (data named by class or not)
_CONFIG_LOCK = threading.Lock()  # its parse hook keeps the config on the instance


def load_config(argv: list[str]) -> Namespace:
    """The ``fit`` config of ``argv`` (``["--config", F, "--model.x=…"]``, a leading ``fit`` allowed).

    The same parser and schema as ``neurotrain fit`` (every class signature), without running
    anything: no class is built and nothing is seeded (``seed_everything`` stays as parsed). The
    parser is built on the first call and reused by later ones, so checking many command lines (a
    sweep's parameters) costs one parse each. `build_cli` takes the result, changed by key, to run
    it. Errors are the parser's own (an unknown option or a value of the wrong type), raised, never
    an exit.
    """
    argv = resolve_config_args(argv[1:] if argv[:1] and argv[0] in COMMANDS else argv)
    subclass_data = data_names_a_class(argv)  # as build_cli decides: fusion configs name their data class
    with _CONFIG_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        if subclass_data in _CONFIG_CLI:
            return _CONFIG_CLI[subclass_data].config_of(argv)
        strategies.register_strategies()
        cli = _ConfigOnly(
            model_class=pl.LightningModule,
            subclass_mode_model=True,
            datamodule_class=pl.LightningDataModule if subclass_data else ShardDataModule,
            subclass_mode_data=subclass_data,
            args=argv,
            run=False,
            seed_everything_default=False,
            parser_kwargs={"prog": "neurotrain", "default_env": False, "exit_on_error": False},
            auto_configure_optimizers=False,
        )
        _CONFIG_CLI[subclass_data] = cli
        return cli.config


def model_class(config: Namespace) -> type | None:
    """The LightningModule class a `load_config` config names (its ``model.class_path``), or None."""
    path = config.get("model.class_path") or ""
    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def parse_config(argv: list[str]) -> dict[str, Any]:
    """`load_config` as nested dicts (``cfg["data"]["datasets"]``, ...)."""
    return load_config(argv).as_dict()


def _check_ckpt_path(config: Namespace) -> None:
    """``--ckpt_path`` is loaded weights-only, and checked before Lightning or DeepSpeed open it.

    ``weights_only`` is set to True for Lightning; a user-given ``--weights_only false`` is refused
    (``CheckpointError``): silently changing it would hide that full unpickling was asked for and
    is never done. A file, or a DeepSpeed checkpoint directory (which DeepSpeed reads with full
    unpickling), is checked with ``models.checkpoint_io.check_checkpoint``. The keywords ``last``
    and ``hpc`` are checked once the trainer knows their files (``before_fit``); a URL is left to
    Lightning, which reads it with ``weights_only=True``.
    """
    subcommand = config.get("subcommand")
    if not subcommand or subcommand not in COMMANDS:
        return
    cfg = config[subcommand]
    if cfg.get("weights_only") is False:
        raise CheckpointError(
            "--weights_only false: neurotrain loads checkpoints weights-only (tensors, plain types and "
            "an allow-list), never with full unpickling; leave --weights_only unset"
        )
    if "weights_only" in cfg:  # a Trainer method argument since Lightning 2.5
        cfg["weights_only"] = True
    value = cfg.get("ckpt_path")
    keyword = str(value) in _CKPT_KEYWORDS or str(value).startswith("registry:")
    if not value or keyword or "://" in str(value):
        return
    try:
        check_checkpoint(value)
    except FileNotFoundError as exc:
        raise CheckpointError(f"--ckpt_path {value}: {exc}") from None


_CKPT_KEYWORDS = ("last", "hpc", "best", "registry")  # Lightning's special ckpt_path values


def _default_run_name(cfg: Any) -> str:
    configs = cfg.get("config") or []
    stem = Path(str(configs[-1])).stem if configs else "run"
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}-{time.strftime('%Y%m%d-%H%M%S')}"


def _share_normalization(model: pl.LightningModule, datamodule: Any) -> None:
    """A fine-tune applies the statistics its encoder was pretrained with, not its own data's.

    ``init_from`` loads the pretraining run's normalisation into the module; the data module
    then normalises every dataset with it (the first pretraining dataset's per-type table).
    """
    pretrained = getattr(model, "normalization", None)
    if not pretrained or datamodule is None or not pretrained.get("datasets"):
        return
    table = pretrained["datasets"][0]
    datamodule.normalization = {
        "source": "init_from",
        "datasets": [{**table, "path": str(d)} for d in getattr(datamodule, "datasets", [])],
    }
