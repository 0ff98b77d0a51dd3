"""The cyclic garbage collector held off during bulk work: once per 200,000 new objects, not 700.

Why: reading a large bundle, running the rules over it and answering the command make many
objects and no cycles of them, and each full collection walks every object alive: at 5,000
probed nodes the evidence of 150,000 pods is millions of objects, and the collections cost
1-3 s of a `diagnose --dump`. Nested and overlapping holds (diagnoses in threads of `serve`)
share one raise; the last to end puts back the thresholds from before the first.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

FIRST_GENERATION = 200_000  # new objects between collections while held off

_held = threading.Lock()
_holders = 0
_threshold: tuple[int, ...] = ()


@contextmanager
def few_collections() -> Iterator[None]:
    """The collector held off for the `with` block, then put back (also on an exception)."""
    global _holders, _threshold
    with _held:
        if _holders == 0:
            _threshold = gc.get_threshold()
            gc.set_threshold(max(_threshold[0], FIRST_GENERATION), *_threshold[1:])
        _holders += 1
    try:
        yield
    finally:
        with _held:
            _holders -= 1
            if _holders == 0:
                gc.set_threshold(*_threshold)
