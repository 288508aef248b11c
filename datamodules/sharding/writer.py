"""Write one recording's samples into WebDataset tar shards, atomically and deterministically.

Shards are written by webdataset's ``ShardWriter`` into a private temporary folder, with a
fixed mtime and owner so the same samples always give the same bytes (and sha256). Only when
the recording is complete are they renamed to their final names ``<recording-id>-NNNN.tar``
beside the manifest. An interruption leaves at most a temporary folder, never a partial shard
under a final name.

Temporary folders are ``DIR/.neurotrain/tmp/<recording-id>.<host>.<pid>.<random>``: the host and
pid of the process writing them. A process that is killed outright (SIGKILL, the OOM killer)
cannot remove its folder, so every run first calls `remove_dead_temp`, which removes the folders
whose writer was on this host and no longer runs — never those of a live run, and never those of
another host (a shared ``DIR`` of ``--part`` jobs on several machines), whose pids mean nothing
here.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import webdataset as wds

from neurotrain.datamodules.io.files import sha256_file
from neurotrain.datamodules.io.processes import pid_alive

TMP_DIR = ".neurotrain/tmp"
# Folders named before their writer's host and pid were in the name: removed once untouched this long.
LEGACY_TEMP_AGE_S = 3600.0
_OWNED = re.compile(r"^[A-Za-z0-9_-]+\.(?P<host>.+)\.(?P<pid>\d+)\.[^.]+$")
_LIVE: set[Path] = set()  # the temporary folders this process is writing now


def shard_name(recording_id: str, index: int) -> str:
    """Final file name of shard ``index`` of a recording."""
    return f"{recording_id}-{index:04d}.tar"


def host_name() -> str:
    """This host's name as it appears in temporary folder names (no path separators)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname()) or "localhost"


def write_recording_shards(
    out_dir: Path, recording_id: str, samples: Iterable[dict[str, Any]], max_bytes: float
) -> list[dict[str, Any]]:
    """Write ``samples`` (dicts of ``__key__`` and encoded bytes) to shards; return their entries.

    Each entry is ``{"name", "samples", "bytes", "sha256"}``.
    """
    tmp_root = out_dir / TMP_DIR
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=tmp_root, prefix=f"{recording_id}.{host_name()}.{os.getpid()}."))
    _LIVE.add(tmp)
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
        _LIVE.discard(tmp)


def remove_own_temp() -> None:
    """Remove the temporary folders this process is writing (a worker ending because its run died)."""
    for tmp in list(_LIVE):
        if _owner(tmp.name) == (host_name(), os.getpid()):
            shutil.rmtree(tmp, ignore_errors=True)
        _LIVE.discard(tmp)


def remove_dead_temp(out_dir: Path) -> list[Path]:
    """Remove the temporary folders under ``out_dir`` left by dead writers on this host; return them.

    A folder is removed when its name says it was written on this host by a pid that no longer
    runs (``pid_alive``). Folders of live processes and of other hosts are kept; folders named the
    way earlier versions named them (no host or pid) are removed once untouched for an hour.
    """
    tmp_root = out_dir / TMP_DIR
    try:
        entries = list(tmp_root.iterdir())
    except OSError:
        return []
    host, removed = host_name(), []
    for path in entries:
        owner = _owner(path.name)
        if owner is None:
            try:
                dead = time.time() - path.stat().st_mtime > LEGACY_TEMP_AGE_S
            except OSError:
                continue
        else:
            mine = owner[1] == os.getpid()  # this process: dead leftover of an earlier one with our pid
            dead = owner[0] == host and (path not in _LIVE if mine else not pid_alive(owner[1]))
        if dead:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _owner(name: str) -> tuple[str, int] | None:
    """(host, pid) from a temporary folder's name, or None for a name without them."""
    m = _OWNED.match(name)
    return (m.group("host"), int(m.group("pid"))) if m else None
