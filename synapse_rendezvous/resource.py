"""The Twisted resource at ``/_synapse/client/rendezvous``: every request goes to the core."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

if TYPE_CHECKING:
    from twisted.web.server import Request

    from synapse_rendezvous.dispatch import Dispatcher
    from synapse_rendezvous.listeners import ClientListeners


class RendezvousResource(Resource):
    """Serves the sessions (and, in delegation mode, creates) under its path, on the
    listeners that serve the client API; elsewhere every request is 404 ``M_UNRECOGNIZED``.

    The core writes the whole response itself, including CORS headers and Matrix JSON
    errors, so no method is refused here.
    """

    isLeaf = True

    def __init__(self, dispatcher: Dispatcher, listeners: ClientListeners) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it unannotated
        self._dispatcher = dispatcher
        self._listeners = listeners

    def render(self, request: Request) -> int:
        if self._listeners.serve(request):
            self._dispatcher.handle(request)
        else:
            self._dispatcher.unrecognized(request)
        return NOT_DONE_YET
