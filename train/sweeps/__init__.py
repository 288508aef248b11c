"""Sweeps: a sweep file in the W&B sweep schema, run by the W&B controller or by a local Optuna engine.

    command        ``neurotrain sweep FILE``: the parser, the checks, the choice of backend
    schema         the sweep file: top-level keys, ``SweepSpec``, validation against the run config
    params         swept parameters: distributions, bounds, grid points, Optuna draws, ``--key=value``
    run_metrics    the metric names a run logs, known before it starts; W&B-style names (``val_loss``)
    trial          one trial's ``neurotrain fit`` command, its environment contract, ``TrialReporter``
    study          the Optuna study: storage, sampler, pruner, settling trials of a dead sweep process
    local          the local engine: worker threads, one trial process each, pruning, the report
    wandb_backend  the W&B backend: reachability, ``wandb.sweep`` and an agent here

Layering: this package may import ``neurotrain.datamodules.io``, ``neurotrain.models`` (metric names,
the metric collections and module classes, to know what a run logs), ``neurotrain.train.tracking``
and ``neurotrain.train.run`` (``parse_config`` and the shipped config folder), never
``neurotrain.train.report`` or ``neurotrain.train.evaluation``. It uses only the public APIs of
Optuna, Lightning and W&B.
"""
