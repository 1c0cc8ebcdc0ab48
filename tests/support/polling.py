"""The one way a test waits for something that happens on its own: poll, bounded in time.

Used where no event can be awaited (another process, a background task, a real server). Deadlines
of the product are never waited for this way: tests move the injected clock instead.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
INTERVAL = 0.01


async def eventually(
    check: Callable[[], T | Awaitable[T | None] | None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = INTERVAL,
) -> T:
    """Call `check` (plain or async) until it returns something other than None or False; return
    that. Raises TimeoutError, with the last answer, after `timeout` seconds (also when a call of
    `check` itself does not return in time)."""
    last: object = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                last = result
                if result is not None and result is not False:
                    return result  # type: ignore[return-value]
                await asyncio.sleep(interval)
    except TimeoutError:
        raise TimeoutError(f"condition not met within {timeout}s (last: {last!r})") from None
