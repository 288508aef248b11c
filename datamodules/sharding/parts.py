"""The part of each recording: ``DIR/.neurotrain/parts/<recording-id>.json``, what a resume and a merge read.

A part holds the recording's fingerprint (the options that change shard contents, the source
path, its files' size and mtime), its manifest summary, its shard entries (name, samples, bytes,
sha256) and its statistics accumulators. It is written atomically once the recording's shards
are in place, so a part names only complete shards. ``manifest.json`` (one run, or the merge of
``--part`` jobs) is built from parts alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neurotrain.datamodules.sharding.options import ShardOptions
from neurotrain.datamodules.sharding.readers.signals import source_fingerprint
from neurotrain.datamodules.sharding.sources import SourceItem

PARTS_DIR = ".neurotrain/parts"


def part_path(out: Path, recording_id: str) -> Path:
    """Where the part of recording ``recording_id`` lives under ``out``."""
    return Path(out) / PARTS_DIR / f"{recording_id}.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def fingerprint(item: SourceItem, opts: ShardOptions) -> dict[str, Any]:
    """What a recording's shards depend on: options, source path, its files' size and mtime
    (every hemisphere's file of a surface run, not only the first)."""
    return {"options": opts.fingerprint(), "source": str(item.path), "files": item_files(item)}


def item_files(item: SourceItem) -> dict[str, Any]:
    """Size and mtime of each file the item is read from (`source_fingerprint` of each)."""
    files = source_fingerprint(item.path)
    for _, path in item.hemispheres:
        files.update(source_fingerprint(path))
    return files


def shards_present(out: Path, part: dict[str, Any]) -> bool:
    """Whether every shard the part names is in ``out`` with its recorded size."""
    return all(
        (out / e["name"]).exists() and (out / e["name"]).stat().st_size == e["bytes"] for e in part["shards"]
    )


def part_is_current(out: Path, item: SourceItem, opts: ShardOptions) -> bool:
    """Whether ``item`` is already sharded in ``out`` with ``opts`` (a resume skips it)."""
    part = read_json(part_path(out, item.recording_id))
    return bool(part) and part.get("fingerprint") == fingerprint(item, opts) and shards_present(out, part)
