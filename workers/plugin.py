"""How a package built on workers extends the runtime's treatment of a handler (sagas do):
its own settlement of some outcomes, and loops of its own in each pool process that runs
the handler. Declared with the handler (``HandlerSpec.plugin``), called by the runtime;
the runtime knows nothing else of what a plugin is for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from workers.middleware import Call
from workers.outcome import Outcome

if TYPE_CHECKING:
    from workers.runtime.settle import Settler

BackgroundLoop = Callable[[Any], Awaitable[None]]
"""``async def loop(client)``: runs for the pool's life with its Redis client; restarted
with backoff while Redis is away."""


class HandlerPlugin(Protocol):
    def settle(self, call: Call, outcome: Outcome, settler: Settler) -> Outcome | None:
        """Queue what ``outcome`` means for ``call`` on the settler's ack pipeline and
        return the outcome as it was settled (what observers and metrics count: the same
        one, or what the plugin made of it), or return None to leave it to the runtime."""

    def background(self) -> Sequence[tuple[str, BackgroundLoop]]:
        """(name, loop) pairs to run in each pool process that runs this handler; a loop
        shared by several handlers is run once per name."""
