"""Loading checkpoints safely: nothing is unpickled beyond tensors, plain types and an allow-list.

Every checkpoint neurotrain reads goes through here: ``--model.init_from``, ``neurotrain export``
and the check ``neurotrain fit|validate|test|predict --ckpt_path`` runs before Lightning or
DeepSpeed open the checkpoint.

- ``safe_load(path)``: ``torch.load(weights_only=True)`` with the few library types a real
  checkpoint holds allowed (``ALLOWED_GLOBALS``, each with the reason it is there). Any other
  global in the file is refused with ``UnsafeCheckpointError``, one line naming the file and
  what it holds; an unreadable file raises ``CheckpointError``. Nothing of the file is ever
  executed, and no module the file names is imported unless it is on the allow-list.
- ``check_checkpoint(path)``: the check before a library reads a checkpoint with full
  unpickling (DeepSpeed reads its ``*.pt`` files with ``weights_only=False``): a file, or every
  ``*.pt`` file of a DeepSpeed checkpoint directory (and the folder its ``latest`` file names,
  which must be inside the directory), is loaded with ``safe_load``; only a checkpoint whose
  every file passes is handed on. A file that passes the restricted unpickler can only build
  allow-listed objects, so reading it again with full unpickling builds the same objects.
- ``load_encoder_weights`` / ``read_checkpoint``: encoder weights for ``init_from`` from
  a Lightning checkpoint (``.ckpt``/``.pt``: the encoder's keys are ``encoder.*`` inside
  ``state_dict``, or a bare state dict; ``checkpoint["normalization"]``, the data statistics the
  encoder was trained with, comes along), or a ``.safetensors`` file with ``encoder.*`` keys
  (what ``neurotrain export`` writes; its normalisation, when present, is JSON in the metadata
  entry ``"normalization"``).
"""

from __future__ import annotations

import importlib
import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Globals (``module.qualname``) a real checkpoint holds beyond what ``weights_only=True`` allows by
# default (tensors, dtypes, OrderedDict, plain containers and numbers): found by listing
# ``torch.serialization.get_unsafe_globals_in_checkpoint`` over the checkpoints the test suite
# writes (plain Lightning runs: none; DeepSpeed ZeRO-2 and ZeRO-3 runs: the optimizer-state files).
ALLOWED_GLOBALS: dict[str, str] = {
    "deepspeed.runtime.zero.config.ZeroStageEnum": (
        "an int enum (ZeRO stage 0-3) in every ZeRO *_optim_states.pt; unpickling it only looks up "
        "an enum member by value"
    ),
    "deepspeed.runtime.fp16.loss_scaler.LossScaler": (
        "the static loss scaler (its scale, a number) in every ZeRO *_optim_states.pt: fp32 and "
        "bf16 runs; rebuilt as a bare instance whose attributes are restored, no method runs"
    ),
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler": (
        "the same in place of LossScaler when a run uses fp16 with dynamic loss scaling "
        "(DeepSpeed's CreateLossScaler); numbers and a dtype"
    ),
    "deepspeed.utils.tensor_fragment.fragment_address": (
        "a dataclass of two ints (numel, start): the parameter slice mappings in ZeRO-2 *_optim_states.pt"
    ),
}

_DEEPSPEED_LATEST = "latest"  # the file in a DeepSpeed checkpoint directory naming the tag folder


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not loadable weights-only; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would unpickle something other than tensors, plain types and ``ALLOWED_GLOBALS``."""


def safe_load(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with ``ALLOWED_GLOBALS`` allowed, nothing else.

    ``mmap=True`` maps the tensors of a zip-format file instead of reading them (a check of a large
    optimizer state costs little memory). Raises ``UnsafeCheckpointError`` when the file holds any
    other global (naming the file and the globals), ``CheckpointError`` when it is not a
    readable torch file, ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:  # not the zip format: a legacy pickle, which mmap cannot read either
        names, mmap = [], False
    except Exception as err:  # a damaged zip, an OS error
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
    refused = [name for name in names if name not in ALLOWED_GLOBALS]
    if refused:
        raise UnsafeCheckpointError(_unsafe_message(path, ", ".join(refused)))
    allowed = [_import_global(path, name) for name in names]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            # a legacy (non-zip) pickle makes torch warn about its protocol; the refusal says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():  # not a pickle at all
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(err))  # the restricted unpickler refused it
        raise UnsafeCheckpointError(
            _unsafe_message(path, found.group(1)) if found else _unsafe_message(path, None, err)
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None


def check_checkpoint(path: str | Path) -> list[Path]:
    """Check a checkpoint file or DeepSpeed directory before any library reads it; the files checked.

    A file is loaded with ``safe_load``. A directory must be a DeepSpeed checkpoint: its
    ``latest`` file (when present) must name a folder inside it, and every ``*.pt`` file in it
    (and in that folder) must pass ``safe_load`` (memory-mapped). Raises ``UnsafeCheckpointError``
    or ``CheckpointError`` naming the first file that fails, ``FileNotFoundError`` when nothing
    is at ``path``.
    """
    path = Path(path)
    if path.is_file():
        safe_load(path, mmap=True)
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    files = set(path.rglob("*.pt"))
    latest = path / _DEEPSPEED_LATEST
    if latest.is_file():
        tag = latest.read_text(errors="replace").strip()
        folder = (path / tag).resolve()
        if not tag or not folder.is_relative_to(path.resolve()) or not folder.is_dir():
            raise UnsafeCheckpointError(
                f"refused checkpoint {latest}: it names the folder {tag!r}, which is not a folder "
                f"inside {path} (DeepSpeed would read its files from {folder})"
            )
        files |= set(folder.glob("*.pt"))
    files = {f for f in files if f.is_file()}
    if not files:
        raise CheckpointError(f"{path}: a folder without *.pt files, not a DeepSpeed checkpoint directory")
    for file in sorted(files):
        safe_load(file, mmap=True)
    return sorted(files)


def load_encoder_weights(
    encoder: nn.Module, path: str | Path, prefix: str = "encoder."
) -> dict[str, Any] | None:
    """Copy the ``prefix``-ed weights of ``path`` into ``encoder`` (strict); return the normalisation.

    Raises a clear error when the file has no such keys or they do not fit the encoder (a size
    or patch-size mismatch), instead of starting from random weights.
    """
    state, normalization = read_checkpoint(path)
    weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if not weights:
        raise KeyError(f"{path} holds no '{prefix}*' weights; its keys start with {sorted(state)[:5]}")
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ValueError(f"encoder weights in {path} do not fit this encoder's config: {error}") from error
    return normalization


def read_fitted(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None, dict[str, Any]]:
    """(state dict, normalisation or None, ``hyper_parameters`` or {}) of a Lightning/torch
    checkpoint file, from one weights-only read (``safe_load``)."""
    path = Path(path)
    checkpoint = safe_load(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a checkpoint dict (got {type(checkpoint).__name__})")
    state = checkpoint.get("state_dict", checkpoint)
    return state, checkpoint.get("normalization"), dict(checkpoint.get("hyper_parameters") or {})


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(state dict, normalisation or None) from a Lightning/torch checkpoint or a safetensors file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder (a DeepSpeed checkpoint?): `neurotrain export {path} --out "
            "model.safetensors` makes the one file init_from reads"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        normalization = json.loads(metadata["normalization"]) if "normalization" in metadata else None
        return load_file(str(path), device="cpu"), normalization
    state, normalization, _ = read_fitted(path)
    return state, normalization


def _import_global(path: Path, name: str) -> Any:
    """The object an ``ALLOWED_GLOBALS`` name stands for (only ever called with allow-listed names)."""
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{path}: holds {name}, which this environment cannot import ({err})") from None


def _unsafe_message(path: Path, globals_: str | None, err: Exception | None = None) -> str:
    """One line: the file, what it holds (its globals, or the unpickler's reason), what was done."""
    if globals_:
        what = f"it holds {globals_}, which is not a tensor, a plain container or an allow-listed type"
    else:
        what = f"it holds pickle code the weights-only unpickler refuses ({_weights_only_reason(err)})"
    return (
        f"refused checkpoint {path}: {what}; neurotrain loads checkpoints weights-only, so nothing "
        "in it was run (do not load this file with full unpickling unless you made it yourself)"
    )


def _weights_only_reason(err: Exception | None) -> str:
    """The restricted unpickler's own reason (``Unsupported operand 149``), from torch's long message."""
    text = str(err or "")
    if "WeightsUnpickler error:" in text:
        rest = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()]
        reason = next((line for line in rest if line), "")
        if reason:
            return reason
    return _first_line(err) if err else "unknown content"


def _first_line(err: BaseException) -> str:
    """``Type: first line of the message``, for errors quoted inside one-line messages."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
