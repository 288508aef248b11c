"""``neurotrain sync [FOLDER]``: upload the offline W&B runs under a folder with ``wandb sync``.

    neurotrain sync                      # every offline run under the current folder
    neurotrain sync checkpoints/ --dry-run
    neurotrain sync checkpoints/ --project neuro --entity me --include-synced

W&B keeps an offline run as ``wandb/offline-run-<time>-<id>/run-<id>.wandb``; ``wandb sync`` marks a run
it uploaded with ``run-<id>.wandb.synced``, and those are skipped unless ``--include-synced``. The W&B
server is probed first (a few seconds at most) and the upload has a time limit, so without a network
the command fails with a message instead of hanging; the runs stay on disk for a later try.

A resumed fit continues its W&B run offline in a second folder with the same id (one per process,
the later ones marked ``resume``). Every unsynced part goes to one ``wandb sync`` call, which
uploads the parts of one id in order of start time into that one run; a part uploaded earlier
stays out (a later part resumes the run on the server). The listing says which parts belong to
one run. A part that holds no record (its process was killed before W&B's first write, which
comes every 15 s) is left out: there is nothing in it to upload.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from neurotrain.train.tracking.wandb_server import probe, server_url

_HEADER_BYTES = 7  # a .wandb transaction log that holds its header and no record


def find_offline_runs(folder: str | Path, include_synced: bool = False) -> list[Path]:
    """The ``offline-run-*`` folders under ``folder`` (recursively) that hold a ``.wandb`` file.

    Sorted by folder name, which is the start time within one ``wandb/`` folder, so the parts of a
    resumed run come in the order they were written.
    """
    runs = []
    for path in sorted(Path(folder).rglob("offline-run-*")):
        files = list(path.glob("run-*.wandb")) if path.is_dir() else []
        files = [f for f in files if f.stat().st_size > _HEADER_BYTES]
        if not files:
            continue
        synced = all(f.with_name(f.name + ".synced").exists() for f in files)
        if include_synced or not synced:
            runs.append(path)
    return runs


def offline_run_id(path: Path) -> str:
    """The W&B run id of an ``offline-run-*`` folder: the name of its ``run-<id>.wandb`` log (the
    folder name may end in a counter when two runs of one id start within a second)."""
    log = next(iter(sorted(path.glob("run-*.wandb"))), None)
    return log.stem.removeprefix("run-") if log else path.name.split("-", 3)[-1]


def describe_runs(runs: Sequence[Path]) -> list[str]:
    """One line per folder; the parts of a resumed run (one id, several folders) say so."""
    parts: dict[tuple[Path, str], list[Path]] = {}
    for run in runs:
        parts.setdefault((run.parent, offline_run_id(run)), []).append(run)
    lines = []
    for run in runs:
        group = parts[(run.parent, offline_run_id(run))]
        note = (
            f"  (run {offline_run_id(run)}, part {group.index(run) + 1} of {len(group)}: resumed)"
            if len(group) > 1
            else ""
        )
        lines.append(f"  {run}{note}")
    return lines


def sync_runs(
    runs: Sequence[Path],
    *,
    project: str | None = None,
    entity: str | None = None,
    timeout_s: float = 600.0,
    probe_timeout_s: float = 5.0,
) -> int:
    """Run ``wandb sync`` on ``runs``; returns its exit code, or 1 when the server cannot be reached."""
    base_url = server_url()
    problem = probe(base_url, probe_timeout_s)
    if problem:
        print(
            f"error: cannot reach the W&B server {base_url} ({problem}); nothing was uploaded and the "
            "runs stay on disk. Re-run `neurotrain sync` when online.",
            file=sys.stderr,
        )
        return 1
    cmd = _wandb_command(runs, project, entity)
    try:
        return subprocess.run(cmd, timeout=timeout_s, check=False).returncode
    except subprocess.TimeoutExpired:
        print(
            f"error: wandb sync did not finish within {timeout_s:.0f} s; re-run to resume.", file=sys.stderr
        )
        return 1


def add_sync_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain sync``."""
    p = sub.add_parser(
        "sync",
        help="upload offline W&B runs under a folder (wraps `wandb sync`)",
        description="Upload the offline W&B runs under FOLDER (wandb/offline-run-*) with `wandb sync`; fails with "
        "a message, not a hang, when the W&B server cannot be reached.",
    )
    p.add_argument(
        "folder", nargs="?", default=".", help="folder searched for wandb/offline-run-* (default .)"
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs and the command; upload nothing")
    p.add_argument("--include-synced", action="store_true", help="also runs that were uploaded before")
    p.add_argument("--project", help="W&B project to upload into (default: the one each run recorded)")
    p.add_argument("--entity", help="W&B entity (user or team)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the upload is abandoned")
    p.set_defaults(handler=_sync)


def _sync(args: argparse.Namespace) -> int:
    if not Path(args.folder).is_dir():
        print(f"error: {args.folder}: no such folder", file=sys.stderr)
        return 2
    runs = find_offline_runs(args.folder, include_synced=args.include_synced)
    if not runs:
        print(f"no offline W&B runs to upload under {args.folder}")
        return 0
    print(f"{len(runs)} offline W&B run(s) to upload:")
    for line in describe_runs(runs):
        print(line)
    if args.dry_run:
        print("would run: " + " ".join(_wandb_command(runs, args.project, args.entity)))
        return 0
    return sync_runs(runs, project=args.project, entity=args.entity, timeout_s=args.timeout)


def _wandb_command(runs: Sequence[Path], project: str | None, entity: str | None) -> list[str]:
    # The wandb of this interpreter's environment, even when that environment is not activated.
    cmd = [sys.executable, "-m", "wandb", "sync", "--include-synced"]
    if project:
        cmd += ["--project", project]
    if entity:
        cmd += ["--entity", entity]
    return cmd + [str(run) for run in runs]
