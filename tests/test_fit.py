"""`neurotrain fit`: every shipped config, DeepSpeed on 2 CPU processes, export, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.examples import fetch
from neurotrain.train.cli import main
from neurotrain.train.run.lightning_cli import build_cli

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
CLI = [sys.executable, "-m", "neurotrain.train.cli"]


@pytest.fixture(scope="module")
def fmri_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = fetch("fmri_rest")
    out = tmp_path_factory.mktemp("fmri_shards")
    shard_dataset(
        [d / "sub-test_task-rs_bold.nii"],
        out,
        atlas=str(d / "Atlas/indexed_mask-Atlas.nii"),
        atlas_background=-1,
    )
    return out


def fit_args(config: str, data: Path, root: Path, run: str, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / f"{config}.yaml"),
        f"--data.datasets=[{data}]",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        f"--run_name={run}",
        *extra,
    ]


@pytest.mark.parametrize("config", ["eeg_pretrain", "eeg_finetune", "fmri_pretrain"])
def test_shipped_config_runs_with_fast_dev_run(
    config: str, eeg_shards: Path, fmri_shards: Path, tmp_path: Path
) -> None:
    data = fmri_shards if config.startswith("fmri") else eeg_shards
    cli = build_cli(fit_args(config, data, tmp_path, "run", "--trainer.fast_dev_run=2"))
    assert cli.trainer.global_step == 2  # two real optimizer steps on the shards
    assert (tmp_path / "run").is_dir()


def test_probe_config_keeps_the_encoder_frozen_and_reuses_its_tokens(
    eeg_shards: Path, tmp_path: Path
) -> None:
    args = fit_args(
        "eeg_probe",
        eeg_shards,
        tmp_path,
        "probe",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0",
    )
    torch.manual_seed(0)
    cli = build_cli(args)
    model = cli.model
    assert model.pool is not None and model.pool.out_dim == 32 * 16 * 16
    saved = torch.load(
        tmp_path / "probe" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert cli.trainer.current_epoch == 2
    # The second validation pass met the same windows as the first: served from the cache.
    cache = model.token_cache
    assert cache.hits >= 1 and cache.misses >= 1 and cache.bytes > 0
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert "pool.anchor_offset" in saved["state_dict"]  # the pool is saved with the head


def test_every_shipped_config_is_exercised() -> None:
    tested = {
        "eeg_pretrain",
        "eeg_finetune",
        "eeg_probe",
        "fmri_pretrain",
        "eeg_pretrain_deepspeed",
        "eeg_pretrain_deepspeed_stage3",
        "eeg_eegnet",  # these two: tests/test_braindecode_models.py
        "eeg_shallow",
        "ieeg_finetune",  # tests/test_continuous_target.py
        "mixed_pretrain",  # tests/test_mixed_pretrain.py
        "align_image",  # these two: tests/test_retrieval.py
        "align_signal",
        "fmri_finetune",  # tests/test_fmri_recipes.py
        "t1_pretrain",  # these two: tests/test_t1_recipes.py
        "t1_finetune",
        "subject_layers",  # tests/test_subject_layers.py
        "fusion_pretrain",  # these two: tests/test_fusion.py
        "fusion_finetune",
        "encode_factorised",  # these two: tests/test_encoding_readouts.py
        "encode_attention",
    }
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == tested


def test_pretrain_then_finetune_from_its_checkpoint(eeg_shards: Path, tmp_path: Path) -> None:
    args = fit_args(
        "eeg_pretrain",
        eeg_shards,
        tmp_path,
        "pre",
        "--trainer.max_steps=6",
        "--trainer.log_every_n_steps=2",
        "--trainer.limit_val_batches=2",
    )
    assert main(args) == 0
    run = tmp_path / "pre"
    assert (run / "config.yaml").exists() and (run / "metrics.csv").exists()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # self-describing: model config, normalisation, data manifest hash, data position
    assert ckpt["hyper_parameters"]["encoder"]["size"] == "tiny"
    eeg_norm = ckpt["normalization"]["datasets"][0]["per_type"]["eeg"]
    assert eeg_norm["scale"] > 1
    assert (
        len(ckpt["data"]["manifest_sha256"][0]) == 64
        and len(ckpt["data"]["channel_sets"][0]["ch_names"]) == 128
    )
    assert "ShardDataModule" in ckpt

    ft = fit_args(
        "eeg_finetune",
        eeg_shards,
        tmp_path,
        "ft",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        f"--model.init_from={run / 'checkpoints' / 'last.ckpt'}",
    )
    assert main(ft) == 0
    ft_ckpt = torch.load(tmp_path / "ft" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # the fine-tune normalised its data with the pretraining statistics
    assert ft_ckpt["normalization"]["datasets"][0]["per_type"]["eeg"] == eeg_norm


@pytest.mark.parametrize(
    "config,stage",
    [
        ("eeg_pretrain_deepspeed", 2),
        pytest.param("eeg_pretrain_deepspeed_stage3", 3, marks=pytest.mark.slow),  # ZeRO-3: slow suite
    ],
)
def test_deepspeed_on_two_cpu_processes_exports_and_reloads(
    config: str, stage: int, eeg_shards: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from neurotrain.models.modules import ClassifierModule

    shipped = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
    assert shipped["trainer"]["strategy"] == f"deepspeed_stage_{stage}"  # the GPU config's ZeRO stage
    cmd = CLI + fit_args(
        config,
        eeg_shards,
        tmp_path,
        "ds",
        "--trainer.devices=2",
        f"--trainer.strategy=deepspeed_stage_{stage}_cpu",
        "--trainer.precision=32-true",
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=1",
        "--model.encoder.size=tiny",
        "--data.batch_size=4",
        "--data.window_seconds=2.0",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = tmp_path / "ds" / "checkpoints" / "last.ckpt"
    assert last.is_dir()  # a DeepSpeed checkpoint is a directory of ZeRO shards
    out = tmp_path / "model.safetensors"
    assert main(["export", str(last), "--out", str(out)]) == 0
    weights = load_file(str(out))
    encoder_keys = [k for k in weights if k.startswith("encoder.")]
    assert encoder_keys and all(weights[k].dtype == torch.float32 for k in encoder_keys)

    clf = ClassifierModule(num_classes=2, encoder={"size": "tiny", "patch_size": 64}, init_from=str(out))
    for k in encoder_keys:
        torch.testing.assert_close(clf.state_dict()[k], weights[k])
    assert clf.normalization["datasets"][0]["per_type"]["eeg"]["scale"] > 1


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 16
    return ckpt["state_dict"]


@pytest.mark.slow  # three fits in subprocesses (~70 s); tests/test_fit_resume.py kills in the fast suite
def test_killed_run_resumes_to_the_same_weights(eeg_shards: Path, tmp_path: Path) -> None:
    def cmd(run: str, *extra: str) -> list[str]:
        return CLI + fit_args(
            "eeg_pretrain",
            eeg_shards,
            tmp_path,
            run,
            "--trainer.max_steps=16",
            "--checkpoint_every_n_steps=4",
            "--trainer.limit_val_batches=0",
            "--data.batch_size=8",
            *extra,
        )

    assert subprocess.run(cmd("whole"), capture_output=True, timeout=400).returncode == 0
    proc = subprocess.Popen(cmd("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 4 <= step < 16, "the run must die mid-way for this test to mean anything"
    resumed = subprocess.run(cmd("killed", "--ckpt_path=last"), capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    # Bit for bit in nearly every run; once, on a loaded machine, a resumed run differed by 1e-6
    # (CPU kernels may split a reduction differently). A skipped or repeated batch moves the weights
    # by ~1e-3, far above this tolerance.
    for k in a:
        torch.testing.assert_close(
            a[k], b[k], rtol=0, atol=1e-5, msg=lambda m, k=k: f"{k} (killed at step {step}): {m}"
        )


@pytest.fixture(scope="module")
def nan_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny shards whose training subject's signal is all NaN (``on_corrupt: fail`` refuses it)."""
    import numpy as np
    from fixtures_datamodule import manifest, synthetic_shards

    from neurotrain.datamodules.loading.tar_index import index_shard

    data = synthetic_shards(
        tmp_path_factory.mktemp("nan"), "nan", ["a", "b"], seconds=20.0, split_ratios=(0.5, 0.5, 0.0)
    )
    m = manifest(data)
    train = set(m["splits"]["train"])
    for entry in m["shards"]:
        for seg in index_shard(data / entry["name"], 0, entry, verify=False):
            if seg.meta.get("subject") in train:
                with open(data / entry["name"], "r+b") as fh:
                    fh.seek(seg.offset)
                    fh.write(np.full(int(np.prod(seg.shape)), np.nan, seg.dtype).tobytes())
    return data


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_shard_in_fit_is_one_line_unless_verbose(
    workers: int, nan_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neurotrain.datamodules.loading.tar_index import CorruptShardError

    args = fit_args(
        "eeg_pretrain",
        nan_shards,
        tmp_path,
        "bad",
        "--trainer.max_steps=2",
        "--trainer.num_sanity_val_steps=0",
        "--data.batch_size=4",
        f"--data.num_workers={workers}",
        "--data.worker_mode=processes",  # a worker's error comes back wrapped in its traceback
    )
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: sample ") and "non-finite values" in errors[0]
    assert not any("Traceback" in line for line in err)
    with pytest.raises(CorruptShardError, match="non-finite values in signal"):
        main([*args, "--verbose"])
