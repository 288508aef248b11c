"""The training path reads manifests through ``load_manifest``: an unknown schema is refused by name."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from fixtures_datamodule import manifest, synthetic_shards, write_manifest

from neurotrain.datamodules.format.manifest import SCHEMA_VERSION, ManifestError
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.train.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"


@pytest.fixture(scope="module")
def future_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shard dataset whose manifest says ``"schema_version": 99``."""
    data = synthetic_shards(tmp_path_factory.mktemp("schema"), "v99", ["a"], seconds=20.0)
    m = manifest(data)
    m["schema_version"] = 99
    write_manifest(data, m)
    return data


def test_fit_refuses_an_unknown_manifest_schema(
    future_schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "fit",
        "--config",
        str(CONFIGS / "eeg_pretrain.yaml"),
        f"--data.datasets=[{future_schema}]",
        "--data.num_workers=0",
        "--trainer.max_steps=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--run_name=v99",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    path = future_schema / "manifest.json"
    expected = f"error: {path}: schema version 99, this neurotrain reads {SCHEMA_VERSION}"
    assert err.strip().splitlines()[-1] == expected
    assert not (tmp_path / "v99" / "checkpoints").exists()  # refused before any training step


def test_remote_manifest_errors_name_the_url(future_schema: Path, tmp_path: Path) -> None:
    url = f"pipe:cat {shlex.quote(str(future_schema))}/{{}}"
    dm = ShardDataModule([url], window_seconds=1.0, cache_dir=str(tmp_path))
    with pytest.raises(ManifestError, match=r"^pipe:cat .*manifest\.json: schema version 99, "):
        dm.setup("fit")


def test_missing_manifest_asks_whether_the_folder_is_a_shard_dataset(tmp_path: Path) -> None:
    dm = ShardDataModule([str(tmp_path)], window_seconds=1.0)
    with pytest.raises(ManifestError, match=r"no manifest; is .* a folder written by `neurotrain shard`\?"):
        dm.setup("fit")
