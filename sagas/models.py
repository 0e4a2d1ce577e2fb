"""What an ``on_outcome`` handler receives."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class SagaOutcome(BaseModel):
    """A saga that finished: ``completed`` (every step committed), ``compensated`` (it
    stopped, and every committed step was undone), or ``failed`` (a compensation failed
    for good: a person must look, ``seawall saga retry`` / ``skip``)."""

    saga: str
    saga_id: str
    state: Literal["completed", "compensated", "failed"]
    cause: str = ""
    """Why it stopped going forward: step_failed, aborted, timed_out, compensation_failed."""
    failed_step: str = ""
    """The step (or compensation) that failed, if one did."""
