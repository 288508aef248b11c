"""The ``neurotrain`` command: one console script, one subcommand per job.

    neurotrain shard SOURCE... --out DIR     raw recordings -> sharded WebDataset + manifest
    neurotrain inspect DIR [--verify]        summary of a shard dataset; re-hash its shards
    neurotrain fetch NAME...                 fetch an example dataset into the cache
    neurotrain fit|validate|test|predict     LightningCLI: --config NAME_OR_FILE --model.optimizer.lr=…
    neurotrain configs [show NAME]           the shipped configs (one line each); print one to copy
    neurotrain export CKPT --out F           DeepSpeed or plain checkpoint -> one .safetensors
    neurotrain compare RUN_OR_FOLDER... --out F  one HTML dashboard of many runs
    neurotrain sync [FOLDER]                     upload offline W&B runs (wandb sync)
    neurotrain quickstart [--out DIR] [--fast]   real EEG -> pretrained, fine-tuned, compared models
    neurotrain sweep FILE [--count N] [--workers K]  a sweep file: W&B when online, else local Optuna
    neurotrain evaluate --config F --protocol P  fine-tune + score under within/cross-subject or LOSO folds

``shard`` (its own jsonargparse parser, generated from ``ShardOptions``), ``configs`` (a light parser:
no Lightning import) and the LightningCLI commands parse their own command lines: ``main`` hands
them over by their first word (``--config NAME`` already resolved to a shipped file, see
``train/run/configs.py``), and the top-level parser lists them with placeholders. The data commands
live in ``data_commands``, the others beside their code. The subcommand modules are imported by ``build_parser``, never for the LightningCLI
commands, which import only what a run needs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]

_LIGHTNING_HELP = {
    "fit": "train a model (LightningCLI: --config NAME or FILE.yaml, --model.x=… overrides)",
    "validate": "run validation of a model on a dataset's val split",
    "test": "evaluate a model on a dataset's test split",
    "predict": "embed or predict on a dataset with a trained model",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    # Lightning before the evaluation modules (scikit-learn): with sklearn.metrics imported first,
    # jsonargparse reads the ``int | float`` Trainer options as floats (``--trainer.limit_val_batches=1``
    # becomes 1.0, all batches); seen with jsonargparse 4.53, scikit-learn 1.9, Lightning 2.6.
    import pytorch_lightning  # noqa: F401

    from neurotrain.train.data_commands import add_fetch_parser, add_inspect_parser, add_shard_parser
    from neurotrain.train.evaluation.evaluate import add_evaluate_parser
    from neurotrain.train.evaluation.quickstart import add_quickstart_parser
    from neurotrain.train.report.compare import add_compare_parser
    from neurotrain.train.run.configs_command import add_configs_parser
    from neurotrain.train.run.export import add_export_parser
    from neurotrain.train.simulated_paired import add_simulate_parser
    from neurotrain.train.sweeps.command import add_sweep_parser
    from neurotrain.train.tracking.sync import add_sync_parser

    parser = argparse.ArgumentParser(
        prog="neurotrain",
        description="Train foundation models on neural recordings (EEG, MEG, iEEG, fMRI, MRI).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_shard_parser(sub)  # a placeholder: ``main`` hands ``shard`` to its own parser
    add_inspect_parser(sub)
    add_fetch_parser(sub)
    add_simulate_parser(sub)
    add_configs_parser(sub)
    add_export_parser(sub)
    add_compare_parser(sub)
    add_sync_parser(sub)
    add_sweep_parser(sub)
    add_quickstart_parser(sub)
    add_evaluate_parser(sub)
    for name, text in _LIGHTNING_HELP.items():  # parsed by LightningCLI; listed here for --help
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from neurotrain.train.run.threads import passive_openmp_wait

    passive_openmp_wait()  # before torch is imported: OpenMP reads it once (train/run/threads.py)
    if argv and argv[0] in _LIGHTNING_HELP:
        from neurotrain.train.run.configs import ConfigNameError, resolve_config_args

        try:  # before Lightning is imported: a mistyped --config NAME fails in a blink
            argv = resolve_config_args(argv)
        except ConfigNameError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        from neurotrain.train.run.lightning_cli import run_lightning

        return run_lightning(argv)
    try:
        if argv and argv[0] == "shard":
            from neurotrain.train.data_commands import run_shard

            return run_shard(argv[1:])
        if argv and argv[0] == "configs":  # light: listing configs imports no Lightning
            from neurotrain.train.run.configs_command import run_configs

            return run_configs(argv[1:])
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "accepts_extra", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
        handler: Handler = args.handler
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; re-run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
