"""The optimiser settings (`OptimizerConfig`), parameter groups and the warmup-cosine schedule.

Every module trains with AdamW over `param_groups` (weight decay split, layer-wise lr decay),
stepped by `warmup_cosine`; `OptimizerConfig` is the one typed group of its settings, configured
as ``model.init_args.optimizer: {lr: 1.0e-3, weight_decay: 0.05, warmup_steps: 50}`` (or
``--model.optimizer.lr=3e-4``) for every module alike.

Layer-wise lr decay (BEiT, MAE fine-tuning): the parameters of encoder layer ``i`` of ``L`` train at
``lr * decay ** (L + 1 - i)``, so the embeddings (layer 0) move least and the head (layer L + 1)
at the full lr; fine-tuning then changes the general low layers less than the task-specific top.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class OptimizerConfig:
    """AdamW with a linear warmup and a cosine decay, the same for every module.

    Args:
        lr: peak learning rate (reached after ``warmup_steps``).
        weight_decay: AdamW weight decay of weight matrices (biases and norms get none).
        warmup_steps: optimizer steps of linear warmup from ~0 to ``lr``.
        min_lr_ratio: the cosine ends at ``min_lr_ratio * lr`` at the run's last step.
        betas: AdamW's moment coefficients.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers), as saved in hyperparameters and checkpoints."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out


def optimizer_config(value: OptimizerConfig | dict | None) -> OptimizerConfig:
    """An `OptimizerConfig` from itself, a dict (saved hyperparameters) or None (the defaults)."""
    if value is None:
        return OptimizerConfig()
    if isinstance(value, dict):
        return OptimizerConfig(**{**value, "betas": tuple(value.get("betas", (0.9, 0.95)))})
    return value


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    num_layers: int = 0,
    layer_id: Callable[[str], int] | None = None,
) -> list[dict]:
    """Trainable parameters of ``model`` grouped by (layer, decayed or not).

    ``layer_id(name)`` maps a parameter name of ``model`` to 0..num_layers + 1; without it every
    parameter is in the top layer (full lr). Biases, norms and other 1-D parameters get no weight
    decay (decaying a LayerNorm gain towards 0 only hurts). Each group carries ``lr`` already
    scaled and ``lr_scale`` for reference.
    """
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name) if layer_id is not None else num_layers + 1
        decayed = param.ndim >= 2
        scale = layer_decay ** (num_layers + 1 - layer)
        group = groups.setdefault(
            (layer, decayed),
            {
                "params": [],
                "names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decayed else 0.0,
                "layer_id": layer,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int | None, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warmup over ``warmup_steps``, then cosine to ``min_lr_ratio * lr`` at ``total_steps``.

    ``total_steps`` None (an endless stream with no ``max_steps``) holds the lr after warmup.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if total_steps is None or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def adamw_with_schedule(module: Any, groups: list[dict], cfg: OptimizerConfig) -> dict:
    """``configure_optimizers``' answer: AdamW over ``groups`` with warmup-cosine per step.

    The schedule ends at the trainer's ``estimated_stepping_batches``; a module not attached to a
    trainer (or with no known end) holds the lr after warmup.
    """
    import torch

    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    try:
        total = module.trainer.estimated_stepping_batches
    except RuntimeError:  # not attached to a Trainer
        total = None
    total = int(total) if total is not None and total != float("inf") else None
    scheduler = warmup_cosine(optimizer, cfg.warmup_steps, total, cfg.min_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
