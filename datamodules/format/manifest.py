"""``manifest.json``: the index of a shard dataset and the contract with loaders and checkpoints.

``load_manifest`` reads one and checks its schema version and its shard names: the loading side,
``inspect`` and anything else that reads a dataset go through it, so a manifest of a schema this
version does not know, or one whose shard names could reach outside the dataset folder, is
refused with its path. ``shard_path`` is the one place a shard's file is found from its entry
(names checked again, symlinks resolved and kept inside the folder). ``build_manifest``
(``sharding/manifest_builder.py``) writes them. The field list is documented in
``datamodules/README.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """A manifest is missing, unreadable, of an unknown schema, or names files it must not."""


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read ``DIR/manifest.json`` (or the file itself); check its schema version and shard names."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest (was `neurotrain shard` run and finished?)") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a manifest (a JSON {type(manifest).__name__}, not an object)")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema version {version!r}, this neurotrain reads {SCHEMA_VERSION}")
    shards = manifest.get("shards", [])
    if not isinstance(shards, list):
        raise ManifestError(f"{path}: 'shards' is a {type(shards).__name__}, not a list of entries")
    for i, entry in enumerate(shards):
        name = entry.get("name") if isinstance(entry, dict) else None
        problem = shard_name_problem(name) if isinstance(entry, dict) else "not an object"
        if problem:
            raise ManifestError(f"{path}: shards[{i}] (name {name!r}): {problem}")
    return manifest


def shard_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid shard name, or None when it is one.

    A shard name is a plain file name inside the dataset folder: a non-empty string without a
    folder separator (``/`` or ``\\``), a drive (``C:``), a control character, and not starting with
    ``.`` (which also excludes ``.`` and ``..``, and the cache's own hidden temporary and lock
    files). It must not be ``manifest.json`` either. ``neurotrain shard`` writes
    ``<recording-id>-NNNN.tar``; a name such as ``../x.tar``, ``/abs/x.tar`` or
    ``a/../../x.tar`` can only come from a crafted manifest, and would make a reader (or the
    download of a remote dataset) reach outside the folder.
    """
    if not isinstance(name, str) or not name:
        return "a shard name must be a non-empty string"
    if "/" in name or "\\" in name:
        return "a shard name must be a plain file name inside the dataset folder, without folders"
    if ":" in name[:2] or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a shard name must not hold a drive or control characters"
    if name.startswith("."):
        return "a shard name must not start with '.'"
    if name == MANIFEST:
        return f"a shard cannot be named {MANIFEST}"
    return None


def shard_path(root: str | Path, entry: Mapping[str, Any]) -> Path:
    """``root / entry["name"]``, refused (``ManifestError``) unless it stays inside ``root``.

    The name is checked as ``load_manifest`` does, and the path is resolved (symlinks followed)
    and must still be a direct child of the resolved ``root``: a shard that is a symlink to a
    file elsewhere is refused too. The returned path is the unresolved ``root / name``.
    """
    name = entry.get("name")
    problem = shard_name_problem(name)
    if problem:
        raise ManifestError(f"{root}: shard {name!r} of the manifest: {problem}")
    path = Path(root) / str(name)
    real_root = Path(root).resolve()
    real = path.resolve()
    if real.parent != real_root:
        raise ManifestError(
            f"{root}: shard {name!r} of the manifest resolves to {real}, outside the dataset folder "
            "(a symlink leaving the folder is not followed)"
        )
    return path


def manifest_hash(path: str | Path) -> str:
    """sha256 of the manifest file: what a checkpoint records to name its data."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    return hashlib.sha256(path.read_bytes()).hexdigest()
