"""Surface fMRI (GIfTI / MGH on fsaverage5) sharded as parcel means over a surface atlas.

Fixtures come from ``tests/synthetic_surface.py``: runs on nilearn's real fsaverage5 mesh, a
k-means atlas, and a known signal planted in two parcels (one per hemisphere).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import synthetic_surface as ss

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.readers.fmri_surface import read_surface_fmri
from neurotrain.datamodules.sharding.sources import discover

N_TIMES = 60
CONFIG = Path(__file__).resolve().parents[1] / "train" / "configs" / "fmri_pretrain.yaml"


def the_sample(out: Path) -> tuple[np.ndarray, dict]:
    """signal [P, T] and meta of the one sample of a shard folder."""
    (tar,) = sorted(out.glob("*.tar"))
    with tarfile.open(tar) as tf:
        files = {m.name.split(".", 1)[1]: tf.extractfile(m).read() for m in tf.getmembers()}
    return np.load(io.BytesIO(files["signal.npy"]), allow_pickle=False), json.loads(files["meta.json"])


def read(folder: Path, **options) -> object:
    (item,) = discover([folder], ShardOptions(**options))
    return read_surface_fmri(item, ShardOptions(**options))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return [str(p) for p in ss.write_atlas(tmp_path_factory.mktemp("atlas"), "annot")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("surface_runs")
    ss.write_bids_surface_run(root, "01", N_TIMES)
    return root


def test_both_hemispheres_are_one_sample_with_left_then_right_parcels_on_the_mesh(
    runs: Path, atlas: list[str], tmp_path: Path
) -> None:
    m = shard_dataset([runs], tmp_path / "out", surface_atlas=atlas, dtype="float32")
    (rec,) = m["recordings"]  # the hemi-L and hemi-R files are one recording
    assert rec["recording"] == "sub-01_task-rest_space-fsaverage5_bold" and rec["subject"] == "01"
    assert rec["n_channels"] == 2 * ss.N_PARCELS and rec["tr"] == pytest.approx(ss.TR)
    signal, meta = the_sample(tmp_path / "out")
    assert signal.shape == (2 * ss.N_PARCELS, N_TIMES)
    names = [f"{h}_parcel{v:02d}" for h in "LR" for v in range(1, ss.N_PARCELS + 1)]
    assert meta["ch_names"] == names and meta["ch_types"] == ["bold"] * len(names)
    assert meta["position_frame"] == "fsaverage" and meta["preprocessing"]["surface_mesh"] == "fsaverage5"
    # each centroid is the mean of its parcel's fsaverage5 pial vertices, in metres
    xyz, labels = ss.fsaverage5(), ss.kmeans_labels()
    expected = [
        xyz[h][labels[h] == v].mean(0) / 1000 for h in ("left", "right") for v in range(1, ss.N_PARCELS + 1)
    ]
    pos = np.array(meta["positions"])
    np.testing.assert_allclose(pos, np.array(expected), atol=1e-6)
    assert (pos[: ss.N_PARCELS, 0] < 0).all() and (pos[ss.N_PARCELS :, 0] > 0).all()  # left x < 0


def test_the_planted_parcel_signals_are_recovered_and_the_others_hold_none(
    runs: Path, atlas: list[str]
) -> None:
    ps = read(runs, surface_atlas=atlas)
    planted = ss.planted_signals(N_TIMES)
    for (hemi, value), k in ss.PLANTED.items():
        row = ps.names.index(f"{hemi[0].upper()}_parcel{value:02d}")
        assert corr(ps.data[row], planted[k]) > 0.95, ps.names[row]
        others = [i for i, n in enumerate(ps.names) if i != row and n[0] == hemi[0].upper()]
        # a parcel without the signal: its noise mean is independent of it (|r| < 0.45 for T = 60)
        assert max(abs(corr(ps.data[i], planted[k])) for i in others) < 0.45


@pytest.mark.parametrize("kind", ["label.gii", "npy"])
def test_label_gifti_and_npy_atlases_give_the_annotation_s_series(
    kind: str, runs: Path, atlas: list[str], tmp_path: Path
) -> None:
    reference = read(runs, surface_atlas=atlas)
    other = read(runs, surface_atlas=[str(p) for p in ss.write_atlas(tmp_path, kind)])
    np.testing.assert_allclose(other.data, reference.data, atol=1e-5)
    np.testing.assert_allclose(other.positions, reference.positions, atol=1e-7)
    # .label.gii carries the names of its label table; a .npy has none: parcel-<value>
    names = [f"parcel{v:02d}" if kind == "label.gii" else f"parcel-{v}" for v in range(1, ss.N_PARCELS + 1)]
    assert other.names == [f"{h}_{n}" for h in "LR" for n in names]


def test_mgh_runs_one_2d_gifti_array_and_a_hemi_pattern_read_the_same(
    atlas: list[str], tmp_path: Path
) -> None:
    left, right = ss.vertex_series("left", 20), ss.vertex_series("right", 20)
    ss.write_mgh_run(tmp_path / "mgh" / "lh.sub-02_rest.mgz", left)
    ss.write_mgh_run(tmp_path / "mgh" / "rh.sub-02_rest.mgz", right)
    ss.write_gifti_run(tmp_path / "gii" / "sub-02_hemi-L_bold.func.gii", left, one_array=True)
    ss.write_gifti_run(tmp_path / "gii" / "sub-02_hemi-R_bold.func.gii", right, one_array=True)
    pattern = atlas[0].replace("lh.", "{hemi}.")
    a, b = read(tmp_path / "mgh", surface_atlas=[pattern]), read(tmp_path / "gii", surface_atlas=atlas)
    assert a.data.shape == (2 * ss.N_PARCELS, 20) and a.tr == b.tr == pytest.approx(ss.TR)
    np.testing.assert_allclose(a.data, b.data, atol=1e-5)
    (item,) = discover([tmp_path / "mgh"], ShardOptions())
    assert item.subject == "sub-02_rest" and [h for h, _ in item.hemispheres] == ["left", "right"]


def test_tr_from_the_sidecar_wins_over_the_file_and_tr_option_over_both(
    atlas: list[str], tmp_path: Path
) -> None:
    ss.write_bids_surface_run(tmp_path, "03", 10, tr=1.5, sidecar_tr=2.0)
    assert read(tmp_path, surface_atlas=atlas).tr == pytest.approx(2.0)
    assert read(tmp_path, surface_atlas=atlas, tr=0.8).tr == pytest.approx(0.8)


def test_a_run_without_tr_is_refused_naming_the_file_and_tr(atlas: list[str], tmp_path: Path) -> None:
    (left, _) = ss.write_bids_surface_run(tmp_path, "04", 10, tr=None)
    with pytest.raises(ShardError, match="--tr") as err:
        read(tmp_path, surface_atlas=atlas)
    assert err.value.source == str(left)


def test_vertex_counts_that_do_not_match_the_atlas_name_the_file_and_both_counts(
    atlas: list[str], tmp_path: Path
) -> None:
    bad = ss.write_gifti_run(tmp_path / "lh.small.func.gii", np.zeros((2562, 5), np.float32))
    with pytest.raises(ShardError, match="2562 vertices.*lh.kmeans.annot has 10242") as err:
        read(tmp_path, surface_atlas=atlas)
    assert err.value.source == str(bad)


def test_a_one_time_point_file_is_refused(atlas: list[str], tmp_path: Path) -> None:
    bad = ss.write_gifti_run(tmp_path / "lh.map.func.gii", np.zeros((10242, 1), np.float32))
    with pytest.raises(ShardError, match="1 time point") as err:
        read(tmp_path, surface_atlas=atlas)
    assert err.value.source == str(bad)


def test_a_missing_hemisphere_atlas_and_no_atlas_are_refused_naming_the_run(
    runs: Path, atlas: list[str]
) -> None:
    with pytest.raises(ShardError, match="no right-hemisphere file in --surface-atlas") as err:
        read(runs, surface_atlas=atlas[:1])
    assert err.value.source.endswith("hemi-R_space-fsaverage5_bold.func.gii")
    with pytest.raises(ShardError, match="needs a surface parcellation: pass --surface-atlas"):
        read(runs)


def test_one_hemisphere_is_sharded_with_its_parcels_and_a_warning(atlas: list[str], tmp_path: Path) -> None:
    ss.write_bids_surface_run(tmp_path / "runs", "05", 12, hemis=("right",))
    m = shard_dataset([tmp_path / "runs"], tmp_path / "out", surface_atlas=atlas)
    (rec,) = m["recordings"]
    assert rec["n_channels"] == ss.N_PARCELS and m["channel_sets"][0]["ch_names"][0] == "R_parcel01"
    assert any("only the right hemisphere" in w for w in rec["warnings"])


def test_atlas_names_that_say_the_hemisphere_are_kept_and_swapped_files_are_refused(
    runs: Path, tmp_path: Path
) -> None:
    left = ss.write_atlas(tmp_path / "l", names=[f"L_area{v}" for v in range(ss.N_PARCELS)])[0]
    right = ss.write_atlas(tmp_path / "r", names=[f"R_area{v}" for v in range(ss.N_PARCELS)])[1]
    ps = read(runs, surface_atlas=[str(left), str(right)])
    assert ps.names[0] == "L_area0" and ps.names[ss.N_PARCELS] == "R_area0"
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "lh.x.annot").write_bytes(right.read_bytes())
    (swapped / "rh.x.annot").write_bytes(left.read_bytes())
    with pytest.raises(ShardError, match="swapped") as err:
        read(runs, surface_atlas=[str(swapped / "lh.x.annot"), str(swapped / "rh.x.annot")])
    assert err.value.source == str(swapped / "lh.x.annot")


def test_the_datamodule_reads_surface_shards_in_windows(atlas: list[str], tmp_path: Path) -> None:
    for sub in ("01", "02"):
        ss.write_bids_surface_run(tmp_path / "runs", sub, 40, seed=int(sub))
    shard_dataset([tmp_path / "runs"], tmp_path / "out", surface_atlas=atlas, split_ratios=(1, 0, 0))
    dm = ShardDataModule(
        [str(tmp_path / "out")], mode="windows", window_seconds=12.0, batch_size=2, val_split="train"
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["signal"].shape == (2, 2 * ss.N_PARCELS, 8)  # 12 s at TR 1.5 s
    assert batch["channel_mask"].all() and batch["positions"].shape == (2, 2 * ss.N_PARCELS, 3)
    assert np.isfinite(batch["signal"].numpy()).all() and batch["signal"].std() > 0.5


@pytest.mark.slow
def test_a_surface_run_on_fsaverage5_pretrains_and_the_loss_falls(
    atlas: list[str], tmp_path: Path, one_thread: None
) -> None:
    from neurotrain.train.cli import main

    for sub in ("01", "02", "03"):
        ss.write_bids_surface_run(tmp_path / "runs", sub, 200, seed=int(sub))
    shards = tmp_path / "shards"
    shard_dataset([tmp_path / "runs"], shards, surface_atlas=atlas, split_ratios=(1, 0, 0))
    code = main(
        [
            "fit",
            "--config",
            str(CONFIG),
            f"--data.datasets=[{shards}]",
            "--trainer.max_steps=60",
            "--trainer.max_epochs=1000",
            "--trainer.log_every_n_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'runs_out'}",
            "--run_name=surface",
        ]
    )
    assert code in (0, None)
    with open(tmp_path / "runs_out" / "surface" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) >= 50 and all(math.isfinite(v) for v in losses)
    first, last = float(np.mean(losses[:5])), float(np.median(losses[-10:]))
    assert last < 0.9 * first, f"masked-reconstruction loss went from {first:.3f} to {last:.3f}"


def test_mesh_files_give_the_positions_of_the_named_mesh(runs: Path, atlas: list[str]) -> None:
    import nilearn

    folder = Path(nilearn.__file__).parent / "datasets" / "data" / "fsaverage5"
    files = [str(folder / "pial_left.gii.gz"), str(folder / "pial_right.gii.gz")]  # names say no hemi
    by_files, by_default = (
        read(runs, surface_atlas=atlas, surface_mesh=files),
        read(runs, surface_atlas=atlas),
    )
    np.testing.assert_allclose(by_files.positions, by_default.positions, atol=1e-7)
    assert by_files.preprocessing["surface_mesh"] == {
        "left": "pial_left.gii.gz",
        "right": "pial_right.gii.gz",
    }
    with pytest.raises(ShardError, match="no such file, and no mesh name"):
        read(runs, surface_atlas=atlas, surface_mesh=["fsaverge5"])


def test_the_hemisphere_can_come_from_gifti_metadata(atlas: list[str], tmp_path: Path) -> None:
    ss.write_gifti_run(
        tmp_path / "sub-06_bold.func.gii", ss.vertex_series("right", 6, 0), hemi_meta="CortexRight"
    )
    ps = read(tmp_path, surface_atlas=atlas)
    assert ps.names[0] == "R_parcel01" and ps.preprocessing["hemispheres"] == ["right"]


def test_a_full_fsaverage_run_without_its_mesh_asks_for_the_mesh_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUBJECTS_DIR", raising=False)
    monkeypatch.delenv("FREESURFER_HOME", raising=False)
    run = ss.write_gifti_run(tmp_path / "runs" / "lh.big.func.gii", np.zeros((163842, 2), np.float32))
    np.save(tmp_path / "lh.big.npy", np.arange(163842) % 5)
    with pytest.raises(
        ShardError, match="does not ship with nilearn.*--surface-mesh fsaverage/surf/lh.pial"
    ) as err:
        read(tmp_path / "runs", surface_atlas=[str(tmp_path / "lh.big.npy")])
    assert err.value.source == str(run)
