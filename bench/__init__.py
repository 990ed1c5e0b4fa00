"""Side-by-side benchmark of synapse-rendezvous against Synapse's built-in (``scripts/bench``)."""
