"""Its observers hook hangs."""

import time

import wfkit


@wfkit.hookimpl
def wfkit_observers():
    time.sleep(3600)
