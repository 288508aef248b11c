"""The README's brain-image example (simulate → shard by stimulus → retrieval, ridge and learned
encoding, RSA → report) runs as written.

The commands are read from the README's "The brain-image example" block, never copied here. The
slow test runs them in bash in an empty folder outside the checkout and checks what each wrote;
the fast test checks the block's shape and that each command parses.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from neurotrain.train.data_commands import parse_shard_args

REPO = Path(__file__).resolve().parents[1]
HEADING = "#### The brain-image example"


def readme_commands() -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    block = re.search(r"```bash\n(.*?)```", text[text.index(HEADING) :], re.DOTALL)
    assert block, f"no ```bash block after {HEADING!r} in README.md"
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    commands = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [c for c in commands if c and not c.startswith("#")]


def test_the_block_is_simulate_shard_three_protocols_and_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = [shlex.split(c) for c in readme_commands()]
    assert [w[1] for w in words] == [
        "simulate",
        "shard",
        "evaluate",
        "evaluate",
        "evaluate",
        "evaluate",
        "compare",
    ]
    protocols = [w[w.index("--protocol") + 1] for w in words if w[1] == "evaluate"]
    assert protocols == ["retrieval", "encoding", "encoding", "rsa"]
    configs = [w[w.index("--config") + 1] for w in words if w[1] == "evaluate"]
    assert configs == ["align_image", "align_image", "encode_factorised", "align_image"]
    out = Path(words[0][words[0].index("--out") + 1])
    (tmp_path / out / "stimuli").mkdir(parents=True)  # what `simulate` writes; options check it
    monkeypatch.chdir(tmp_path)
    shard = parse_shard_args(words[1][2:])
    assert shard.options.split_by == "stimulus" and shard.options.stimuli is not None


@pytest.mark.slow
def test_the_readme_brain_image_commands_run_as_written(tmp_path: Path) -> None:
    script = tmp_path / "readme_brain_image.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(readme_commands()) + "\n")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    bindir = str(Path(sys.executable).parent)  # the venv's neurotrain
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    retrieval = json.loads((tmp_path / "eval/retrieval/results.json").read_text())
    chance = retrieval["chance"]["top1"]
    assert retrieval["mean"]["top1_brain_to_image"]["mean"] > 2 * chance  # learned, held-out images
    assert abs(retrieval["mean"]["top1_brain_to_image"]["control"] - chance) < 0.05
    # fitted on shuffled pairs: nothing paired is learned (18 test images: chance 0.056)
    assert retrieval["mean"]["top1_brain_to_image"]["trained_control"] < 2 * chance
    encoding = json.loads((tmp_path / "eval/encoding/results.json").read_text())
    best = max(encoding["rows"], key=lambda r: r["median_r"])
    assert best["median_r"] > best["median_control_r"] + 0.2
    learned = json.loads((tmp_path / "eval/factorised/results.json").read_text())
    assert learned["model"] == "learned readout" and learned["test_images_in_training"] == 0
    for row in learned["rows"]:  # fitted on the train images, scored on the held-out ones
        assert row["median_r"] > row["median_control_r"] + 0.3
    rsa = json.loads((tmp_path / "eval/rsa/results.json").read_text())
    assert set(rsa["tables"]) == {"01", "02"}
    assert (tmp_path / "eval/report.html").stat().st_size > 10_000
