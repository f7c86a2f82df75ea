"""Reading and preprocessing the next batch while this one is encoded (nst_hf._threads.ahead)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from nst_hf._threads import ahead


def test_ahead_keeps_order_and_runs_at_most_one_item_ahead():
    made = []

    def items():
        for i in range(20):
            made.append(i)
            yield i

    seen = []
    for item in ahead(items()):
        time.sleep(0.005)
        assert len(made) <= item + 3  # the item itself, one waiting in the queue, one being made
        seen.append(item)
    assert seen == list(range(20))


def test_ahead_raises_the_producers_error_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("disk went away")

    got = []
    with pytest.raises(OSError, match="disk went away"):
        for item in ahead(items()):
            got.append(item)
    assert got == [1, 2]


def test_closing_ahead_stops_and_joins_the_producer():
    made = []

    def items():
        for i in range(1000):
            made.append(i)
            yield i

    stream = ahead(items())
    assert next(stream) == 0
    stream.close()
    count = len(made)
    time.sleep(0.1)
    assert len(made) == count <= 3
    assert not any(t.name == "nst_hf-prefetch" and t.is_alive() for t in threading.enumerate())


def test_tokens_do_not_depend_on_prefetching(tiny_tokenizers, make_pa_signal):
    from nst_hf.io import SignalRecord

    lengths = np.random.default_rng(5).integers(300, 6000, size=9)
    records = [SignalRecord(read_id=f"r{i}", signal=np.round(make_pa_signal(int(n), seed=i) * 10).astype(np.int16),
                            sampling_rate=tiny_tokenizers.sampling_rate, offset=0.0, range=1.0, digitisation=10.0)
               for i, n in enumerate(lengths)]
    plain = list(tiny_tokenizers.iter_tokenized(records, batch_samples=4000, prefetch=False))
    fetched = list(tiny_tokenizers.iter_tokenized(records, batch_samples=4000, prefetch=True))
    assert [r.read_id for r, _, _ in fetched] == [r.read_id for r, _, _ in plain] == [r.read_id for r in records]
    assert all(codes is not None and codes.size for _, codes, _ in plain)
    for (_, a, _), (_, b, _) in zip(plain, fetched):
        np.testing.assert_array_equal(a, b)
