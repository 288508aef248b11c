"""The README's fMRI example (fetch → shard with the atlas and its labels → fit) runs as written.

The commands are read from the README's "The fMRI example" block, never copied here, so a README
edit that breaks them fails this file. ``test_the_readme_fmri_commands_run_as_written`` (slow: three
processes, each importing torch, Lightning, MNE) runs them in bash in an empty folder; the fast
tests check each part: the commands and their files, the shard's parcel names, and what
``neurotrain fetch fmri`` (no atlas) says.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.examples import fetch
from neurotrain.train.cli import main
from neurotrain.train.data_commands import parse_shard_args

REPO = Path(__file__).resolve().parents[1]
HEADING = "#### The fMRI example"


def readme_fmri_commands() -> list[str]:
    """The commands of the README's fMRI example block, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    block = re.search(r"```bash\n(.*?)```", text[text.index(HEADING) :], re.DOTALL)
    assert block, f"no ```bash block after {HEADING!r} in README.md"
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    commands = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [c for c in commands if c and not c.startswith("#")]


def split_commands() -> tuple[list[str], list[str], list[str]]:
    """The fetch, shard and fit commands of the block, each as its words (``$D`` left in)."""
    fetch_cmd, shard_cmd, fit_cmd = readme_fmri_commands()
    return shlex.split(fetch_cmd), shlex.split(shard_cmd), shlex.split(fit_cmd)


def test_the_readme_block_is_fetch_then_shard_with_atlas_and_labels_then_fit() -> None:
    fetch_words, shard_words, fit_words = split_commands()
    assert fetch_words == ["D=$(neurotrain", "fetch", "fmri_rest)"]
    assert shard_words[:2] == ["neurotrain", "shard"] and fit_words[:2] == ["neurotrain", "fit"]
    folder = fetch("fmri_rest")
    cmd = parse_shard_args([w.replace("$D", str(folder)) for w in shard_words[2:]])
    options = cmd.options
    for path in (options.atlas, options.atlas_labels):  # the files the README names exist
        assert path is not None and Path(path).is_file(), path
    assert options.atlas_background == -1
    parcels = Path(options.atlas_labels).read_text().split()
    assert len(parcels) == 184
    # the fit's config reads the folder the shard command writes
    config = Path(fit_words[fit_words.index("--config") + 1])
    shipped = config if config.is_absolute() else REPO / config
    if not shipped.is_file():  # a config named by name, `--config fmri_pretrain`
        shipped = REPO / "train" / "configs" / f"{config.name.removesuffix('.yaml')}.yaml"
    assert yaml.safe_load(shipped.read_text())["data"]["datasets"] == [cmd.out]


def test_the_shards_name_each_parcel_from_the_labels_file(tmp_path: Path) -> None:
    d = fetch("fmri_rest")
    labels = d / "Atlas" / "ROI_labels-Atlas.txt"
    m = shard_dataset(
        ["example:fmri_rest"],
        tmp_path / "fmri",
        atlas=str(d / "Atlas" / "indexed_mask-Atlas.nii"),
        atlas_labels=str(labels),
        atlas_background=-1,
    )
    (rec,) = m["recordings"]
    assert rec["source"] == "sub-test_task-rs_bold.nii"  # the masks beside the run are not recordings
    assert m["channel_sets"][0]["ch_names"] == labels.read_text().split()
    assert rec["sfreq"] == pytest.approx(0.4) and rec["n_channels"] == 184


def test_fetch_fmri_says_it_has_no_atlas_and_points_at_fmri_rest(capsys: pytest.CaptureFixture) -> None:
    assert main(["fetch", "fmri"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(fetch("fmri"))  # stdout: the folder alone, for D=$(...)
    assert "no atlas" in err and "--atlas" in err and "neurotrain fetch fmri_rest" in err
    assert main(["fetch", "fmri_rest"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(fetch("fmri_rest")) and "note" not in err


@pytest.mark.slow
def test_the_readme_fmri_commands_run_as_written(tmp_path: Path) -> None:
    """bash runs the README block in an empty folder outside the checkout (the config is read by
    name); only the fit gets 3 steps and no progress bar."""
    commands = readme_fmri_commands()
    assert commands[-1].startswith("neurotrain fit ")
    commands[-1] += " --trainer.max_steps=3 --trainer.accelerator=cpu --trainer.enable_progress_bar=false"
    script = tmp_path / "readme_fmri.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(commands) + "\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "shards" / "fmri" / "manifest.json").read_text())
    labels = (fetch("fmri_rest") / "Atlas" / "ROI_labels-Atlas.txt").read_text().split()
    assert manifest["channel_sets"][0]["ch_names"] == labels
    (run,) = (tmp_path / "checkpoints").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["stage"] == "fit"
    with open(run / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert losses and all(math.isfinite(loss) for loss in losses)  # it trained on the shards
