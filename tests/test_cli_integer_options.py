"""Integer Trainer options stay integers on the command line (``limit_val_batches=1`` is one batch).

Lightning reads ``limit_val_batches=1`` as one batch and ``1.0`` as all of them. Importing
scikit-learn before Lightning once made jsonargparse read every ``int | float`` Trainer option as a
float, so a sweep trial asked for one validation batch validated on all of them (the two-worker
sweep test then ran past its time limit). Each check runs in a fresh interpreter, as the console
script does, because the import order is what matters.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "train" / "configs" / "eeg_pretrain.yaml"


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_fit_reads_integer_batch_limits_as_integers() -> None:
    out = _run(
        "from neurotrain.train.cli import main; "
        f"main(['fit', '--config', {str(CONFIG)!r}, '--trainer.limit_val_batches=1', "
        "'--trainer.limit_train_batches=3', '--print_config'])"
    )
    lines = {line.strip() for line in out.splitlines()}
    assert "limit_val_batches: 1" in lines and "limit_train_batches: 3" in lines, out[:2000]


def test_commands_that_parse_run_configs_read_integers_after_the_evaluation_imports() -> None:
    # sweep and evaluate parse run configs in a process that has imported the evaluation modules
    # (scikit-learn among them) through the top-level parser
    out = _run(
        "from neurotrain.train.cli import build_parser; build_parser(); "
        "from neurotrain.train.run.lightning_cli import parse_config; "
        f"cfg = parse_config(['--config', {str(CONFIG)!r}, '--trainer.limit_val_batches=2']); "
        "print(repr(cfg['trainer']['limit_val_batches']))"
    )
    assert out.strip().splitlines()[-1] == "2"
