"""``wfkit list-workflows``, ``wfkit plugins``, ``wfkit graph``: what the installed plugins offer."""

from __future__ import annotations

import click

from wfkit.cli.common import (
    cli,
    complete_workflows,
    echo_json,
    json_option,
    params_options,
    render_table,
    warn_plugin_failures,
)


@cli.command("list-workflows")
@json_option
def list_workflows_cmd(as_json: bool) -> None:
    """List the workflows that installed plugins register.

    Example: wfkit list-workflows --json
    """
    from wfkit.plugins import list_workflows

    workflows = list_workflows()
    warn_plugin_failures()
    if as_json:
        echo_json([w.to_dict() for w in workflows])
        return
    from wfkit.plugins import loading_turned_off, plugin_report, selected_plugins

    if not workflows and selected_plugins() == set() and plugin_report().plugins:
        click.echo(f"No workflows are registered: {loading_turned_off(plugin_report())}.")
        return
    if not workflows:
        click.echo(
            "No workflows are registered.\n"
            "Install a package that ships wfkit workflows (for example: pip install ./plugins/wfkit-samples),\n"
            "or write one: a module with a `wfkit_register_workflows(registry)` hook, named by an entry point\n"
            "in the group 'wfkit' (see examples/wfkit-plugin-template). `wfkit plugins` shows what was found."
        )
        return
    click.echo(render_table(("NAME", "DESCRIPTION", "PLUGIN"), ((w.name, w.description, w.plugin) for w in workflows)))


@cli.command("plugins")
@json_option
def plugins_cmd(as_json: bool) -> None:
    """List installed plugins, their workflows and errors.

    For each plugin (entry point in the group 'wfkit'): its distribution and
    version, module, hooks, the workflows it registers, any it skipped, and
    the error that stopped it loading.

    Example: wfkit plugins --json
    """
    from wfkit.plugins import plugin_report

    report = plugin_report()
    if as_json:
        echo_json({"plugins": [p.to_dict() for p in report.plugins], "warnings": report.warnings})
        return
    for message in report.warnings:
        click.echo(f"Warning: {message}", err=True)
    if not report.plugins:
        click.echo("No plugins are installed (entry-point group 'wfkit').")
        return
    for p in report.plugins:
        state = "loaded" if p.loaded else ("FAILED" if p.error else "not loaded (WFKIT_LOAD_PLUGINS)")
        click.echo(f"{p.name}: {state}")
        click.echo(f"  distribution  {p.distribution or '-'} {p.version or ''}".rstrip())
        click.echo(f"  module        {p.module}")
        click.echo(f"  hooks         {', '.join(p.hooks) or '-'}")
        click.echo(f"  workflows     {', '.join(p.workflows) or '-'}")
        for item in p.skipped:
            click.echo(f"  skipped       {item}")
        if p.error:
            click.echo(f"  error         {p.error}")


@cli.command("graph")
@click.argument("name", shell_complete=complete_workflows)
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "json"], case_sensitive=False), default=None,
    help="Output format (default: mermaid).",
)
@json_option
@params_options
def graph_cmd(name: str, fmt: str | None, as_json: bool, param_pairs: tuple[str, ...],
              params_json: str | None) -> None:
    """Show the graph that workflow NAME builds.

    The graph is built with the workflow's default params, or those given.
    Mermaid by default (paste it into any mermaid viewer); --json for the
    nodes and edges as JSON (an edge to END has "to_node": null).

    Example: wfkit graph review-loop -p max_rounds=5
    """
    from wfkit.cli.params import parse_params, text_fields_of
    from wfkit.plugins import get_workflow

    if as_json and fmt is not None and fmt.lower() != "json":
        raise click.UsageError(f"--json and --format {fmt} ask for two formats: give one")
    workflow = get_workflow(name)
    params = parse_params(param_pairs, params_json, text_fields_of(workflow))
    warn_plugin_failures()
    graph, _state = workflow.build(params)
    if as_json or (fmt or "").lower() == "json":
        echo_json(graph.to_dict())
    else:
        click.echo(graph.to_mermaid())
