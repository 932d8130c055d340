"""Test-only helpers (a fake OpenAI-compatible server)."""
