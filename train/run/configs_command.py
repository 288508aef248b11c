"""``neurotrain configs``: the shipped run configs, to run by name or to copy and edit.

    neurotrain configs                                  one line per config: name and what it is
    neurotrain configs show eeg_pretrain > mine.yaml    the YAML, verbatim, to edit
    neurotrain fit --config mine.yaml                   (or --config eeg_pretrain, unchanged)

The description is the first sentence of each YAML's leading comment block. Names are the file stems of the package's
``train/configs/*.yaml`` (`neurotrain.train.run.configs`), which ``--config NAME`` reads from any
folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from neurotrain.train.run.configs import shipped_config, shipped_names


def describe(path: Path, width: int = 100) -> str:
    """The first sentence of a YAML file's leading comment block, without the ``#`` marks, cut to
    ``width`` characters with an ellipsis (empty when the file starts with YAML, not a comment)."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            break  # the block ends at the first line that is not a comment
        words += text.lstrip("#").split()
    text = _first_sentence(" ".join(words))
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _first_sentence(text: str) -> str:
    """``text`` up to its first full stop outside brackets (``0.75 s`` or ``e.g.`` inside do not end it)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "." and depth <= 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i]
    return text


def config_lines() -> list[str]:
    """``name  description`` for every shipped config, names aligned, sorted by name."""
    names = shipped_names()
    width = max((len(n) for n in names), default=0)
    return [f"{name:<{width}}  {describe(shipped_config(name))}".rstrip() for name in names]


HELP = "list the shipped run configs; `configs show NAME` prints one to copy"
DESCRIPTION = (
    "The run configs shipped with neurotrain: `neurotrain fit --config NAME` reads one from any "
    "folder; `neurotrain configs show NAME > mine.yaml` gives a copy to edit."
)


def add_configs_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain configs`` (list) and ``neurotrain configs show NAME``."""
    _add_arguments(sub.add_parser("configs", help=HELP, description=DESCRIPTION))


def run_configs(argv: list[str]) -> int:
    """``neurotrain configs ARGV…`` with its own parser: the console script hands it over by name,
    so listing configs imports nothing heavy (no Lightning)."""
    parser = argparse.ArgumentParser(prog="neurotrain configs", description=DESCRIPTION)
    _add_arguments(parser)
    return _run(parser.parse_args(argv))


def _add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="configs_action", metavar="ACTION")
    show = actions.add_parser("show", help="print a shipped config's YAML verbatim")
    show.add_argument("name", metavar="NAME", help="a shipped config (eeg_pretrain or eeg_pretrain.yaml)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return _print(args)
    except BrokenPipeError:  # ``neurotrain configs | head``: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _print(args: argparse.Namespace) -> int:
    if getattr(args, "configs_action", None) != "show":
        print("\n".join(config_lines()))
        return 0
    name = str(args.name).removesuffix(".yaml")
    if name not in shipped_names():  # names only: never a path outside the package's configs
        print(
            f"error: no shipped config {args.name!r} (shipped: {', '.join(shipped_names())})",
            file=sys.stderr,
        )
        return 2
    data = shipped_config(name).read_bytes()
    sys.stdout.flush()
    if hasattr(sys.stdout, "buffer"):  # byte for byte, whatever the console encoding
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(data.decode("utf-8"))
    return 0
