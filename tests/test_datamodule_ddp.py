"""Two CPU processes (gloo): equal batches per rank, no window on two ranks, no hang with one shard."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_datamodule import synthetic_shards


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 60 s recording in one segment: one shard for 2 ranks x 2 workers."""
    return synthetic_shards(tmp_path_factory.mktemp("ddp"), "dd", ["a"], seconds=60.0, segment_seconds=60.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Each rank records what its loaders deliver; the all_reduce per batch would hang if one rank
# had more batches than the other, which the subprocess timeout turns into a failure.
RANK_SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
from neurotrain.datamodules.loading.datamodule import ShardDataModule

def main(rank, folder, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    dm = ShardDataModule([folder], window_seconds=1.0, batch_size=4, num_workers=2, val_split="train")
    result = {}
    for name, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
        seen, n = [], 0
        for batch in loader:
            seen += batch["sample_id"]
            n += 1
            dist.all_reduce(torch.ones(1))
        result[name] = {"ids": seen, "batches": n, "len": len(loader)}
    json.dump(result, open(f"{out}/rank{rank}.json", "w"))
    dist.destroy_process_group()

if __name__ == "__main__":
    # fork: ranks started by spawn would also spawn their DataLoader workers (seconds per epoch)
    torch.multiprocessing.start_processes(main, args=tuple(sys.argv[1:]), nprocs=2, start_method="fork")
"""


def test_two_ranks_get_equal_disjoint_batches_from_one_shard(one_shard: Path, tmp_path: Path) -> None:
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(one_shard), str(tmp_path), str(free_port())],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # 60 windows: 30 per rank; training drops the partial batch (7 x 4), evaluation keeps it (8)
    assert r0["train"]["batches"] == r1["train"]["batches"] == r0["train"]["len"] == 7
    assert r0["val"]["batches"] == r1["val"]["batches"] == 8
    for split, n in (("train", 28), ("val", 30)):
        a, b = set(r0[split]["ids"]), set(r1[split]["ids"])
        assert len(a) == len(b) == n and not a & b
    assert len(set(r0["val"]["ids"]) | set(r1["val"]["ids"])) == 60


LIGHTNING_SCRIPT = """
import json, sys
import pytorch_lightning as pl
sys.path.insert(0, sys.argv[3])
from fixtures_datamodule import Recorder
from neurotrain.datamodules.loading.datamodule import ShardDataModule

class R(Recorder):
    def on_train_epoch_end(self):
        json.dump(self.seen, open(f"{sys.argv[2]}/seen{self.global_rank}_{self.current_epoch}.json", "w"))
        self.seen = []

if __name__ == "__main__":
    dm = ShardDataModule([sys.argv[1]], window_seconds=1.0, batch_size=4, num_workers=1)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(R(), datamodule=dm)
"""


def test_lightning_ddp_two_cpu_ranks(one_shard: Path, tmp_path: Path) -> None:
    script = tmp_path / "fit.py"
    script.write_text(LIGHTNING_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(one_shard), str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for epoch in (0, 1):
        a, b = (set(json.loads((tmp_path / f"seen{r}_{epoch}.json").read_text())) for r in (0, 1))
        assert len(a) == len(b) == 28 and not a & b
