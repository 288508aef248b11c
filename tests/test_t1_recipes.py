"""Structural T1 as a training modality: `t1_pretrain` and `t1_finetune` on synthetic BIDS T1.

The dataset (`synthetic_bids_t1`) plants age in the ventricles' size and a patient lesion; each
learning test scores held-out subjects (a subject split at shard time) against a trivial
predictor or a shuffled-label control sharded from the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from synthetic_bids_t1 import write_bids_t1

from neurotrain.datamodules import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.options import ShardError
from neurotrain.models.modules import VolumePretrainModule, VolumeRegressorModule
from neurotrain.models.modules.volume import patch_mask
from neurotrain.train.run.lightning_cli import build_cli

SHAPE = (32, 40, 32)
N_SUBJECTS = 40
SPLIT = (0.75, 0.25, 0.0)


def _shard(root: Path, out: Path) -> Path:
    shard_dataset([root], out, volume_shape=SHAPE, split_ratios=SPLIT)
    return out


@pytest.fixture(scope="module")
def t1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("t1")
    real = _shard(write_bids_t1(base / "bids", N_SUBJECTS), base / "shards")
    control = _shard(
        write_bids_t1(base / "bids_shuffled", N_SUBJECTS, shuffle_column="age"), base / "control"
    )
    return {"shards": real, "control": control, "root": base}


def fit(config: str, data: Path, root: Path, run: str, *extra: str):
    args = [
        "fit",
        "--config",
        config,
        f"--data.datasets=[{data}]",
        "--data.val_split=val",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.default_root_dir={root}",
        f"--run_name={run}",
        "--model.encoder.patch_size=8",
        *extra,
    ]
    return build_cli(args)


def test_shards_hold_ras_volumes_with_subject_labels_and_the_preprocessing(t1: dict[str, Path]) -> None:
    manifest = json.loads((t1["shards"] / "manifest.json").read_text())
    dm = ShardDataModule([str(t1["shards"])], label_source="participants", label_column="age", batch_size=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["volume"].shape[1:] == SHAPE and batch["volume"].dtype == torch.float32
    assert torch.isfinite(batch["labels"]).all() and float(batch["labels"].min()) >= 20
    split = manifest["splits"]
    assert len(split["train"]) + len(split["val"]) == N_SUBJECTS and not set(split["train"]) & set(
        split["val"]
    )
    rec = manifest["recordings"][0]
    prep = rec.get("preprocessing") or {}
    assert prep.get("clip_percentiles") == [0.5, 99.5] and prep.get("reorient") == "RAS"


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("t1_pretrain", []),
        ("t1_finetune", []),
        (
            "t1_finetune",
            [
                "--model=neurotrain.models.modules.VolumeClassifierModule",
                "--model.num_classes=2",
                "--data.label_column=group",
                "--data.label_map={control: 0, patient: 1}",
            ],
        ),
    ],
    ids=["pretrain", "finetune-regression", "finetune-classification"],
)
def test_t1_configs_run_with_fast_dev_run(
    config: str, extra: list[str], t1: dict[str, Path], tmp_path: Path
) -> None:
    cli = fit(config, t1["shards"], tmp_path, "run", "--trainer.fast_dev_run=2", *extra)
    assert cli.trainer.global_step == 2


def _trivial_and_model_losses(model: VolumePretrainModule, dm: ShardDataModule) -> tuple[float, float]:
    """Masked-patch MSE of the model and of predicting each volume's mean visible anatomy voxel,
    on the same masks (held-out volumes)."""
    model.eval()
    num = {"model": 0.0, "trivial": 0.0}
    den = 0.0
    with torch.no_grad():
        for i, batch in enumerate(dm.val_dataloader()):
            g = torch.Generator().manual_seed(i)
            out = model.compute_loss(batch, g)
            target, mask = out["target"], out["token_mask"]  # [B, N, p³], [B, N]
            g = torch.Generator().manual_seed(i)
            visible = ~patch_mask(target.shape[0], target.shape[1], model.mask_ratio, target.device, g)
            anatomy = target.std(dim=-1) > 1e-6
            keep = (visible & anatomy)[..., None].float()
            mean = (target * keep).sum(dim=(1, 2)) / (keep.sum(dim=(1, 2)) * target.shape[-1]).clamp_min(1)
            w = mask.float()
            num["model"] += float(((out["prediction"] - target).pow(2).mean(-1) * w).sum())
            num["trivial"] += float(((target - mean[:, None, None]).pow(2).mean(-1) * w).sum())
            den += float(w.sum())
    return num["model"] / den, num["trivial"] / den


@pytest.fixture(scope="module")
def pretrained(t1: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("t1_pre")
    torch.manual_seed(0)
    args = ["--trainer.max_steps=120", "--data.batch_size=8", "--model.optimizer.lr=3e-3"]
    fit("t1_pretrain", t1["shards"], root, "pre", *args, "--trainer.limit_val_batches=0")
    return root / "pre" / "checkpoints" / "last.ckpt"


def test_t1_pretrain_reconstructs_held_out_volumes_better_than_their_mean(
    pretrained: Path, t1: dict[str, Path]
) -> None:
    model = VolumePretrainModule.load_from_checkpoint(pretrained, map_location="cpu", weights_only=True)
    dm = ShardDataModule([str(t1["shards"])], batch_size=8, val_split="val")
    dm.setup("validate")
    learned, trivial = _trivial_and_model_losses(model, dm)
    assert learned < 0.6 * trivial, (learned, trivial)  # measured: 0.42 of the trivial loss


def _val_r2(model: VolumeRegressorModule, shards: Path) -> float:
    """R² of the model's predictions of the held-out subjects' true ages (not Pearson r: r is blind
    to scale, and a control whose nearly constant predictions still follow the dominant image
    feature would score a high r while predicting nothing)."""
    dm = ShardDataModule([str(shards)], label_source="participants", label_column="age", batch_size=8)
    dm.setup("validate")
    model.eval()
    preds, labels = [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            preds.append(model(batch)[:, 0])
            labels.append(batch["labels"].float())
    p, y = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    return float(1.0 - ((p - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


@pytest.mark.slow  # two 25-epoch fine-tunes (~2 min on 2 cores)
def test_t1_finetune_recovers_age_well_above_a_shuffled_label_control(
    pretrained: Path, t1: dict[str, Path], tmp_path: Path
) -> None:
    runs = {}
    for name in ("shards", "control"):
        torch.manual_seed(0)
        cli = fit(
            "t1_finetune",
            t1[name],
            tmp_path,
            name,
            "--trainer.max_epochs=25",
            f"--model.init_from={pretrained}",
        )
        runs[name] = _val_r2(cli.model, t1["shards"])
    print(f"t1_finetune held-out age R²: {runs['shards']:.3f}, shuffled-label control {runs['control']:.3f}")
    # held-out subjects (10): R² of predicted vs their true age; the control learned permuted ages
    assert runs["shards"] > 0.6 and runs["control"] < 0.3 and runs["shards"] > runs["control"] + 0.5, (
        runs
    )  # 0.80 vs 0.09
    assert isinstance(cli.model, VolumeRegressorModule)


def test_a_singular_affine_names_the_file_and_writes_nothing(tmp_path: Path) -> None:
    root = write_bids_t1(tmp_path / "bids", 2)
    path = root / "sub-02/anat/sub-02_T1w.nii.gz"
    img = nib.Nifti1Image(np.asarray(nib.load(path).dataobj), None)
    hdr = img.header  # a header as a broken converter writes it: a collapsed z axis, no inverse
    hdr["qform_code"], hdr["sform_code"] = 0, 1
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0.0, 0]
    nib.save(img, path)
    assert abs(np.linalg.det(nib.load(path).affine[:3, :3])) == 0.0
    out = tmp_path / "out"
    with pytest.raises(ShardError, match=r"sub-02_T1w\.nii\.gz.*affine .*not invertible"):
        shard_dataset([root], out, volume_shape=SHAPE)
    # sub-01's finished shard stays (a re-run resumes from it); nothing of sub-02, no manifest
    assert [p.name for p in out.glob("*.tar")] == ["sub-01_T1w-0000.tar"]
    assert not (out / "manifest.json").exists() and not list(out.rglob("*sub-02*"))


def test_a_brain_mask_beside_the_t1_is_applied_and_recorded(tmp_path: Path) -> None:
    root = write_bids_t1(tmp_path / "bids", 1)
    path = root / "sub-01/anat/sub-01_T1w.nii.gz"
    img = nib.load(path)
    mask = np.zeros(img.shape, np.uint8)
    mask[: img.shape[0] // 2] = 1  # keep one half only
    nib.save(nib.Nifti1Image(mask, img.affine), path.with_name("sub-01_desc-brain_mask.nii.gz"))
    plain = tmp_path / "plain"
    shard_dataset([root], tmp_path / "masked", volume_shape=SHAPE)
    (path.with_name("sub-01_desc-brain_mask.nii.gz")).unlink()
    shard_dataset([root], plain, volume_shape=SHAPE)

    def volume(folder: Path) -> tuple[np.ndarray, dict]:
        dm = ShardDataModule([str(folder)], batch_size=1, train_split="train")
        dm.setup("fit")
        manifest = json.loads((folder / "manifest.json").read_text())
        return next(iter(dm.train_dataloader()))["volume"][0].numpy(), manifest["recordings"][0]

    masked, rec_masked = volume(tmp_path / "masked")
    full, rec_full = volume(plain)
    fg = lambda v: int((v > v.min() + 1e-3).sum())  # noqa: E731 - voxels above the background
    assert fg(masked) < 0.7 * fg(full)  # half the head is gone
    assert rec_masked["preprocessing"]["brain_mask"] == "sub-01_desc-brain_mask.nii.gz"
    assert rec_full["preprocessing"]["brain_mask"] is None


def test_modality_picks_the_t1s_or_the_runs_of_a_bids_root_holding_both(tmp_path: Path) -> None:
    from synthetic_bids_fmri import write_bids_fmri

    from neurotrain.datamodules.sharding.options import ShardOptions
    from neurotrain.datamodules.sharding.sources import discover

    root = tmp_path / "bids"
    write_bids_fmri(root, ["01", "02"], trs=2.0)
    write_bids_t1(root, 2)
    kinds = {m: {i.kind for i in discover([root], ShardOptions(modality=m))} for m in ("anat", "fmri", None)}
    assert kinds == {"anat": {"anat"}, "fmri": {"fmri"}, None: {"anat", "fmri"}}
    manifest = shard_dataset([root], tmp_path / "t1", modality="anat", volume_shape=SHAPE)
    assert {r["modality"] for r in manifest["recordings"]} == {"anat"} and len(manifest["recordings"]) == 2
