"""The ceiling of the benchmark: a Synapse module serving a fixed answer that costs nothing.

``TrivialModule`` registers a Twisted resource at `PATH` on the client listener that answers
every request with the same small 200, without reading the request or touching any state.
No handler inside Synapse can be faster than this, because every request still goes through
Synapse's HTTP stack (Twisted's parser, ``SynapseSite``, logging, metrics) exactly as a
rendezvous request does.

Loaded by the Synapse subprocess of the benchmark as ``trivial_module.TrivialModule``, with
this directory on its ``PYTHONPATH`` (see ``bench/servers.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.resource import Resource

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twisted.web.server import Request

    from synapse.module_api import ModuleApi

PATH = "/_synapse/client/bench_trivial"

_BODY = b"ok"
_HEADERS = (
    (b"Content-Type", [b"text/plain"]),
    (b"Content-Length", [str(len(_BODY)).encode()]),
    (b"Cache-Control", [b"no-store, no-transform"]),
)


class TrivialResource(Resource):
    """Answers 200 ``ok`` to anything under its path."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(200)
        for name, values in _HEADERS:
            request.responseHeaders.setRawHeaders(name, values)
        return _BODY


class TrivialModule:
    """Registers `TrivialResource` at `PATH`."""

    def __init__(self, config: Mapping[str, object] | None, api: ModuleApi) -> None:
        api.register_web_resource(PATH, TrivialResource())  # type: ignore[no-untyped-call]

    @staticmethod
    def parse_config(config: Mapping[str, object] | None) -> Mapping[str, object] | None:
        return config
