"""An environment in which no Rust toolchain can be found, for the tests that install what an
admin without Rust installs (the module's wheel, the server's wheel)."""

from __future__ import annotations

import os

__all__ = ["without_rust"]


def without_rust(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every cargo and rustup directory off PATH."""
    path = os.pathsep.join(
        entry
        for entry in env.get("PATH", "").split(os.pathsep)
        if ".cargo" not in entry and "rustup" not in entry
    )
    return {**env, "PATH": path, "CARGO_HOME": "/nonexistent", "RUSTUP_HOME": "/nonexistent"}
