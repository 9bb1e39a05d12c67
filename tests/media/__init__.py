"""Tests for dpkit.media: the client's devices (capture, files, synthetic), pacing and levels."""
