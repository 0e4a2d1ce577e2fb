"""Which Redis a URL names: one server, a cluster from its seeds, a primary behind Sentinel
(pure parsing), and the password never shown."""

from __future__ import annotations

import pytest

from queues.connection import is_cluster_url, redact
from queues.topology import parse


def test_a_plain_url_is_one_server_unchanged() -> None:
    url = "rediss://u:p@h:6380/2?ssl_cert_reqs=none"
    assert parse(url).kind == "single"
    assert parse(url).node_url == url


def test_cluster_urls_list_every_seed_and_keep_credentials_and_options() -> None:
    topology = parse("redis+cluster://u:p@a:7000,b:7001,[::1]:7002/?socket_timeout=3")
    assert topology.kind == "cluster"
    assert topology.seeds == (("a", 7000), ("b", 7001), ("::1", 7002))
    assert topology.node_url == "redis://u:p@a:7000/0?socket_timeout=3"
    assert parse("rediss+cluster://a:7000").tls


def test_the_cluster_flag_makes_one_seed_a_cluster() -> None:
    topology = parse("redis://h:7000/?cluster=true&socket_timeout=3")
    assert topology.kind == "cluster"
    assert topology.seeds == (("h", 7000),)
    assert "cluster" not in topology.node_url
    assert parse("redis://h:7000/0?cluster=false").kind == "single"
    assert is_cluster_url("redis://h:7000/?cluster=1")
    assert not is_cluster_url("redis://h:7000/0")


def test_a_cluster_has_only_database_0() -> None:
    with pytest.raises(ValueError, match="only database 0"):
        parse("redis+cluster://a:7000/3")


def test_sentinel_urls_name_the_service_the_database_and_the_sentinels_credentials() -> None:
    topology = parse("redis+sentinel://u:p@s1:26379,s2:26380/mymaster/2"
                     "?sentinel_password=sp&socket_timeout=1")
    assert topology.kind == "sentinel"
    assert topology.seeds == (("s1", 26379), ("s2", 26380))
    assert topology.service == "mymaster"
    assert topology.sentinel_auth == {"password": "sp"}
    assert topology.node_url == "redis://u:p@s1:26379/2?socket_timeout=1"


def test_a_sentinel_url_without_a_service_says_how_to_name_it() -> None:
    with pytest.raises(ValueError, match="name the service"):
        parse("redis+sentinel://s1:26379,s2:26379/")


def test_unknown_schemes_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="redis\\+cluster"):
        parse("redis+shard://a:1/")


def test_passwords_of_multi_host_urls_are_redacted() -> None:
    assert redact("redis+sentinel://u:secret@s1:1,s2:2/m") == "redis+sentinel://u:***@s1:1,s2:2/m"
    assert redact("redis+cluster://:secret@a:1,b:2/") == "redis+cluster://:***@a:1,b:2/"
    assert redact("redis+cluster://a:1,b:2/") == "redis+cluster://a:1,b:2/"
