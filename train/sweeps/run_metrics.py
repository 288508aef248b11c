"""What a run logs, known before it starts, and the sweep metric read as one of those names.

    logged = logged_metrics(parsed)      # ("train/loss", "val/loss") for a PretrainModule config
    resolve_metric("val_loss", logged)   # "val/loss": a W&B-style name, its first "_" read as "/"
    resolve_metric("val_acc", logged)    # ValueError: the run does not log 'val_acc'; it logs ...

A sweep optimises a value its trials log; a name they never log would only show after every trial
had trained (``the run recorded no value of …``), so `schema.check_against_config` checks it first.
The names come from the model class the run config names, without building it: every module logs
``train/loss`` and ``val/loss`` (`EncoderModule`), plus its ``monitor``; a classifier or regressor
adds its validation metric collection (`neurotrain.models.metrics`, keys ``val/balanced_accuracy``…
and ``val/pearson_r``…); an alignment module its ``val/top{k}_a2b|b2a`` retrieval scores. A class
that is not one of neurotrain's own modules may log anything: its metric is not checked (None).

W&B-style names: W&B users write ``val_loss`` where these modules log ``val/loss``. A name the run
does not log, whose first ``_`` read as ``/`` is one it does, means that one (``val_loss`` is
``val/loss``, ``val_balanced_accuracy`` is ``val/balanced_accuracy``); a name it logs as written is
always taken as written.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any


def model_class(parsed: dict[str, Any]) -> type | None:
    """The class a parsed run config's ``model.class_path`` names, or None when it does not import."""
    path = str((parsed.get("model") or {}).get("class_path") or "")
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def logged_metrics(parsed: dict[str, Any]) -> tuple[str, ...] | None:
    """The metric names a run of this config logs (sorted), or None for a model class not known here."""
    from neurotrain.models.metrics import classification_metrics, regression_metrics
    from neurotrain.models.modules import AlignmentModule, ClassifierModule, PretrainModule, RegressorModule

    cls = model_class(parsed)
    if cls not in (PretrainModule, ClassifierModule, RegressorModule, AlignmentModule):
        return None  # a subclass or another module may log more than its base class
    names = {"train/loss", "val/loss", str(cls.monitor)}
    if cls is ClassifierModule:
        names |= set(classification_metrics(2, prefix="val/").keys())
    elif cls is RegressorModule:
        names |= set(regression_metrics(1, prefix="val/").keys())
    elif cls is AlignmentModule:
        init_args = (parsed.get("model") or {}).get("init_args") or {}
        ks = init_args.get("retrieval_k") or [1, 5]  # None: the module's own default, top-1 and top-5
        names |= {f"val/top{k}_{way}" for k in ks for way in ("a2b", "b2a")} | {"train/temperature"}
    return tuple(sorted(names))


def wandb_style(name: str) -> str | None:
    """``val_loss`` -> ``val/loss``: the first ``_`` of a name without ``/`` read as ``/``; else None."""
    if "/" in name or "_" not in name.strip("_"):
        return None
    return name.replace("_", "/", 1)


def resolve_metric(name: str, logged: Sequence[str]) -> str:
    """The logged name ``name`` means (itself, or its W&B-style reading); ValueError naming what is logged."""
    if name in logged:
        return name
    alias = wandb_style(name)
    if alias is not None and alias in logged:
        return alias
    read = f" (nor {alias!r})" if alias is not None else ""
    raise ValueError(f"the run does not log {name!r}{read}; it logs {', '.join(logged)}")
