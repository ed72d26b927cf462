"""The `lion` command line: store commands call lion_core directly; `run`, `evaluate`, `compare` and `limits` use
Prefect (imported only by the commands that need it, so the others start fast).

Errors meant for the user (LionError) print as one message and exit 1, or the error's own code (3: a
budget cap reached, 4: an endpoint down for longer than allowed); anything else prints one line and
exits 2. `--debug`, anywhere on the command line, shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lion_cli import compare, config, exports, limits, plan, report, run, status, store, supervision
from lion_core.errors import LionError

app = typer.Typer(
    help="Lion adversarial distillation.", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
)
pools_app = typer.Typer(help="Inspect a run's pools.", no_args_is_help=True)
config_app = typer.Typer(help="Check run configs and explain their fields.", no_args_is_help=True)
limits_app = typer.Typer(help="The Prefect concurrency limits that share each API key's budget.", no_args_is_help=True)

# `lion --help` lists the commands in this order.
app.command("init")(store.init)
app.command("plan")(plan.plan)
app.command("run")(run.run)
app.command("evaluate")(run.evaluate)
app.command("compare")(compare.compare)
app.command("status")(status.status)
app.command("export-model")(exports.export_model_command)
app.command("export-dataset")(exports.export_dataset_command)
app.command("dedup")(store.dedup)
app.command("report")(report.report)
pools_app.command("show")(store.pools_show)
config_app.command("check")(config.config_check)
config_app.command("explain")(config.config_explain)
limits_app.command("apply")(limits.limits_apply)
app.add_typer(pools_app, name="pools")
app.add_typer(config_app, name="config")
app.add_typer(limits_app, name="limits")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """Lion adversarial distillation."""


def main() -> None:
    debug = "--debug" in sys.argv[1:]  # the errors below are caught outside click, which keeps the parsed flag
    supervision.fewer_malloc_arenas()
    supervision.handle_stops()
    try:
        app()
        code = 0
    except SystemExit as done:  # click ends every command this way
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            typer.echo(done.code, err=True)
    except LionError as err:
        if debug:
            raise
        typer.echo(f"lion: error: {err}", err=True)
        code = err.exit_code
    except KeyboardInterrupt:
        typer.echo("lion: interrupted", err=True)
        code = 130
    except Exception as err:  # noqa: BLE001 - the last line of defence for a readable message
        if debug:
            raise
        typer.echo(f"lion: internal error: {type(err).__name__}: {err} (run with --debug for the traceback)", err=True)
        code = 2
    supervision.leave(supervision.exit_code(code))


if __name__ == "__main__":
    main()
