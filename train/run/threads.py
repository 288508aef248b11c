"""Compute threads on a shared machine: OpenMP threads that sleep at a barrier instead of spinning.

PyTorch's CPU operations run on an OpenMP pool of one thread per core. Between the parallel parts
of an operation the threads wait at a barrier, and by default OpenMP lets a waiting thread *spin*
(burn its core) for a while before it sleeps. When the machine is shared (other jobs, or this run's
own DataLoader workers, which are processes of their own), a spinning thread takes the core the
thread it is waiting for needs, and every step takes several scheduler slices. Measured on the
2-core machine (``benchmarks/contention.py``, a 40-step ``eeg_pretrain`` fit with its 2 loader
workers, beside two busy loops, which leave the fit half the machine: 2x its quiet time is the
floor): 2.6-3.0x its quiet time with OpenMP's default wait, 2.1x with ``OMP_WAIT_POLICY=PASSIVE``,
whose quiet time is within 4 % of the default's. Leaving a core to each loader worker instead
(1 compute thread here) was 1.7x slower on a quiet machine and still 2.5x under the load.

So `passive_openmp_wait` sets ``OMP_WAIT_POLICY=PASSIVE`` for the ``neurotrain`` command before
PyTorch is imported (OpenMP reads it once, when its runtime starts), unless the environment
already sets it. Programs that import neurotrain as a library keep their own settings: export the
variable before starting Python to get the same behaviour.

The pool size stays PyTorch's (one thread per core, or ``OMP_NUM_THREADS``); ``--threads N``
sets it for one run (`set_compute_threads`).
"""

from __future__ import annotations

import os

WAIT_POLICY = "OMP_WAIT_POLICY"


def passive_openmp_wait() -> bool:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets the variable; True when set here.

    Must run before ``torch`` is imported (the ``neurotrain`` console script calls it first).
    """
    if WAIT_POLICY in os.environ:
        return False
    os.environ[WAIT_POLICY] = "PASSIVE"
    return True


def set_compute_threads(requested: int | None) -> int:
    """PyTorch's intra-op pool for this run: ``requested`` (``--threads``), else left as it is.

    Returns the pool size the run computes with.
    """
    import torch

    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads {requested}: give at least 1")
        torch.set_num_threads(requested)
    return torch.get_num_threads()
