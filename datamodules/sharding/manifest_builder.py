"""Assemble ``manifest.json`` from the parts of all recordings of one ``neurotrain shard`` run (or merge).

Parts are sorted by recording id first, so the manifest does not depend on worker scheduling:
the same inputs and options give the same bytes. The schema (name, version, reading) lives in
``neurotrain.datamodules.format.manifest``.
"""

from __future__ import annotations

from collections import Counter
from importlib import metadata
from typing import Any

from neurotrain.datamodules.format.manifest import SCHEMA_VERSION
from neurotrain.datamodules.sharding import statistics as stats
from neurotrain.datamodules.sharding.options import ShardOptions
from neurotrain.datamodules.sharding.samples import is_annotation
from neurotrain.datamodules.sharding.splits import SPLITS, assign_splits
from neurotrain.datamodules.sharding.stimulus_splits import ALL, manifest_splits

_VERSIONED = ("neurotrain", "mne", "mne-bids", "nibabel", "numpy", "webdataset", "scipy")


def build_manifest(
    parts: list[dict[str, Any]],
    options: ShardOptions,
    command: list[str],
    skipped: list[dict[str, str]],
    versions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Manifest from the parts of all recordings (each: summary, shards, accumulators).

    ``versions`` are the software versions that made the shards (default: this environment's;
    a merge of ``--part`` jobs passes the versions the jobs recorded).
    """
    parts = sorted(parts, key=lambda p: p["summary"]["recording"])
    by_stimulus = options.split_by == "stimulus"
    if by_stimulus:  # every recording in every stage; the loader splits the epochs by image
        split_of = dict.fromkeys((p["summary"]["subject"] for p in parts), ALL)
    else:
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
    train = [p["accumulators"] for p in parts if split_of[p["summary"]["subject"]] in ("train", ALL)]
    n_samples = sum(e["samples"] for e in shards)
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": ", ".join(sorted({p["summary"]["dataset"] for p in parts})),
        "created_by": {"command": command, "versions": software_versions() if versions is None else versions},
        "options": {k: v for k, v in options.to_dict().items() if k != "workers"},  # workers: not content
        "modalities": sorted({r["modality"] for r in recordings}),
        "shards": shards,
        "recordings": recordings,
        "subjects": dict(sorted(subjects.items())),
        "splits": manifest_splits(options.stimuli, options.split_ratios, options.split_seed)
        if by_stimulus
        else {
            "seed": options.split_seed,
            "ratios": dict(zip(SPLITS, options.split_ratios, strict=True)),
            **{sp: sorted(s for s, v in split_of.items() if v == sp) for sp in SPLITS},
        },
        "channel_sets": list(channel_sets.values()),
        "statistics": {
            "split": ALL if by_stimulus else "train",
            "method": options.stats,
            "per_type": stats.merge(train),
        },
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


def software_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the shards (recorded in the manifest)."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
