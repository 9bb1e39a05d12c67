"""Tests of dpkit as a user installs it: the sdist, the wheel, and fresh virtual environments."""
