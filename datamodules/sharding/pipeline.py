"""``neurotrain shard``: recordings in, a verifiable shard dataset out — parallel, resumable, atomic.

Each recording is processed on its own (in a worker process when ``workers > 1``): read,
checked, segmented, written to its own shards under temporary names, renamed, and then its
*part* (summary, shard entries with sha256, statistics accumulators) is saved under
``DIR/.neurotrain/parts/``. A re-run skips every recording whose part matches the same
source file and options, so an interrupted run finishes without redoing finished shards.
The manifest is written last, atomically; a run that stops early or fails leaves no manifest
that names a missing or partial shard.

Workers end with the run: a worker whose main process died (even by SIGKILL) exits instead of
taking further recordings (``workers``), and each run first removes the temporary folders that
dead runs on this host left behind (``writer.remove_dead_temp``).

``part=(K, N)`` shards only part K of N of the recordings and writes a partial manifest instead
of ``manifest.json``; ``merge_parts(DIR)`` combines a complete set (``distributed``).

Python API::

    from neurotrain.datamodules.sharding import shard_dataset
    manifest = shard_dataset([bids_root], "shards/eeg", segment_seconds=60, workers=2)
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from neurotrain.datamodules.format.manifest import MANIFEST, shard_name_problem
from neurotrain.datamodules.io.files import atomic_write_json
from neurotrain.datamodules.sharding import workers
from neurotrain.datamodules.sharding.distributed import deal, partial_manifest_path, write_partial_manifest
from neurotrain.datamodules.sharding.manifest_builder import build_manifest
from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.parts import (
    PARTS_DIR,
    fingerprint,
    part_is_current,
    part_path,
    read_json,
)
from neurotrain.datamodules.sharding.samples import recording_samples
from neurotrain.datamodules.sharding.sources import SourceItem, discover
from neurotrain.datamodules.sharding.writer import remove_dead_temp, write_recording_shards

__all__ = ["PARTS_DIR", "process_recording", "shard_dataset"]


def shard_dataset(
    sources: list[str | Path],
    out: str | Path,
    command: list[str] | None = None,
    progress: bool = False,
    options: ShardOptions | None = None,
    part: tuple[int, int] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Shard ``sources`` into ``out``; return the manifest. Raises ``ShardError`` on bad input.

    The options are ``options`` (a `ShardOptions`, as the ``shard`` command parses them) or its
    fields as keywords (``segment_seconds=30, workers=2``), not both. With ``part=(K, N)`` only
    part K of N of the recordings is sharded and the partial manifest is written and returned
    (``command`` is then the command of the whole run, without ``--part``).
    """
    if options is not None and fields:
        raise TypeError("give shard_dataset either options= or option keywords, not both")
    opts = options if options is not None else ShardOptions.from_dict(fields)
    if part is not None and not (len(part) == 2 and 1 <= part[0] <= part[1]):
        raise ValueError(f"part must be (K, N) with 1 <= K <= N, not {part!r}")
    out = Path(out)
    items = discover(sources, opts)
    if not items:
        raise ShardError(", ".join(map(str, sources)), "no supported recordings found")
    mine = deal(items, part) if part is not None else items
    out.mkdir(parents=True, exist_ok=True)
    remove_dead_temp(out)
    todo = [it for it in mine if not part_is_current(out, it, opts)]
    manifest_path = out / MANIFEST
    if todo and manifest_path.exists():
        # Shards named by the old manifest are about to be rewritten: it must not outlive them.
        with contextlib.suppress(FileNotFoundError):  # another --part job moved it first
            os.replace(manifest_path, out / f"{MANIFEST}.previous")
    if todo and part is not None:  # a partial manifest stands for a finished part only
        partial_manifest_path(out, part).unlink(missing_ok=True)
    skipped = _run(todo, out, opts, progress, n_total=len(mine))
    failed = {s["source"] for s in skipped}
    parts = {it.recording_id: _load_part(out, it) for it in mine if str(it.path) not in failed}
    command = command or _default_command(sources, out)
    if part is not None:
        return write_partial_manifest(out, part, items, parts, opts, command, skipped)
    if not parts:
        raise ShardError(str(out), "every recording failed; nothing to write (see the errors above)")
    manifest = build_manifest(list(parts.values()), opts, command, skipped)
    atomic_write_json(manifest_path, manifest)
    return manifest


def _run(todo: list[SourceItem], out: Path, opts: ShardOptions, progress: bool, n_total: int) -> list[dict]:
    """Process ``todo``; return the skipped files (``--on-error skip``) or raise on the first error."""
    skipped: list[dict[str, str]] = []
    bar = _Progress(progress, n_total, n_total - len(todo))
    try:
        if opts.workers == 1 or len(todo) <= 1:
            for it in todo:
                _handle(_process_safely(it, out, opts), it, opts, skipped, bar)
        else:
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with ProcessPoolExecutor(
                max_workers=min(opts.workers, len(todo)),
                mp_context=ctx,
                initializer=workers.init_worker,
                initargs=(os.getpid(),),
            ) as pool:
                pending: dict[Future, SourceItem] = {
                    pool.submit(_process_safely, it, out, opts): it for it in todo
                }
                try:
                    while pending:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in sorted(done, key=lambda f: pending[f].recording_id):
                            _handle(fut.result(), pending.pop(fut), opts, skipped, bar)
                except BaseException:
                    for fut in pending:
                        fut.cancel()
                    raise
    finally:
        bar.close()
        remove_dead_temp(out)  # a worker killed mid-recording (the OOM killer) left its folder
    return skipped


def _handle(
    result: tuple[str | None, list[str]], it: SourceItem, opts: ShardOptions, skipped: list, bar: _Progress
) -> None:
    error, warnings = result
    for message in warnings:  # detected, recorded in the manifest, said once, and sharded anyway
        bar.warn(f"{it.path}: {message}")
    if error is None:
        bar.advance(it.recording_id)
        return
    if opts.on_error == "fail":
        raise ShardError(str(it.path), error)
    skipped.append({"source": str(it.path), "error": error})
    bar.warn(f"skipped {it.path}: {error}")


def _process_safely(item: SourceItem, out: Path, opts: ShardOptions) -> tuple[str | None, list[str]]:
    """Process one recording; return (None or the reason it failed, its warnings), as text to
    cross processes."""
    workers.exit_if_orphaned()  # a recording queued to a worker of a run that has died is not started
    try:
        part = process_recording(item, out, opts)
        return None, list(part["summary"].get("warnings") or [])
    except ShardError as exc:
        return exc.reason, []
    except MemoryError:
        return "ran out of memory while reading the recording", []
    except Exception as exc:  # keep the sweep over files going; the message names the cause
        return f"{type(exc).__name__}: {exc}", []


def process_recording(item: SourceItem, out: Path, opts: ShardOptions) -> dict[str, Any]:
    """Shard one recording and save its part; returns the part."""
    result = recording_samples(item, opts)
    shards = write_recording_shards(out, item.recording_id, result.samples, opts.shard_size_mb * 1e6)
    old = read_json(part_path(out, item.recording_id))
    part = {
        "fingerprint": fingerprint(item, opts),
        "summary": result.summary,
        "shards": shards,
        "accumulators": result.accumulators,
    }
    atomic_write_json(part_path(out, item.recording_id), part)
    if old:  # an earlier run with other options may have produced more shards than this one
        for e in old.get("shards", []):
            # a name from a part file is deleted only when it is a plain shard name of this folder
            if e["name"] not in {s["name"] for s in shards} and shard_name_problem(e["name"]) is None:
                (out / e["name"]).unlink(missing_ok=True)
    return part


def _load_part(out: Path, item: SourceItem) -> dict[str, Any]:
    part = read_json(part_path(out, item.recording_id))
    if part is None:
        raise ShardError(str(item.path), "internal error: its part file is missing after processing")
    return part


def _default_command(sources: list[str | Path], out: Path) -> list[str]:
    return ["neurotrain", "shard", *map(str, sources), "--out", str(out)]


class _Progress:
    """A Rich progress bar over recordings (quiet when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("[bold]shard"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
        )
        self._bar.start()
        self._task = self._bar.add_task("", total=total, completed=done)
        if done:
            self._bar.console.print(f"{done} recording(s) already sharded with these options: not redone")

    def advance(self, name: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=name)

    def warn(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(f"[yellow]{message}")
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
