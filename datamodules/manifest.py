"""``manifest.json``: the index of a shard dataset and the contract with loaders and checkpoints.

``build_manifest`` assembles it from the per-recording parts (sorted, so it does not depend on
worker scheduling); ``load_manifest`` reads and checks it. The field list is documented in
``datamodules/README.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

from neurotrain.datamodules import stats
from neurotrain.datamodules.samples import is_annotation
from neurotrain.datamodules.shard_options import ShardOptions
from neurotrain.datamodules.splits import SPLITS, assign_splits

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
_VERSIONED = ("neurotrain", "mne", "mne-bids", "nibabel", "numpy", "webdataset", "scipy")


class ManifestError(ValueError):
    """A manifest is missing, unreadable or of an unknown schema."""


def build_manifest(
    parts: list[dict[str, Any]],
    options: ShardOptions,
    command: list[str],
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    """Manifest from the parts of all recordings (each: summary, shards, accumulators)."""
    parts = sorted(parts, key=lambda p: p["summary"]["recording"])
    split_of = assign_splits(
        [p["summary"]["subject"] for p in parts], options.split_ratios, options.split_seed
    )
    shards, recordings, subjects = [], [], {}
    channel_sets: dict[tuple, dict[str, Any]] = {}
    labels: Counter[str] = Counter()
    annotations: Counter[str] = Counter()
    for p in parts:
        s = p["summary"]
        split = split_of[s["subject"]]
        key = (tuple(s["ch_names"]), tuple(s["ch_types"]))
        if s["ch_names"] and key not in channel_sets:
            channel_sets[key] = {
                "id": f"cs{len(channel_sets)}",
                "ch_names": s["ch_names"],
                "ch_types": s["ch_types"],
            }
            channel_sets[key]["recordings"] = []
        cs = channel_sets[key]["id"] if s["ch_names"] else None
        if cs is not None:
            channel_sets[key]["recordings"].append(s["recording"])
        for label, n in s["event_counts"].items():
            (annotations if is_annotation(label) else labels)[label] += n
        rec = {k: v for k, v in s.items() if k not in ("ch_names", "ch_types", "event_counts")}
        rec.update(id=s["recording"], split=split, channel_set=cs, shards=[e["name"] for e in p["shards"]])
        rec["event_counts"] = s["event_counts"]
        recordings.append(rec)
        subjects.setdefault(s["subject"], {"split": split, "recordings": []})["recordings"].append(
            s["recording"]
        )
        for e in p["shards"]:
            shards.append({**e, "recording": s["recording"], "subject": s["subject"], "split": split})
    train = [p["accumulators"] for p in parts if split_of[p["summary"]["subject"]] == "train"]
    n_samples = sum(e["samples"] for e in shards)
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": ", ".join(sorted({p["summary"]["dataset"] for p in parts})),
        "created_by": {"command": command, "versions": _versions()},
        "options": {k: v for k, v in options.to_dict().items() if k != "workers"},  # workers: not content
        "modalities": sorted({r["modality"] for r in recordings}),
        "shards": shards,
        "recordings": recordings,
        "subjects": dict(sorted(subjects.items())),
        "splits": {
            "seed": options.split_seed,
            "ratios": dict(zip(SPLITS, options.split_ratios, strict=True)),
            **{sp: sorted(s for s, v in split_of.items() if v == sp) for sp in SPLITS},
        },
        "channel_sets": list(channel_sets.values()),
        "statistics": {"split": "train", "method": options.stats, "per_type": stats.merge(train)},
        "labels": {"names": sorted(labels), "counts": dict(sorted(labels.items()))},
        "annotations": {"names": sorted(annotations), "counts": dict(sorted(annotations.items()))},
        "skipped": sorted(skipped, key=lambda d: d["source"]),
        "totals": {
            "recordings": len(recordings),
            "subjects": len(subjects),
            "samples": n_samples,
            "bytes": sum(e["bytes"] for e in shards),
            "hours": round(sum(r["duration_s"] for r in recordings) / 3600.0, 4),
        },
    }


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read ``DIR/manifest.json`` (or the file itself) and check its schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest (was `neurotrain shard` run and finished?)") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc}") from exc
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema version {version!r}, this neurotrain reads {SCHEMA_VERSION}")
    return manifest


def manifest_hash(path: str | Path) -> str:
    """sha256 of the manifest file: what a checkpoint records to name its data."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
