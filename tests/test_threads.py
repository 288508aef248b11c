"""Compute threads on a shared machine: OpenMP waits passively unless told otherwise; --threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from neurotrain.train.run.lightning_cli import load_config
from neurotrain.train.run.threads import WAIT_POLICY, passive_openmp_wait, set_compute_threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_passive_wait_is_the_default_and_a_users_choice_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAIT_POLICY, raising=False)
    assert passive_openmp_wait() and os.environ[WAIT_POLICY] == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY, "ACTIVE")
    assert not passive_openmp_wait() and os.environ[WAIT_POLICY] == "ACTIVE"


def test_the_command_sets_it_before_torch_is_imported() -> None:
    """The console script's ``main`` sets the variable while ``torch`` is not yet imported."""
    code = (
        "import sys\n"
        "from neurotrain.train import cli\n"
        "from neurotrain.train.run import threads\n"
        "seen = []\n"
        "real = threads.passive_openmp_wait\n"
        "threads.passive_openmp_wait = lambda: seen.append('torch' in sys.modules) or real()\n"
        "cli.main(['configs'])\n"
        "import os; print(seen, os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[False] PASSIVE"


def test_threads_sets_the_pool_for_one_run() -> None:
    assert set_compute_threads(1) == 1 and torch.get_num_threads() == 1
    assert set_compute_threads(None) == 1  # unset: left as it is
    with pytest.raises(ValueError, match="--threads 0"):
        set_compute_threads(0)


def test_threads_is_a_run_option() -> None:
    assert load_config(["--config", "eeg_pretrain", "--threads", "1"])["threads"] == 1
    assert load_config(["--config", "eeg_pretrain"])["threads"] is None
