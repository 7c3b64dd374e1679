"""The one worker thread for CPU-heavy work (Pillow, large JSON and base64 decoding).

With many jobs finishing at once, several such threads would fight the event loop for the GIL
and delay it by tens of ms; with one, the loop gets the GIL back within one switch interval.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm2pic-image")


async def in_worker(func: Callable[..., T], /, *args: object, **kwargs: object) -> T:
    """Run CPU-heavy ``func(*args, **kwargs)`` in the worker thread."""
    call = functools.partial(func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_worker, call)
