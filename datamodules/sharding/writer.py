"""Write one recording's samples into WebDataset tar shards, atomically and deterministically.

Shards are written by webdataset's ``ShardWriter`` into a private temporary folder, with a
fixed mtime and owner so the same samples always give the same bytes (and sha256). Only when
the recording is complete are they renamed to their final names ``<recording-id>-NNNN.tar``
beside the manifest. An interruption leaves at most a temporary folder, never a partial shard
under a final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import webdataset as wds

from neurotrain.datamodules.io.files import sha256_file

TMP_DIR = ".neurotrain/tmp"


def shard_name(recording_id: str, index: int) -> str:
    """Final file name of shard ``index`` of a recording."""
    return f"{recording_id}-{index:04d}.tar"


def write_recording_shards(
    out_dir: Path, recording_id: str, samples: Iterable[dict[str, Any]], max_bytes: float
) -> list[dict[str, Any]]:
    """Write ``samples`` (dicts of ``__key__`` and encoded bytes) to shards; return their entries.

    Each entry is ``{"name", "samples", "bytes", "sha256"}``.
    """
    tmp_root = out_dir / TMP_DIR
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=tmp_root, prefix=f"{recording_id}."))
    try:
        counts: dict[int, int] = {}
        pattern = str(tmp / f"{recording_id}-%04d.tar")
        with wds.ShardWriter(
            pattern,
            maxsize=max_bytes,
            maxcount=10**9,
            verbose=0,
            mtime=0.0,
            user="neurotrain",
            group="neurotrain",
        ) as sink:
            for sample in samples:
                sink.write(sample)
                counts[sink.shard - 1] = counts.get(sink.shard - 1, 0) + 1
        entries = []
        for index in sorted(counts):
            path = tmp / shard_name(recording_id, index)
            entries.append(
                {
                    "name": path.name,
                    "samples": counts[index],
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
            )
        for entry in entries:
            os.replace(tmp / entry["name"], out_dir / entry["name"])
        return entries
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
