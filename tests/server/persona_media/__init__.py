"""Tests for the persona media the server draws and speaks: face, voice, and their tracks."""
