"""The tests' helpers that are not fixtures, in one package.

- `support.http_client`: the HTTP client of the tests (one request per connection, headers
  exactly as given), the create path and session root spelled once, `etag`;
- `support.raw_http`: raw bytes on a socket, for malformed requests and chosen source
  addresses (the layer below `http_client`, on purpose);
- `support.deployment`: a Synapse main process with generic workers;
- `support.proxy`: a reverse proxy that misbehaves on demand; `support.hostile`: a
  homeserver that attacks the ``check`` command.

The processes they run (Synapse, redis-server, the standalone server) come from ``devtools``
at the repository root, shared with the bench.
"""

from support.proxy import Faults, ReverseProxy, Seen

__all__ = ["Faults", "ReverseProxy", "Seen"]
