"""A plugin that misspells its hook."""

import wfkit


@wfkit.hookimpl
def wfkit_register_workflow(registry):  # missing the final "s"
    pass
