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
