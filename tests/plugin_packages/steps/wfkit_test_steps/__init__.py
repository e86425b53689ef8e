"""A test fixture plugin: a chain of steps that can pause where a test wants to kill or cancel it."""
