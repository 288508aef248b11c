"""``manifest.json``: the index of a shard dataset and the contract with loaders and checkpoints.

``load_manifest`` reads one and checks its schema version: the loading side, ``inspect`` and
anything else that reads a dataset go through it, so a manifest of a schema this version does
not know is refused with its path. ``build_manifest`` (``sharding/manifest_builder.py``) writes
them. The field list is documented in ``datamodules/README.md``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """A manifest is missing, unreadable or of an unknown schema."""


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
