"""``neurotrain shard --part K/N`` and ``--merge``: one dataset sharded by N jobs, merged into one manifest.

Every job is given the same command plus ``--part K/N``. Each finds all the recordings (sorted
by recording id, as a single run does) and takes its deal of them: **recording i of the sorted
list (counting from 0) belongs to part ``i mod N + 1``** — round robin, so the parts differ by at
most one recording and the same inputs always give the same deal. A job writes its recordings'
shards and parts (``DIR/.neurotrain/parts/``) as a single run would, and, instead of
``manifest.json``, a *partial manifest* ``DIR/.neurotrain/manifest.part-K-of-N.json``: the
command (without ``--part``), the options, the software versions, every recording found (with
its files' size and mtime), the recordings of this part and the fingerprint of each finished one.

All jobs write into the same ``DIR`` (a shared filesystem, as on a cluster): shard, part and
partial-manifest names never collide, and a job removes only its own temporary folders. Jobs
that each wrote a ``DIR`` of their own can be combined by copying them into one first
(``rsync -a job-*/ DIR/``): nothing else in them is per-job.

``neurotrain shard --merge DIR`` then checks that the partial manifests form one complete set
made with the same sources, options and software, and builds ``manifest.json`` from the
recordings' parts exactly as a single run does: the same parts in the same order, the train
split's statistics merged from the per-recording sums (no recording is read again), the skipped
files of every part. The merged manifest is byte-identical to the manifest of one run of that
command; its ``created_by.command`` is the command the parts were given without ``--part``
(that of part 1/N, when the jobs' command lines differ in a way that does not change the
dataset, such as ``--workers``). Merging refuses an incomplete set, naming the missing parts,
and parts whose sources, options or versions differ, naming the difference.

A SLURM array job (``sbatch shard.sh``)::

    #!/bin/bash
    #SBATCH --array=1-8
    #SBATCH --cpus-per-task=4
    neurotrain shard /data/bids --out /scratch/shards --workers 4 \\
        --part "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"

and, when all eight are done (``sbatch --dependency=afterok:<array job id>``)::

    neurotrain shard --merge /scratch/shards

A job that failed or was killed is re-run with the same command: like a single run, it resumes
and redoes only its unfinished recordings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from neurotrain.datamodules.format.manifest import MANIFEST
from neurotrain.datamodules.io.files import atomic_write_json
from neurotrain.datamodules.sharding.manifest_builder import build_manifest, software_versions
from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.parts import item_files, part_path, read_json, shards_present
from neurotrain.datamodules.sharding.sources import SourceItem

PARTIAL_DIR = ".neurotrain"
PARTIAL_FORMAT = 1
RULE = "round robin over the recordings sorted by id: recording i (from 0) goes to part i mod N + 1"
_PARTIAL = re.compile(r"^manifest\.part-(\d+)-of-(\d+)\.json$")


def parse_part(text: str) -> tuple[int, int]:
    """``"K/N"`` as ``(K, N)`` with ``1 <= K <= N``; ``ValueError`` saying what is wrong otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"--part {text}: expected K/N, such as 2/8 (part K of N, counting from 1)")
    k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise ValueError(f"--part {text}: K must be between 1 and N")
    return k, n


def deal(items: list[SourceItem], part: tuple[int, int]) -> list[SourceItem]:
    """The recordings of part ``(K, N)``: every N-th of ``items`` (sorted by id) from index K - 1."""
    k, n = part
    ordered = sorted(items, key=lambda it: it.recording_id)
    return ordered[k - 1 :: n]


def partial_manifest_path(out: Path, part: tuple[int, int]) -> Path:
    """``DIR/.neurotrain/manifest.part-K-of-N.json``."""
    return Path(out) / PARTIAL_DIR / f"manifest.part-{part[0]}-of-{part[1]}.json"


def write_partial_manifest(
    out: Path,
    part: tuple[int, int],
    items: list[SourceItem],
    parts: dict[str, dict[str, Any]],
    options: ShardOptions,
    command: list[str],
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    """Write the partial manifest of ``part`` (``parts``: its finished recordings' parts by id); return it."""
    mine = deal(items, part)
    partial = {
        "partial_manifest": PARTIAL_FORMAT,
        "part": {"index": part[0], "count": part[1], "rule": RULE},
        "command": list(command),
        "options": _content_options(options),
        "versions": software_versions(),
        "recordings": [
            {"id": it.recording_id, "source": str(it.path), "files": item_files(it)}
            for it in sorted(items, key=lambda it: it.recording_id)
        ],
        "assigned": [it.recording_id for it in mine],
        "done": {rid: parts[rid]["fingerprint"] for rid in sorted(parts)},
        "skipped": sorted(skipped, key=lambda d: d["source"]),
        "totals": {
            "recordings": len(parts),
            "samples": sum(e["samples"] for p in parts.values() for e in p["shards"]),
            "bytes": sum(e["bytes"] for p in parts.values() for e in p["shards"]),
            "shards": sum(len(p["shards"]) for p in parts.values()),
        },
    }
    atomic_write_json(partial_manifest_path(out, part), partial)
    return partial


def missing_parts(out: Path, count: int) -> list[int]:
    """The part numbers of ``count`` parts that have no partial manifest in ``out`` yet."""
    return [k for k in range(1, count + 1) if not partial_manifest_path(out, (k, count)).exists()]


def merge_parts(out: str | Path) -> dict[str, Any]:
    """Build ``DIR/manifest.json`` from the partial manifests of a complete set of parts; return it.

    Raises ``ShardError`` naming what is missing or inconsistent; writes nothing then.
    """
    out = Path(out)
    partials = _read_partials(out)
    count = partials[0]["part"]["count"]
    first = partials[0]
    _check_consistent(out, partials)
    opts = _options(out, first)
    ids = [r["id"] for r in first["recordings"]]
    parts: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for partial in partials:
        k = partial["part"]["index"]
        expected = ids[k - 1 :: count]
        if partial["assigned"] != expected:
            raise ShardError(
                str(_path(out, partial)),
                f"part {k}/{count} holds other recordings than the rule gives ({RULE})",
            )
        skipped += partial["skipped"]
        for rid, fingerprint in partial["done"].items():
            parts.append(_current_part(out, rid, fingerprint, k, count, first["command"]))
    if not parts:
        raise ShardError(str(out), "every recording of every part failed; nothing to write")
    manifest = build_manifest(parts, opts, first["command"], skipped, versions=first["versions"])
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _read_partials(out: Path) -> list[dict[str, Any]]:
    folder = out / PARTIAL_DIR
    found: dict[tuple[int, int], Path] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            if m := _PARTIAL.match(path.name):
                found[(int(m.group(1)), int(m.group(2)))] = path
    if not found:
        raise ShardError(
            str(out),
            f"no partial manifests (.neurotrain/manifest.part-K-of-N.json) to merge: shard the parts "
            f"first with `neurotrain shard SOURCE... --out {out} --part K/N`",
        )
    counts = sorted({n for _, n in found})
    if len(counts) > 1:
        names = ", ".join(sorted(p.name for p in found.values()))
        raise ShardError(
            str(out / PARTIAL_DIR),
            f"partial manifests of different part counts ({' and '.join(f'N={n}' for n in counts)}): "
            f"{names}; remove the ones of the count you abandoned",
        )
    count = counts[0]
    partials = []
    for k in range(1, count + 1):
        if (k, count) not in found:
            continue
        try:
            partial = json.loads(found[(k, count)].read_text())
        except (OSError, ValueError) as exc:
            raise ShardError(str(found[(k, count)]), f"cannot be read: {exc}") from exc
        if not isinstance(partial, dict) or partial.get("partial_manifest") != PARTIAL_FORMAT:
            raise ShardError(
                str(found[(k, count)]), "is not a partial manifest this version of neurotrain reads"
            )
        partials.append(partial)
    missing = [k for k in range(1, count + 1) if (k, count) not in found]
    if missing:
        command = " ".join(partials[0]["command"])
        names = ", ".join(f"{k}/{count}" for k in missing)
        files = ", ".join(partial_manifest_path(out, (k, count)).name for k in missing)
        raise ShardError(
            str(out),
            f"incomplete set of parts: missing part(s) {names} (no {files} in {out / PARTIAL_DIR}); "
            f"run `{command} --part {missing[0]}/{count}`"
            + (" and likewise for the others" if len(missing) > 1 else "")
            + ", then merge again",
        )
    return partials


def _check_consistent(out: Path, partials: list[dict[str, Any]]) -> None:
    first = partials[0]
    count = first["part"]["count"]
    for other in partials[1:]:
        name = f"part {other['part']['index']}/{count}"
        where = str(_path(out, other))
        if other["options"] != first["options"]:
            keys = sorted(set(first["options"]) | set(other["options"]))
            diff = "; ".join(
                f"{k}: {first['options'].get(k)!r} in part 1/{count}, {other['options'].get(k)!r} in {name}"
                for k in keys
                if first["options"].get(k) != other["options"].get(k)
            )
            raise ShardError(where, f"{name} was made with other options than part 1/{count}: {diff}")
        a = {r["id"]: r for r in first["recordings"]}
        b = {r["id"]: r for r in other["recordings"]}
        if a.keys() != b.keys():
            only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
            raise ShardError(
                where,
                f"{name} found other recordings than part 1/{count}"
                + (f"; only part 1/{count} has {', '.join(only_a[:5])}" if only_a else "")
                + (f"; only {name} has {', '.join(only_b[:5])}" if only_b else "")
                + " (were the parts given other SOURCEs, or did the files change?)",
            )
        changed = [rid for rid in a if a[rid] != b[rid]]
        if changed:
            raise ShardError(
                where,
                f"{name} saw other files than part 1/{count} for {', '.join(changed[:5])} "
                "(another path, or the file changed between the jobs): re-run the parts that read old files",
            )
        if other["versions"] != first["versions"]:
            diff = ", ".join(
                f"{k} {first['versions'].get(k)} / {other['versions'].get(k)}"
                for k in sorted(set(first["versions"]) | set(other["versions"]))
                if first["versions"].get(k) != other["versions"].get(k)
            )
            raise ShardError(
                where,
                f"{name} was made with other software than part 1/{count} ({diff}): shard bytes may "
                "differ; run every part in the same environment",
            )


def _current_part(
    out: Path, rid: str, fingerprint: dict[str, Any], k: int, count: int, command: list[str]
) -> dict[str, Any]:
    """The part of recording ``rid`` as part ``k`` finished it, checked against its shards."""
    path = part_path(out, rid)
    redo = f"; re-run `{' '.join(command)} --part {k}/{count}`"
    part = read_json(path)
    if part is None:
        raise ShardError(str(path), f"the part of recording {rid} (part {k}/{count}) is missing{redo}")
    if part.get("fingerprint") != fingerprint:
        raise ShardError(
            str(path),
            f"recording {rid} was sharded again after part {k}/{count} finished, with other options "
            f"or from changed files{redo}",
        )
    if not shards_present(out, part):
        raise ShardError(
            str(path), f"a shard of recording {rid} (part {k}/{count}) is missing or changed{redo}"
        )
    return part


def _options(out: Path, partial: dict[str, Any]) -> ShardOptions:
    try:
        return ShardOptions.from_dict(partial["options"])
    except (TypeError, ValueError) as exc:
        raise ShardError(str(_path(out, partial)), f"its options do not load here: {exc}") from exc


def _content_options(options: ShardOptions) -> dict[str, Any]:
    """The options as the manifest records them (``workers`` does not change the dataset)."""
    return {k: v for k, v in options.to_dict().items() if k != "workers"}


def _path(out: Path, partial: dict[str, Any]) -> Path:
    return partial_manifest_path(out, (partial["part"]["index"], partial["part"]["count"]))
