"""Sample workflows for wfkit."""
