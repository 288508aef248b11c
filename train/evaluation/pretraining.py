"""What a pretrained checkpoint's pretraining read, and per fold whether it saw the scored subjects.

Self-supervised pretraining on unlabelled EEG may include the recordings a fold later scores (their
signals, never their labels): *transductive*, allowed for self-supervision but a different claim
from *inductive* pretraining on the training subjects only. The quickstart chooses it
(``--pretrain_scope train-only | all-unlabelled``); ``neurotrain evaluate --init_from`` is given a
checkpoint made elsewhere, so it reads the choice back from the checkpoint and records it per
fold, in the quickstart's words:

- ``train-only``: the pretraining read none of the fold's scored subjects;
- ``all-unlabelled``: it read (unlabelled) recordings of at least one scored subject;
- ``unknown``: the checkpoint does not say what it read (a safetensors export, a plain state dict)
  or its datasets are not the evaluated ones by manifest sha256 and cannot be compared.

The checkpoint's datamodule hyperparameters name its datasets (with their manifests' sha256 in the
recorded normalisation), its train split and selection. A pretraining dataset is matched to an
evaluated one by manifest sha256, and its subjects are read from the *evaluated* manifest (already
loaded and checked); no path recorded in the checkpoint is opened.

    scope = pretraining_scope("runs/pretrain/checkpoints/last.ckpt", dm.manifests)
    fold_scope(scope, ["s02"])   # -> "train-only" | "all-unlabelled" | "unknown"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCOPES = ("train-only", "all-unlabelled", "unknown")


def pretraining_scope(init_from: str | Path | None, manifests: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``{"checkpoint", "known", "subjects", "datasets", "why"}`` for ``init_from`` (None without one).

    ``subjects``: the subjects whose recordings the pretraining's train split read, in the evaluated
    datasets; ``known`` False (with ``why``) when that cannot be told.
    """
    if not init_from:
        return None
    from neurotrain.models.checkpoint_io import CheckpointError, safe_load

    out: dict[str, Any] = {"checkpoint": str(init_from), "known": False, "subjects": [], "datasets": []}
    if Path(init_from).suffix == ".safetensors":
        return {**out, "why": "a safetensors export records no pretraining data"}
    try:
        ckpt = safe_load(init_from)
    except (CheckpointError, FileNotFoundError) as exc:
        return {**out, "why": str(exc)}
    hp = ckpt.get("datamodule_hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not isinstance(hp.get("normalization"), dict):
        return {**out, "why": "the checkpoint records no datamodule settings"}
    split = str(hp.get("train_split", "train"))
    selection = hp.get("selection")
    # A selection recorded as a file path is not opened (no path from a checkpoint is): the whole
    # split counts as read, which can only over-state what the pretraining saw.
    rule = selection.get("train") if isinstance(selection, dict) else None
    chosen = set(rule["subjects"]) if isinstance(rule, dict) and "subjects" in rule else None
    by_sha = {m.get("_sha256"): m for m in manifests}
    subjects: set[str] = set()
    unmatched = []
    for entry in hp["normalization"].get("datasets") or []:
        manifest = by_sha.get(entry.get("manifest_sha256"))
        record = {"path": entry.get("path"), "manifest_sha256": entry.get("manifest_sha256"), "split": split}
        if manifest is None:
            unmatched.append(str(entry.get("path")))
            out["datasets"].append({**record, "evaluated": False})
            continue
        seen = {
            str(s.get("subject"))
            for s in manifest.get("shards", [])
            if split == "all" or s.get("split") == split
        }
        seen = seen & chosen if chosen is not None else seen
        subjects |= seen
        out["datasets"].append({**record, "evaluated": True, "subjects": sorted(seen)})
    out["subjects"] = sorted(subjects)
    if unmatched and not subjects:
        return {**out, "why": f"pretrained on other datasets than the evaluated ones: {', '.join(unmatched)}"}
    out["known"] = True
    if isinstance(rule, dict) and "events" in rule:
        out["note"] = "the pretraining selection restricts events: counted by subject"
    elif selection is not None and not isinstance(selection, dict):
        out["note"] = "the pretraining selection is a file, not opened: the whole split counted"
    return out


def fold_scope(scope: dict[str, Any] | None, test_subjects: list[str]) -> str | None:
    """The fold's pretraining scope (``SCOPES``), or None when no checkpoint was given."""
    if scope is None:
        return None
    if not scope["known"]:
        return "unknown"
    return "all-unlabelled" if set(test_subjects) & set(scope["subjects"]) else "train-only"


def scope_line(results: dict[str, Any]) -> list[str]:
    """The Markdown sentence saying what the pretraining read and where that is transductive."""
    scope = results.get("pretraining")
    if not scope:
        return []
    if not scope["known"]:
        return ["", f"Pretraining data of `{scope['checkpoint']}` unknown ({scope.get('why', '')})."]
    by_fold: dict[str, set[str]] = {}
    for rec in results["folds_detail"]:
        by_fold.setdefault(rec.get("pretrain_scope") or "unknown", set()).add(rec["name"])
    parts = [f"{name}: {', '.join(sorted(folds))}" for name, folds in sorted(by_fold.items())]
    return [
        "",
        f"Pretraining (`{scope['checkpoint']}`) read the unlabelled recordings of "
        f"{', '.join(scope['subjects']) or 'no evaluated subject'}; pretraining scope per fold — "
        + "; ".join(parts)
        + " (all-unlabelled: it saw the scored subjects' signals, never their labels).",
    ]
