"""Tests for dpkit.media: the persona's face and voice, synthetic devices, pacing and levels."""
