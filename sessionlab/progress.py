"""A progress bar for one slow call (a timeout that runs out, a server that takes seconds).

Lessons loop with ``tqdm.auto`` directly where they have steps; a single blocking call has
none, so it runs in a worker thread while the bar counts the seconds it is allowed to take.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
TICK = 0.1


def with_progress(function: Callable[[], T], *, seconds: float, desc: str) -> T:
    """Call ``function()`` showing a bar that fills over ``seconds``; return or raise as it does."""
    from tqdm.auto import tqdm

    steps = max(1, round(seconds / TICK))
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        tqdm(total=steps, desc=desc, bar_format="{desc}: {bar} {elapsed}") as bar,
    ):
        future = pool.submit(function)
        while not future.done():
            time.sleep(TICK)
            if bar.n < steps - 1:
                bar.update(1)
        bar.update(steps - bar.n)
        return future.result()
