"""``neurotrain evaluate --protocol encoding`` and ``--protocol rsa`` on simulated paired EEG.

The paired dataset (`synthetic_paired`) simulates EEG responses to real photographs from one
layer (``layer2``, mean-pooled) of a fixed random ResNet-18 as the extractor computes it (its
weights saved beside the stimuli), through a fixed random spatial projection, at two latencies
(0.12 s, 0.28 s), with noise and 3 repeats. So the generating feature space is known: it must
predict the responses far above the shuffled-feature control and near the noise ceiling, beat
another layer (``pre_logits``), and rank first in RSA where the components are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_paired import write_paired_dataset

from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.train.cli import main


def _layer2(stimuli: Path, names: list[str], weights: Path) -> np.ndarray:
    from neurotrain.models.image_features import ImageFeatureExtractor

    fx = ImageFeatureExtractor("resnet18", weights, ["layer2"], cache_dir=None)
    return fx([stimuli / f"{n}.png" for n in names])["layer2"]


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("paired_enc")
    ds = write_paired_dataset(root, n_images=40, repeats=3, subjects=("01",), noise=0.5, features_fn=_layer2)
    out = root / "shards"
    shard_dataset([ds.bids_root], out, stimuli=ds.stimuli, segment_seconds=60.0, dtype="float32")
    return ds, out


def _args(protocol: str, ds, shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--config",
        "align_image",
        "--protocol",
        protocol,
        "--out",
        str(out),
        "--layers",
        "layer2",
        "pre_logits",
        f"--image-weights={ds.weights}",
        *extra,
        f"--data.datasets=[{shards}]",
        "--data.num_workers=0",
    ]


def test_encoding_recovers_the_generating_features_above_the_control(
    paired, tmp_path: Path, one_thread
) -> None:
    ds, shards = paired
    out = tmp_path / "enc"
    assert main(_args("encoding", ds, shards, out, "--folds", "4", "--time-bins", "5")) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["layer"]: r for r in results["rows"]}
    top = rows["layer2"]
    assert top["images"] == 40 and top["repeats"] == 3 and top["targets"] == 16 * 5
    # the generating space predicts the responses; the shuffled-feature control does not
    assert top["median_r"] > 0.3 and top["median_r"] > top["median_control_r"] + 0.25
    assert abs(top["median_control_r"]) < 0.15
    assert top["median_ceiling"] is not None and top["median_ceiling"] > top["median_r"] - 0.05
    assert top["median_normalised"] > 0.6  # most of what the repeats allow
    assert rows["pre_logits"]["median_r"] < top["median_r"] - 0.03  # another space does worse (0.05 measured)
    assert (out / "r_map_01_layer2.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    assert "control r (shuffled features)" in table and "noise ceiling" in table
    per_channel = np.array(results["targets"]["01/layer2"]["per_channel_r"])
    assert per_channel.shape == (16,)


def test_rsa_ranks_the_generating_layer_first_where_the_responses_are(
    paired, tmp_path: Path, one_thread
) -> None:
    ds, shards = paired
    out = tmp_path / "rsa"
    assert main(_args("rsa", ds, shards, out, "--rsa-windows", "4")) == 0
    results = json.loads((out / "results.json").read_text())
    t = results["tables"]["01"]
    values = np.array(t["values"])  # [layers, windows]
    top = t["layers"].index("layer2")
    # the two components (0.12 s and 0.28 s) fall in windows 0-125, 125-250 and 250-375 ms
    assert all(t["best_layer"][w] == "layer2" for w in ("0-125ms", "125-250ms", "250-375ms"))
    assert values[top].max() > values[1 - top].max() + 0.05
    assert np.isfinite(t["ceiling_upper"]).all()
    assert (out / "rsa_01.png").is_file()


def test_a_config_without_image_weights_is_refused(paired, tmp_path: Path, capsys) -> None:
    ds, shards = paired
    args = [a for a in _args("encoding", ds, shards, tmp_path / "x") if not a.startswith("--image-weights")]
    assert main(args) == 2
    assert "--image-weights" in capsys.readouterr().err
