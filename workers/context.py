"""What a handler may ask about the message it is handling."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from queues.envelope import Envelope

if TYPE_CHECKING:
    from workers.app import App

_log = logging.getLogger("seawall.handler")


class Context:
    """The typed context a handler receives if it declares a second parameter.

    Built per message, so it is cheap: headers and the bound logger are made on first use.
    """

    __slots__ = ("_app", "_envelope", "_logger", "handler", "stream")

    def __init__(self, app: App, handler: str, stream: str, envelope: Envelope) -> None:
        self._app = app
        self._envelope = envelope
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self.handler = handler
        self.stream = stream
        """The user's stream the message was published to (also for retries and replays)."""

    @property
    def message_id(self) -> str:
        """Stable id of the message: the same for every retry and replay of it."""
        return self._envelope.message_id

    @property
    def entry_id(self) -> str:
        """Id of the stream entry being handled (a retry has a new entry on the retry stream)."""
        return self._envelope.entry_id

    @property
    def origin_entry_id(self) -> str:
        """Id of the entry on the user's stream this message first arrived as."""
        return self._envelope.origin_entry_id

    @property
    def attempt(self) -> int:
        """1 on the first delivery, 2 on the first retry, and so on."""
        return self._envelope.attempt

    @property
    def correlation_id(self) -> str:
        return self._envelope.correlation_id

    @property
    def headers(self) -> dict[str, str]:
        """Every envelope field but the payload, including unknown ones."""
        return self._envelope.headers

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the handler, message, entry and correlation ids."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                _log,
                {
                    "handler": self.handler,
                    "stream": self.stream,
                    "message_id": self.message_id,
                    "entry_id": self.entry_id,
                    "correlation_id": self.correlation_id,
                    "attempt": self.attempt,
                },
            )
        return self._logger

    async def publish(
        self,
        stream: str,
        payload: BaseModel | Mapping[str, Any] | str,
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Publish a follow-up message that carries this one's correlation id and names this
        message as its cause."""
        return await self._app.apublish(
            stream,
            payload,
            type=type,
            headers=headers,
            correlation_id=self.correlation_id,
            causation_id=self.message_id,
        )

    def __repr__(self) -> str:
        return (
            f"Context(handler={self.handler!r}, message_id={self.message_id!r}, "
            f"entry_id={self.entry_id!r}, attempt={self.attempt})"
        )
