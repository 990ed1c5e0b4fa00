"""What Synapse's servlets and our resource call for every rendezvous request.

The core answers each request in the call (memory store), or turns it into one Redis call
written on a connection the reactor keeps open (`synapse_rendezvous.redis_connection`); the
reply, read by the reactor, completes it. Nothing here waits, so no request holds a thread or
a logcontext while Redis answers. The handler says when the deadlines of the requests waiting
on Redis need a look; `Timer` schedules that on the reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.web.iweb import IRequest

    from synapse_rendezvous._core import RendezvousHandler


class Timer:
    """Calls the handler's ``tick`` when it asks, so that no request outlives its deadline."""

    def __init__(self, reactor: IReactorTime, handler: RendezvousHandler) -> None:
        self._reactor = reactor
        self._handler = handler
        self._call: IDelayedCall | None = None
        self._stopped = False

    def after(self, delay: float | None) -> None:
        """Runs the handler's tick in ``delay`` seconds; None: the handler needs no timer."""
        if delay is None or self._stopped:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._reactor.callLater(max(delay, 0.0), self._fire)

    def stop(self) -> None:
        """Cancels the pending tick, for good."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = None
        self.after(self._handler.tick())


class Dispatcher:
    """Has the four methods Synapse's own servlets call on the built-in handler, so that
    takeover mode can install it in the built-in's place; the session id they pass is
    ignored, since the core reads the (undecoded) path itself."""

    def __init__(self, handler: RendezvousHandler, timer: Timer) -> None:
        self._handler = handler
        self._timer = timer

    def handle(self, request: IRequest, *, authenticated: bool = False) -> None:
        """Answers ``request``, now or once Redis has answered; ``authenticated``: its
        access token was checked (MSC4388's ``authenticated`` mode)."""
        self._timer.after(self._handler.handle(request, authenticated=authenticated))

    def unrecognized(self, request: IRequest) -> None:
        """Answers 404 ``M_UNRECOGNIZED``: ``request`` came where the API is not served."""
        self._handler.answer_unrecognized(request)

    def handle_post(self, request: IRequest) -> None:
        self.handle(request)

    def handle_get(self, request: IRequest, session_id: str) -> None:
        self.handle(request)

    def handle_put(self, request: IRequest, session_id: str) -> None:
        self.handle(request)

    def handle_delete(self, request: IRequest, session_id: str) -> None:
        self.handle(request)
