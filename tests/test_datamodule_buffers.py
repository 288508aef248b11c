"""Recycled segment buffers: a buffer is reused only once no array refers to it, and the pool is bounded."""

from __future__ import annotations

import numpy as np

from neurotrain.datamodules.loading.streaming import SegmentBuffers


def test_a_buffer_is_reused_only_when_free() -> None:
    pool = SegmentBuffers(max_bytes=1 << 20)
    a = pool.take(1000)
    view = a[:1000].view(np.float16)  # what a reader hands out: a view that keeps `a` alive
    del a
    b = pool.take(1000)
    assert not np.shares_memory(view, b)  # still referenced: a second buffer
    b[:] = 7
    ids_before = [id(x) for x in pool.buffers]
    assert len(ids_before) == 2
    del view, b
    c = pool.take(900)  # both free now; an existing one fits (900 <= size <= 1800)
    assert id(c) in ids_before
    assert len(pool.buffers) == 2  # nothing new allocated


def test_the_pool_never_holds_more_than_its_bound() -> None:
    pool = SegmentBuffers(max_bytes=3000)
    held = [pool.take(1000) for _ in range(5)]  # all in use: only 3 fit under the bound
    assert sum(b.size for b in pool.buffers) <= 3000
    assert all(b.size >= 1000 for b in held)
    del held
    big = pool.take(2500)  # free buffers are dropped to make room
    assert sum(b.size for b in pool.buffers) <= 3000 and big.size == 2500
