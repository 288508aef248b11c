"""``neurotrain export CKPT --out model.safetensors``: one portable weights file from any checkpoint.

A DeepSpeed checkpoint is a directory of ZeRO shards; a plain Lightning checkpoint is one
pickle-free-loadable file. Either becomes one fp32 ``.safetensors`` file whose metadata carries
the model config (hyperparameters), the normalisation statistics and the data description,
which ``--model.init_from`` accepts. Nothing is unpickled beyond tensors, plain types and the
allow-list of ``models.checkpoint_io``: a file is read with its ``safe_load``, and a DeepSpeed
directory is first checked file by file (``check_checkpoint``) before DeepSpeed's own reader
(which unpickles fully) consolidates the ZeRO shards; its client state is read with ``safe_load``.
A refused or unreadable checkpoint is a one-line error naming the file, exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from neurotrain.datamodules.io.files import atomic_path
from neurotrain.models.checkpoint_io import CheckpointError, check_checkpoint, safe_load

_WRAPPER_PREFIX = "_forward_module."
_CLIENT_KEYS = ("hyper_parameters", "normalization", "data", "epoch", "global_step")


def export_checkpoint(src: str | Path, out: str | Path) -> Path:
    """Write ``out`` (.safetensors) from checkpoint ``src`` (file or DeepSpeed directory)."""
    import torch
    from safetensors.torch import save_file

    src, out = Path(src), Path(out)
    if src.is_dir():
        state, client = _read_deepspeed(src)
    elif src.is_file():
        ckpt = safe_load(src)
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{src} is not a checkpoint dict (got {type(ckpt).__name__})")
        state, client = ckpt.get("state_dict", ckpt), ckpt
    else:
        raise FileNotFoundError(f"checkpoint not found: {src}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{src}: its state_dict is not a mapping of names to tensors")
    tensors = {
        k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in state.items()
    }
    metadata = {"format": "neurotrain", "source": str(src)}
    for key in _CLIENT_KEYS:
        if client.get(key) is not None:
            metadata[key] = json.dumps(client[key], default=str)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out


def _read_deepspeed(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint, get_model_state_file
    from pytorch_lightning.utilities.deepspeed import ds_checkpoint_dir

    check_checkpoint(directory)  # every file DeepSpeed's reader opens passes the restricted unpickler
    state = get_fp32_state_dict_from_zero_checkpoint(str(directory))
    state = {k.removeprefix(_WRAPPER_PREFIX): v for k, v in state.items()}
    inner = ds_checkpoint_dir(str(directory))
    client: dict[str, Any] = {}
    for stage in (2, 3):  # the client-state file is named differently for ZeRO-3
        try:
            model_file = get_model_state_file(inner, stage)
        except FileNotFoundError:
            continue
        client = safe_load(model_file)
        if not isinstance(client, dict):
            raise CheckpointError(f"{model_file}: DeepSpeed's client state is not a dict")
        break
    return state, client


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain export``."""
    p = sub.add_parser(
        "export", help="consolidate a checkpoint (DeepSpeed directory or file) into one .safetensors"
    )
    p.add_argument(
        "checkpoint", metavar="CKPT", help="Lightning .ckpt file or DeepSpeed checkpoint directory"
    )
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        out = export_checkpoint(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0
