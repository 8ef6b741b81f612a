"""The `tflm-train` command.

Every subcommand prints tables and progress on a terminal, or exactly one
JSON object on stdout with --json. Any failure the user can fix (bad file,
unsupported op, wrong data) is one line on stderr and exit code 2; no
traceback unless TFLMT_DEBUG=1.
"""

from __future__ import annotations

import json
import os
import sys

import click

from tflm_train import __version__

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input: reported in one line, exit 2."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from tflm_train.converter.model_ir import ModelError
    from tflm_train.plugin import PluginError
    from tflm_train.runtime import InterpreterError

    return (UserError, ModelError, InterpreterError, PluginError)


def emit_json(payload: dict) -> None:
    click.echo(json.dumps(payload, indent=None, sort_keys=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tflm-train")
def cli() -> None:
    """Make a .tflite model fine-tune itself on a microcontroller."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def selfcheck(as_json: bool) -> None:
    """Run a training kernel inside the TFLM interpreter and check its numbers."""
    from tflm_train import selfcheck as check

    result = check.run()
    if as_json:
        emit_json(result)
    else:
        verdict = "ok" if result["ok"] else "WRONG"
        click.echo(
            f"{result['kernel']} inside the tflite-micro interpreter: "
            f"max relative error vs numpy {result['max_relative_error']:.2e} ({verdict})"
        )
    if not result["ok"]:
        raise UserError("kernel self-check failed: results differ from numpy")


def main(argv: list[str] | None = None) -> int:
    debug = os.environ.get("TFLMT_DEBUG") == "1"
    try:
        cli.main(args=argv, prog_name="tflm-train", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        click.echo("tflm-train: aborted", err=True)
        return 130
    except click.exceptions.ClickException as exc:  # usage errors
        click.echo(f"tflm-train: error: {exc.format_message()}", err=True)
        return EXIT_USER_ERROR
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except _user_error_types() as exc:
        if debug:
            raise
        click.echo(f"tflm-train: error: {exc}", err=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        click.echo("tflm-train: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: still one line, but say it is ours
        if debug:
            raise
        click.echo(
            f"tflm-train: internal error: {type(exc).__name__}: {exc} (rerun with TFLMT_DEBUG=1 for a traceback)",
            err=True,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
