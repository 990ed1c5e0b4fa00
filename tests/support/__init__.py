"""Helpers for the tests that are not fixtures: a misbehaving reverse proxy (`support.proxy`)."""

from support.proxy import Faults, ReverseProxy, Seen

__all__ = ["Faults", "ReverseProxy", "Seen"]
