"""The admin check is exercised against the real bot and the fakes too: reuse the end-to-end harness."""

from tests.e2e.conftest import harness

__all__ = ["harness"]
