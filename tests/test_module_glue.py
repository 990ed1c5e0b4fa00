"""The Python glue where Synapse's own test harness meets it: the parsed config survives the
harness's ``copy.deepcopy`` of the homeserver config, and several homeservers in one process
(the harness builds one per test) each get their own metrics, removed when they stop.

These use real handlers of the compiled core on the memory store, in this process; no Synapse.
"""

from __future__ import annotations

import copy
import time

from prometheus_client import REGISTRY

from synapse_rendezvous import _core, metrics

BASEURL = "https://matrix.example.org/"


def _handler() -> _core.RendezvousHandler:
    config = _core.parse_config({"rate_limit": {"enabled": False}})
    return _core.RendezvousHandler(config, BASEURL, mode="takeover", clock=time.time)


def _created_by_server() -> dict[str, float]:
    found: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "synapse_rendezvous_sessions_created_total":
                found[sample.labels["server_name"]] = sample.value
    return found


def test_config_survives_deepcopy() -> None:
    config = _core.parse_config({"ttl": "90s", "store": "memory"})
    assert copy.deepcopy(config) is config
    assert copy.copy(config) is config
    nested = copy.deepcopy({"modules": [{"config": config}]})
    assert nested["modules"][0]["config"] is config
    assert str(config).startswith("store=memory, ttl=90s")


def test_each_homeserver_has_its_own_metrics_until_it_stops() -> None:
    metrics.register("one.example", _handler(), "memory")
    try:
        metrics.register("two.example", _handler(), "memory")
        try:
            assert _created_by_server() == {"one.example": 0, "two.example": 0}
        finally:
            metrics.unregister("two.example")
        assert _created_by_server() == {"one.example": 0}
    finally:
        metrics.unregister("one.example")
    assert _created_by_server() == {}
    # A homeserver started after every other one stopped registers afresh.
    metrics.register("three.example", _handler(), "memory")
    try:
        assert _created_by_server() == {"three.example": 0}
    finally:
        metrics.unregister("three.example")


def test_the_homeserver_redis_url_brackets_ipv6_and_escapes_secrets() -> None:
    from types import SimpleNamespace

    from synapse_rendezvous.module import homeserver_redis_url

    def url(**fields: object) -> str | None:
        return homeserver_redis_url(SimpleNamespace(redis_enabled=True, **fields))

    assert url(redis_host="::1", redis_port=6380) == "redis://[::1]:6380/0"
    assert url(redis_host="redis.internal", redis_dbid=2) == "redis://redis.internal:6379/2"
    assert (
        url(redis_host="10.0.0.5", redis_password="p@ss:/", redis_use_tls=True)
        == "rediss://:p%40ss%3A%2F@10.0.0.5:6379/0"
    )
    assert homeserver_redis_url(SimpleNamespace(redis_enabled=False)) is None
    # What the module's core makes of it: the literal is an address again.
    config = _core.parse_config({"store": "redis"})
    handler = _core.RendezvousHandler(
        config, BASEURL, mode="takeover", clock=time.time, default_redis_url=url(redis_host="::1")
    )
    address = handler.redis_address
    assert address is not None
    assert (address.host, address.port) == ("::1", 6379)
