"""One signal path: SIGTERM or SIGINT once stops fetching and starts the grace period;
a second one cancels what is still running."""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger("seawall.signals")


class StopSignals:
    """Two events, set by the first and second stop request."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.cancel = asyncio.Event()

    def request(self, reason: str = "signal") -> None:
        if not self.stop.is_set():
            log.info("stop requested: finishing running messages", extra={"reason": reason})
            self.stop.set()
        elif not self.cancel.is_set():
            log.warning("second stop request: cancelling running messages",
                        extra={"reason": reason})
            self.cancel.set()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request, signal.Signals(sig).name)
