"""``redact``: no form of Redis URL shows its password, malformed ones included."""

from __future__ import annotations

import pytest

from queues.connection import redact

SECRET = "pw-Secret-1"


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
    (f"redis://user:{SECRET}@h:6379/0", "redis://user:***@h:6379/0"),
    (f"rediss://u:{SECRET}@h:6380/0?ssl_ca_certs=/etc/ca.pem",
     "rediss://u:***@h:6380/0?ssl_ca_certs=/etc/ca.pem"),
    (f"redis://:{SECRET}@h:notaport/0", "redis://:***@h:notaport/0"),
    (f"redis://:pa/ss@{SECRET}@h/0", "redis://:***@h/0"),
    (f"redis+cluster://u:{SECRET}@a:1,b:2/", "redis+cluster://u:***@a:1,b:2/"),
    (f"redis+sentinel://:{SECRET}@a:1,b:2/mymaster?sentinel_password={SECRET}",
     "redis+sentinel://:***@a:1,b:2/mymaster?sentinel_password=***"),
    (f"rediss://h/0?ssl_password={SECRET}&ssl_certfile=/c.pem",
     "rediss://h/0?ssl_password=***&ssl_certfile=/c.pem"),
    (f"redis://h/0?password={SECRET}", "redis://h/0?password=***"),
    (f"unix://:{SECRET}@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://token@h/0", "redis://token@h/0"),
    ("rediss://h/0?ssl_ca_certs=/a@b/ca.pem", "rediss://h/0?ssl_ca_certs=/a@b/ca.pem"),
])
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert SECRET not in redact(url)
