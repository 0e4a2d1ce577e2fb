"""Saga types as the handler registry shows them, for the operating tools (``seawall saga``,
``seawall status``), which never import the user's app.

Every step of a saga is a handler reading ``seawall:{saga:<name>}:on:<stream>`` (named
``<name>.<step>``), every compensation a handler reading ``seawall:{saga:<name>}:undo:<step>``,
and ``on_outcome`` reads ``seawall:{saga:<name>}:outcome`` (``queues.keys.SagaKeys``). So the
(handler, stream) pairs of the registry name each saga type, its steps, and the steps that
have a compensation, and whether it has an ``on_outcome`` handler: what a
:class:`~queues.saga_store.SagaLayout` needs for the scripts an operator runs (``abort``,
``resume``).

The registry holds the handlers of every pool that has started once. A compensation declared
in a pool that never ran is missing from it; the scripts would then pass its step over as
having nothing to undo, as they do for a step without a compensation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from queues.keys import SagaKeys, hash_tag
from queues.saga_store import SagaLayout

DEFAULT_RETENTION_S = 7 * 24 * 3600
"""``Saga(retention=...)``'s default; the registry does not record a saga's own."""

_TAG = "saga:"


@dataclass(frozen=True, slots=True)
class SagaType:
    """One saga type seen in the registry."""

    name: str
    steps: tuple[str, ...]
    """Its steps that have a handler in the registry, by name."""
    undoable: tuple[str, ...]
    """The steps whose compensation has a handler in the registry."""
    outcomes: bool = False
    """It has an ``on_outcome`` handler (finished sagas are sent to it)."""

    @property
    def keys(self) -> SagaKeys:
        return SagaKeys(self.name)

    def layout(self, retention_s: int = DEFAULT_RETENTION_S) -> SagaLayout:
        """The header every saga script gets (its ledgers already carry their TTLs; the
        retention only matters to a script that finishes a saga, for its clean-up)."""
        return SagaLayout(self.keys, self.undoable, int(retention_s), self.outcomes)


def saga_of(stream: str) -> SagaKeys | None:
    """The keys of the saga type ``stream`` belongs to, or None for any other stream."""
    try:
        tag = hash_tag(stream)
    except ValueError:
        return None
    if not tag.startswith(_TAG) or not stream.startswith("seawall:{"):
        return None
    try:
        return SagaKeys(tag[len(_TAG):])
    except ValueError:
        return None


def saga_types(handlers: Iterable[tuple[str, str]]) -> dict[str, SagaType]:
    """The saga types among registered ``(handler name, stream)`` pairs, by name."""
    steps: dict[str, set[str]] = {}
    undoable: dict[str, set[str]] = {}
    outcomes: set[str] = set()
    for handler, stream in handlers:
        keys = saga_of(stream)
        if keys is None:
            continue
        name = keys.saga
        steps.setdefault(name, set())
        undoable.setdefault(name, set())
        if stream == keys.outcome:
            outcomes.add(name)
            continue
        _, undo, step = stream.partition(":undo:")
        if undo and step and _same(keys, "undo", step, stream):
            undoable[name].add(step)
            continue
        _, on, reacts_to = stream.partition(":on:")
        if on and reacts_to and _same(keys, "on", reacts_to, stream):
            prefix = f"{name}."
            steps[name].add(handler[len(prefix):] if handler.startswith(prefix) else handler)
    return {name: SagaType(name, tuple(sorted(steps[name])), tuple(sorted(undoable[name])),
                           name in outcomes)
            for name in sorted(steps)}


def _same(keys: SagaKeys, kind: str, suffix: str, stream: str) -> bool:
    try:
        built = keys.undo(suffix) if kind == "undo" else keys.on(suffix)
    except ValueError:
        return False
    return built == stream
