"""The event loop every long-running OMS process runs on."""

from __future__ import annotations


def use_event_loop(name: str) -> None:
    """uvloop by default: its event loop runs the worker's socket and callback work in C (a
    part of each batch's time in the profile); ``aio`` is the standard library's loop."""
    if name != "aio":
        import mode.loop

        mode.loop.use(name)
