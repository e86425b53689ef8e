"""My wfkit workflows."""
