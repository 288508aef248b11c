"""The three data commands of ``neurotrain``: ``shard``, ``inspect`` and ``fetch``.

``shard`` has its own jsonargparse parser, generated from the fields of ``ShardOptions`` (their type
hints and ``metadata``), so the dataclass is the one schema of the options: jsonargparse validates
each value against its annotation (``Literal`` gives the choices, ``float | None`` an optional
number), ``list[X]`` becomes ``nargs="+"`` and ``tuple[X, X, X]`` ``nargs=3``. ``cli.main`` hands
``neurotrain shard ...`` to ``run_shard`` the way it hands ``fit`` to LightningCLI; the top-level
argparse parser only holds a placeholder for ``neurotrain --help``. ``inspect`` and ``fetch`` are
plain argparse subcommands.

``--part K/N`` and ``--merge DIR`` are command options of ``shard`` beside ``--out``, not
``ShardOptions`` fields: they decide which recordings a job shards and where the manifest comes
from, never what a shard holds (``neurotrain.datamodules.sharding.distributed``; a SLURM example
is there). A job given ``--part`` records its command line without ``--part``, which the merged
manifest then names as its ``created_by.command``: the command of one run over all recordings.

Heavy libraries (jsonargparse, MNE, pooch) are imported inside the commands, so building the
top-level parser stays instant.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

    from neurotrain.datamodules.sharding.options import ShardOptions

SHARD_HELP = "convert recordings (BIDS, EDF/BDF/GDF/FIF/BrainVision/EEGLAB/NWB/NIfTI/MGZ) into shards"
SHARD_DESCRIPTION = (
    "Convert raw recordings into sharded WebDataset tar files plus manifest.json. "
    "Re-running the same command resumes an interrupted run. "
    "Across N jobs (a SLURM array): run the same command with --part K/N in each, "
    "then `neurotrain shard --merge DIR` once."
)


def add_shard_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``shard`` placeholder that lists it in ``neurotrain --help`` (see ``run_shard``)."""
    sub.add_parser("shard", help=SHARD_HELP, add_help=False)


@dataclass
class ShardCommand:
    """A parsed ``neurotrain shard`` command line: its arguments and the options."""

    sources: list[str]
    out: str | None
    progress: bool
    options: ShardOptions
    part: tuple[int, int] | None = None  # --part K/N
    merge: str | None = None  # --merge DIR


def shard_parser() -> ArgumentParser:
    """The ``neurotrain shard`` parser: the command arguments plus one option per ``ShardOptions`` field."""
    from jsonargparse import ArgumentParser

    from neurotrain.datamodules.sharding.options import OPTION_GROUPS, ShardOptions

    parser = ArgumentParser(
        prog="neurotrain shard", description=SHARD_DESCRIPTION, exit_on_error=True, default_env=False
    )
    parser.add_argument(
        "sources",
        nargs="*",
        default=[],
        metavar="SOURCE",
        help="BIDS root, folder, recording file, or example:NAME (eeg, fmri, fmri_rest, t1, ieeg); "
        "one or more, none with --merge",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (created; required unless --merge)")
    parser.add_argument(
        "--part",
        metavar="K/N",
        help="shard only part K of N of the recordings (round robin over the sorted recording ids) and "
        "write DIR/.neurotrain/manifest.part-K-of-N.json instead of manifest.json",
    )
    parser.add_argument(
        "--merge",
        metavar="DIR",
        help="no SOURCE: merge the complete set of --part K/N results in DIR into DIR/manifest.json",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    hints = typing.get_type_hints(ShardOptions)
    groups: dict[str | None, Any] = {None: parser}
    groups.update((name, parser.add_argument_group(name)) for name in OPTION_GROUPS)
    for f in fields(ShardOptions):
        groups[f.metadata.get("group")].add_argument(
            option_flag(f), dest=f.name, **_argument(f, hints[f.name])
        )
    return parser


def option_flag(f: Field) -> str:
    """The command-line flag of a ``ShardOptions`` field: its ``flag`` metadata, else ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _argument(f: Field, hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords for field ``f`` annotated ``hint``."""
    if not f.metadata.get("help"):
        raise TypeError(f"ShardOptions.{f.name} has no command-line help (metadata['help'])")
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    kwargs: dict[str, Any] = {"help": f.metadata["help"], "default": default, "type": hint}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        kwargs.update(type=args[0], nargs="+")
    elif origin is tuple:
        if Ellipsis in args or len(set(args)) != 1:
            raise TypeError(f"ShardOptions.{f.name}: only tuple[X, X, ...] of one type maps to nargs")
        kwargs.update(type=args[0], nargs=len(args), default=list(default))  # jsonargparse fills a list
    choices = [a for a in args if a is not type(None)]
    if origin is not typing.Literal and len(choices) == 1 and typing.get_origin(choices[0]) is typing.Literal:
        kwargs["metavar"] = "{" + ",".join(map(str, typing.get_args(choices[0]))) + "}"  # X | None
    if f.metadata.get("metavar"):
        kwargs["metavar"] = f.metadata["metavar"]
    return kwargs


def parse_shard_args(argv: Sequence[str]) -> ShardCommand:
    """Parse a ``neurotrain shard`` command line (without ``shard``).

    A malformed command line prints the parser's error naming the option and exits 2; option values
    that parse but do not fit together raise ``ValueError`` from ``ShardOptions``.
    """
    from neurotrain.datamodules.sharding.options import ShardOptions

    parser = shard_parser()
    cfg = parser.parse_args(list(argv))
    options = ShardOptions(**{f.name: cfg[f.name] for f in fields(ShardOptions)})
    sources, progress = list(cfg.sources), not cfg.no_progress
    if cfg.merge is not None:
        given = [a for a, v in (("SOURCE", sources), ("--out", cfg.out), ("--part", cfg.part)) if v]
        if given:
            parser.error(f"--merge DIR takes no {', '.join(given)}: it merges the parts already in DIR")
        default = ShardOptions(workers=options.workers)
        changed = [
            option_flag(f)
            for f in fields(ShardOptions)
            if getattr(options, f.name) != getattr(default, f.name)
        ]
        if changed:
            parser.error(f"--merge takes its options from the parts; leave out {', '.join(changed)}")
        return ShardCommand([], None, progress, options, merge=cfg.merge)
    missing = [a for a, v in (("SOURCE", sources), ("--out", cfg.out)) if not v]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)} (or --merge DIR alone)")
    part = None
    if cfg.part is not None:
        from neurotrain.datamodules.sharding.distributed import parse_part

        try:
            part = parse_part(cfg.part)
        except ValueError as exc:
            parser.error(str(exc))
    return ShardCommand(sources, cfg.out, progress, options, part=part)


def without_part(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--part K/N`` (``--part=K/N``, or an abbreviation argparse accepts).

    What is left is the command of one run over every part, recorded as the manifest's command.
    """
    out, args = [], list(argv)
    i = 0
    while i < len(args):
        flag, eq, _ = args[i].partition("=")
        if len(flag) >= 3 and "--part".startswith(flag):
            i += 1 if eq else 2
            continue
        out.append(args[i])
        i += 1
    return out


def run_shard(argv: Sequence[str]) -> int:
    """Run ``neurotrain shard`` (``argv`` without ``shard``); prints a one-line result, returns the exit code."""
    try:
        cmd = parse_shard_args(argv)  # before importing the pipeline (MNE): --help stays instant
    except ValueError as exc:
        return _shard_failed(exc)
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.distributed import merge_parts, missing_parts
    from neurotrain.datamodules.sharding.options import ShardError

    if cmd.merge is not None:
        try:
            manifest = merge_parts(cmd.merge)
        except ShardError as exc:
            return _shard_failed(exc, merging=True)
        _print_written(cmd.merge, manifest)
        return 0
    assert cmd.out is not None
    try:
        result = shard_dataset(
            cmd.sources,
            cmd.out,
            command=["neurotrain", "shard", *without_part(argv)],
            progress=cmd.progress,
            options=cmd.options,
            part=cmd.part,
        )
    except (ShardError, ValueError) as exc:
        return _shard_failed(exc)
    if cmd.part is None:
        _print_written(cmd.out, result)
        return 0
    k, n = cmd.part
    t = result["totals"]
    missing = missing_parts(cmd.out, n)
    print(
        f"wrote part {k}/{n} of {cmd.out}: {t['recordings']} recordings, {t['samples']} samples, "
        f"{t['shards']} shards, {t['bytes'] / 1e6:.1f} MB"
        + (f"; skipped {len(result['skipped'])} file(s)" if result["skipped"] else "")
        + (
            f"; parts still to run: {', '.join(f'{m}/{n}' for m in missing)}"
            if missing
            else f"; all {n} parts are done: run `neurotrain shard --merge {cmd.out}`"
        )
    )
    return 0


def _print_written(out: str, manifest: dict[str, Any]) -> None:
    t = manifest["totals"]
    print(
        f"wrote {out}: {t['recordings']} recordings, {t['subjects']} subjects, {t['samples']} samples, "
        f"{len(manifest['shards'])} shards, {t['bytes'] / 1e6:.1f} MB, {t['hours']:.2f} h"
        + (f"; skipped {len(manifest['skipped'])} file(s)" if manifest["skipped"] else "")
    )


def _shard_failed(exc: Exception, merging: bool = False) -> int:
    print(f"error: {exc}", file=sys.stderr)
    if merging:
        print("no manifest was written", file=sys.stderr)
    else:
        print("no manifest was written; finished recordings are kept and a re-run resumes", file=sys.stderr)
    return 1


def add_inspect_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain inspect``."""
    p = sub.add_parser("inspect", help="summarise a shard dataset; --verify re-hashes every shard")
    p.add_argument("directory", metavar="DIR", help="folder holding manifest.json and the shards")
    p.add_argument("--verify", action="store_true", help="re-hash every shard against the manifest")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --verify: hash N shards at once (default: the CPU count, at most 8)",
    )
    p.set_defaults(handler=_inspect)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _inspect(args: argparse.Namespace) -> int:
    from neurotrain.datamodules.format.manifest import ManifestError
    from neurotrain.datamodules.sharding.inspection import print_summary

    if args.workers is not None and not args.verify:
        print(
            "error: --workers N sets how many shards --verify hashes at once; add --verify", file=sys.stderr
        )
        return 2
    try:
        return print_summary(args.directory, verify=args.verify, workers=args.workers)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_fetch_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain fetch``."""
    from neurotrain.datamodules.sharding.examples import DATASETS

    p = sub.add_parser("fetch", help="fetch example recordings that ship in PyPI packages into the cache")
    p.add_argument(
        "names", nargs="+", choices=sorted(DATASETS), metavar="NAME", help=", ".join(sorted(DATASETS))
    )
    p.set_defaults(handler=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    """Print each dataset's folder on stdout; what a dataset lacks (its ``note``) goes to stderr."""
    from neurotrain.datamodules.sharding.examples import DATASETS, FetchError, fetch

    for name in args.names:
        try:
            print(fetch(name, quiet=False))
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if DATASETS[name].note:
            print(f"note ({name}): {DATASETS[name].note}", file=sys.stderr)
    return 0
