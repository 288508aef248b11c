"""``--config NAME`` from any folder, ``neurotrain configs`` and ``configs show``, and the one-line
error for a name that is neither a file nor a shipped config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurotrain.train.cli import main
from neurotrain.train.run.configs import ConfigNameError, resolve_config, resolve_config_args
from neurotrain.train.run.configs_command import describe

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
CLI = [sys.executable, "-m", "neurotrain.train.cli"]
# A few steps of a narrow encoder on small batches: the point is the config lookup, not the model.
TINY = [
    "--data.num_workers=0",
    "--data.batch_size=2",
    "--trainer.accelerator=cpu",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_model_summary=false",
    "--model.init_args.encoder.dim=32",
    "--model.init_args.encoder.depth=1",
    "--model.init_args.encoder.heads=2",
    "--media_every_n_val=0",
]


def _env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled"}


def test_fit_by_name_from_an_empty_folder(eeg_shards: Path, tmp_path: Path) -> None:
    # The config's own relative `data.datasets: [shards/eeg]` is read from the working folder.
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "eeg").symlink_to(eeg_shards, target_is_directory=True)
    proc = subprocess.run(
        [*CLI, "fit", "--config", "eeg_pretrain", "--trainer.max_steps=5", "--run_name=byname", *TINY],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "checkpoints" / "byname"  # the default root, relative to the working folder
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5
    assert ckpt["data"]["datasets"] == ["shards/eeg"]


def test_an_existing_path_wins_over_the_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config("eeg_pretrain") == str(CONFIGS / "eeg_pretrain.yaml")
    assert resolve_config("eeg_pretrain.yaml") == str(CONFIGS / "eeg_pretrain.yaml")
    # the checkout's path, given outside the checkout, is the shipped file
    assert resolve_config("train/configs/eeg_finetune.yaml") == str(CONFIGS / "eeg_finetune.yaml")
    (tmp_path / "eeg_pretrain.yaml").write_text("trainer:\n  max_steps: 3\n")
    assert resolve_config("eeg_pretrain.yaml") == "eeg_pretrain.yaml"
    assert resolve_config_args(["fit", "--config=eeg_finetune", "-c", "eeg_pretrain.yaml", "--x=1"]) == [
        "fit",
        f"--config={CONFIGS / 'eeg_finetune.yaml'}",
        "-c",
        "eeg_pretrain.yaml",
        "--x=1",
    ]
    inline = "{trainer: {max_steps: 3}}"  # YAML text is the parser's to read
    assert resolve_config(inline) == inline


def test_load_config_by_name_keeps_relative_data_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neurotrain.train.run.lightning_cli import load_config

    monkeypatch.chdir(tmp_path)
    cfg = load_config(["--config", "eeg_pretrain"])
    assert cfg["data.datasets"] == ["shards/eeg"]  # the user's shards, not the package's folder
    with pytest.raises(ConfigNameError, match="eeg_pretrain"):
        load_config(["--config", "eeg_pretrian"])


def test_configs_lists_every_shipped_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shipped = sorted(CONFIGS.glob("*.yaml"))
    assert [line.split()[0] for line in lines] == [p.stem for p in shipped]
    for line, path in zip(lines, shipped, strict=True):
        first_comment = next(x for x in path.read_text().splitlines() if x.startswith("#"))
        # the first sentence of the leading comment block: it starts as the first comment line does
        assert describe(path)[:40] == first_comment.lstrip("# ")[:40] != ""
        assert not describe(path).endswith(".") and len(describe(path)) <= 100
        assert line.split(None, 1)[1] == describe(path)


def test_configs_show_prints_the_file_byte_for_byte(tmp_path: Path) -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        proc = subprocess.run(
            [*CLI, "configs", "show", path.stem], cwd=tmp_path, capture_output=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == path.read_bytes()


@pytest.mark.parametrize(
    "command", [["fit", "--config", "eeg_pretrian"], ["configs", "show", "eeg_pretrian"]]
)
def test_an_unknown_name_is_one_line_listing_the_shipped_names(command: list[str], tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, *command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "eeg_pretrian" in lines[0]
    assert all(p.stem in lines[0] for p in CONFIGS.glob("*.yaml"))
