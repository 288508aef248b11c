"""Where the shipped run configs live (``train/configs/*.yaml``, installed with the package), and
``--config NAME``: a shipped config by name from any folder.

``neurotrain fit --config eeg_pretrain`` (or ``eeg_pretrain.yaml``) reads the shipped
``eeg_pretrain.yaml`` whatever the working folder; a path that exists always wins, so a user's own
``eeg_pretrain.yaml`` in the working folder is read instead. The checkout's path
``train/configs/eeg_pretrain.yaml``, given where it does not exist, reads the shipped file too.
`resolve_config_args` rewrites the command line before jsonargparse's ``ActionConfigFile`` sees
it, so the parser, its errors and the saved ``config.yaml`` are unchanged. Relative paths *inside* a config (``data.datasets:
[shards/eeg]``) stay relative to the working folder: the shards are the user's, not the package's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

_CONFIG_FLAGS = ("--config", "-c")  # LightningCLI's ActionConfigFile option
# A value that reads as a file name (no YAML/JSON text such as ``{trainer: {max_steps: 5}}``):
# one that is neither a file nor a shipped name is refused here, with the names on one line.
_NAME_LIKE = re.compile(r"[\w./\\~-]+")


class ConfigNameError(ValueError):
    """``--config`` names neither an existing file nor a shipped config."""


def shipped_config(name: str) -> Path:
    """The path of shipped config ``name`` (``eeg_pretrain`` or ``eeg_pretrain.yaml``)."""
    return CONFIGS_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")


def shipped_names() -> list[str]:
    """The names of the shipped configs (file stems of ``train/configs/*.yaml``), sorted."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def resolve_config(value: str) -> str:
    """``value`` of ``--config`` as the parser should read it: an existing path as given, else the
    shipped config of that name; YAML/JSON text is left to the parser.

    Raises `ConfigNameError` (one line, listing the shipped names) for a file name that is
    neither an existing file nor a shipped config.
    """
    if Path(value).exists() or not _NAME_LIKE.fullmatch(value):
        return value
    path = Path(value)
    shipped = shipped_config(path.name)
    # a bare name, or the checkout's ``train/configs/NAME.yaml`` given outside the checkout
    if (str(path.parent) == "." or path.parent.as_posix().endswith("train/configs")) and shipped.is_file():
        return str(shipped)
    raise ConfigNameError(
        f"--config {value}: no such file, and not a shipped config (shipped: {', '.join(shipped_names())}; "
        "`neurotrain configs` lists them)"
    )


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--config``/``-c`` value (``--config X`` or ``--config=X``) resolved by
    `resolve_config`; everything else unchanged."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        if flag in _CONFIG_FLAGS and eq:
            out.append(f"{flag}={resolve_config(value)}")
        elif arg in _CONFIG_FLAGS and i + 1 < len(args):
            out += [arg, resolve_config(args[i + 1])]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out
