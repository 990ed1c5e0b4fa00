"""Runs the core for each request, on the right thread and in the request's logcontext.

With the memory store the core answers in microseconds and never blocks, so it runs inline.
With a network store, Twisted's reactor must not wait on it: the request is read on the
reactor thread, processed on a thread of the module's own pool (the core releases the GIL
there), and written back on the reactor thread, following Synapse's logcontext rules. The pool
is the module's own because Synapse's shared one also encodes every JSON response: requests
waiting out an unreachable Redis there would slow all of Synapse down.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from twisted.python.threadpool import ThreadPool

from synapse.logging.context import defer_to_threadpool, run_in_background

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.defer import Deferred
    from twisted.web.iweb import IRequest

    from synapse.types import ISynapseReactor

    from synapse_rendezvous._core import RendezvousHandler

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class StoreThreads:
    """The module's own threads for calls that may wait on the store, stopped at shutdown."""

    def __init__(self, reactor: ISynapseReactor, size: int) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=size, name="synapse_rendezvous")
        self._pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)

    def run(self, f: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Deferred[R]:
        """Runs ``f`` on one of the threads, keeping the caller's logcontext rules."""
        return defer_to_threadpool(self._reactor, self._pool, f, *args, **kwargs)


class Dispatcher:
    """What Synapse's servlets and our resource call for every rendezvous request.

    It has the four methods Synapse's own servlets call on the built-in handler, so takeover
    mode can install it in the built-in's place; the session id they pass is ignored, since
    the core reads the (undecoded) path itself.
    """

    def __init__(self, handler: RendezvousHandler, threads: StoreThreads | None) -> None:
        """``threads`` runs the store calls; None answers inline (a store that never blocks)."""
        self._handler = handler
        self._threads = threads

    def handle(self, request: IRequest) -> None:
        """Answers ``request``, now or (for a network store) once the store has answered."""
        if self._threads is not None:
            run_in_background(self._handle_off_reactor, self._threads, request)
        else:
            self._handler.handle(request)

    def handle_post(self, request: IRequest) -> None:
        self.handle(request)

    def handle_get(self, request: IRequest, session_id: str) -> None:
        self.handle(request)

    def handle_put(self, request: IRequest, session_id: str) -> None:
        self.handle(request)

    def handle_delete(self, request: IRequest, session_id: str) -> None:
        self.handle(request)

    async def _handle_off_reactor(self, threads: StoreThreads, request: IRequest) -> None:
        try:
            pending = self._handler.read_request(request)
            response = await threads.run(self._handler.process, pending)
            self._handler.write_response(request, response)
        except Exception:
            # The core turns every failure into a response; this is a bug in the glue.
            logger.exception("synapse_rendezvous failed to answer a request")
            _abort(request)


def _abort(request: IRequest) -> None:
    """Ends a request that could not be answered, so that it does not hang."""
    finished = getattr(request, "finished", False)
    if finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(500)
    request.setHeader(b"Content-Type", b"application/json")
    body = b'{"errcode":"M_UNKNOWN","error":"Internal server error"}'
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    request.write(body)
    request.finish()
