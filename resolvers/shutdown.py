"""A stopping server ends its streams in time.

On SIGTERM uvicorn stops accepting connections, then waits for every open response to
end before it runs the app's shutdown, with no bound of its own: a reply streamed to
`POST /chat` or a subscription would hold the process as long as it runs. So the app
hears of the signal too (its handler, chained after uvicorn's, which installs it with
`signal.signal`) and ends what it serves within SHUTDOWN_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signal(callback: Callable[[], None]) -> None:
    """Call `callback` on the event loop when a stop signal comes, after the handler
    that is there (uvicorn's). Where there is none to chain (not under uvicorn's own
    handler), nothing is installed: the process keeps the default behaviour."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous):
            logger.warning("no handler of %s to follow: shutdown is not bounded", sig.name)
            continue

        def handler(
            number: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], object] = previous,
        ) -> None:
            previous(number, frame)
            loop.call_soon_threadsafe(callback)

        signal.signal(sig, handler)
