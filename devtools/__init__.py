"""What the tests and the bench run, kept out of the installed package (it is not shipped).

- `devtools.process`: one child process in its own session, bounded readiness wait, SIGTERM
  then SIGKILL, and port retry (`ManagedProcess`, `LoopbackPort`);
- `devtools.synapse`: a Synapse with the module (`SynapseServer`) and its log records;
- `devtools.redis`: a throwaway redis-server, driven with ``redis-cli`` (`RedisServer`);
- `devtools.standalone`: the standalone server binary (`StandaloneServer`).

The tests (``tests/conftest.py``) and the bench (``bench/``) put the repository root on
``sys.path`` to import it; maturin ships only ``synapse_rendezvous`` (``python-packages``).
"""
