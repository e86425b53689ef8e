"""Plugins that misbehave on purpose (tests/test_plugins.py)."""
