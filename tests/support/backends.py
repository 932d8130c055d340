"""Backend wrappers for tests that hand the session's backend to code that opens its own."""

from __future__ import annotations

from deepcritic.generation import Backend


class KeepOpen:
    """The session's tiny backend for code that opens (and closes) its own: close is a no-op."""

    def __init__(self, backend: Backend):
        self.inner = backend
        self.name, self.stats = backend.name, backend.stats
        self.generate, self.choose = backend.generate, backend.choose

    def close(self) -> None:
        pass
