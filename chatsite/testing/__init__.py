"""Test helpers shared by every app; `chatsite.testing.upstream` is the stub OpenAI-compatible upstream."""
