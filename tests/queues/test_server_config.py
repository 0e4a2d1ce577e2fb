"""Which Redis settings make ``seawall run`` warn at start, as a pure function."""

from __future__ import annotations

import pytest

from queues.server_config import Settings, durability_warnings

NOT_KEPT = "persistence is off"


@pytest.mark.parametrize(("settings", "expected"), [
    (Settings("noeviction", 0, True, ""), []),
    (Settings("noeviction", 0, False, "3600 1"), []),
    (Settings("allkeys-lru", 1 << 30, True, ""), ["maxmemory-policy is allkeys-lru"]),
    (Settings("volatile-ttl", 0, True, ""), ["maxmemory-policy is volatile-ttl"]),
    (Settings("noeviction", 0, False, ""), [NOT_KEPT]),
    (Settings("allkeys-random", 0, False, " "), ["allkeys-random", NOT_KEPT]),
])
def test_which_settings_warn(settings: Settings, expected: list[str]) -> None:
    found = durability_warnings(settings)
    assert len(found) == len(expected)
    for warning, words in zip(found, expected, strict=True):
        assert words in warning
