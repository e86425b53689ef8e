"""A test fixture plugin for wfkit."""
