"""Training strategies: DeepSpeed ZeRO on GPUs, and the same code path on CPU processes.

Lightning's ``DeepSpeedStrategy`` refuses anything but CUDA. ``CPUDeepSpeedStrategy`` skips
that guard and runs DeepSpeed over gloo on CPU processes, so the test suite (and a laptop)
exercises the exact ZeRO code path a cluster uses: it gives each process a device index,
and skips compiling DeepSpeed's shared-memory all-reduce op (gloo does the reduction). Pass a
torch optimizer from ``configure_optimizers`` so no fused CUDA op is built.

Registered names (``--trainer.strategy=NAME``):
- ``deepspeed_stage_2`` / ``deepspeed_stage_3`` (Lightning's, GPUs; bf16 via ``--trainer.precision=bf16-mixed``)
- ``deepspeed_stage_2_cpu`` / ``deepspeed_stage_3_cpu`` (this module)

Multi-GPU and multi-node need no code change, only the launch::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m neurotrain.train.cli fit --config train/configs/eeg_pretrain_deepspeed.yaml
    srun --ntasks-per-node 8 neurotrain fit --config train/configs/eeg_pretrain_deepspeed.yaml \\
        --trainer.num_nodes 2 --trainer.devices 8
"""

from __future__ import annotations

import os
from typing import Any

import torch
from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy, StrategyRegistry


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO (stage 2 or 3) on CPU processes communicating over gloo."""

    strategy_name = "deepspeed_cpu"

    def __init__(self, stage: int = 2, **kwargs: Any) -> None:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed picks an accelerator
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(stage=stage, **kwargs)

    def setup_environment(self) -> None:
        # Skip DeepSpeedStrategy's "CUDA only" guard; everything else is DDP's set-up.
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        # DeepSpeed validates device indices; CPU devices have none, so number them by rank.
        if self.parallel_devices is not None:
            self.parallel_devices = [torch.device("cpu", i) for i in range(len(self.parallel_devices))]
        super().setup_distributed()

    def _init_deepspeed_distributed(self) -> None:
        import importlib

        # ``deepspeed.comm.torch`` the module, not the ``torch`` name that package re-exports.
        ds_comm = importlib.import_module("deepspeed.comm.torch")
        ds_comm.build_shm_op = lambda: None  # gloo reduces; no C++ shared-memory op to compile
        super()._init_deepspeed_distributed()


def register_strategies() -> None:
    """Add the CPU DeepSpeed names to Lightning's strategy registry (idempotent)."""
    for stage in (2, 3):
        name = f"deepspeed_stage_{stage}_cpu"
        if name not in StrategyRegistry:
            StrategyRegistry.register(
                name,
                CPUDeepSpeedStrategy,
                description=f"DeepSpeed ZeRO stage {stage} on CPU (gloo)",
                stage=stage,
            )


register_strategies()
