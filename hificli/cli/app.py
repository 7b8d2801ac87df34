"""Top-level ``hific`` group, global options and the one place where errors become exit codes.

Command modules are imported here, so they must not import torch at module level: import it inside the
command body that needs it (``hific --help``, ``info`` and ``models`` stay fast).
"""

from __future__ import annotations

import sys

import click

from hificli import __version__
from hificli.cli.common import Settings, print_error
from hificli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, HificError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="hific")
@click.option("-v", "--verbose", count=True, help="More output; -v also shows tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """hific: learned generative image compression (HiFiC) for the command line.

    \b
    Exit codes: 0 ok, 1 error, 2 usage, 3 invalid or corrupt input,
                4 model unavailable or mismatched, 5 output exists (use -f), 130 interrupted.
    """
    ctx.obj = Settings(verbose=verbose, quiet=quiet and not verbose)
    if ctx.invoked_subcommand in INFERENCE_COMMANDS:
        from hificli.device import set_passive_wait_policy

        set_passive_wait_policy()  # before torch is imported: idle OpenMP threads sleep, not spin


#: Commands whose (worker) processes get OMP_WAIT_POLICY=PASSIVE unless the user set a policy.
INFERENCE_COMMANDS = ("encode", "decode", "eval")


def _register_commands() -> None:
    from hificli.cli import decode, encode, eval, info, models, train

    for module in (encode, decode, info, models, train, eval):
        cli.add_command(module.command)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map exceptions to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    try:
        code = cli.main(args=args, prog_name="hific", standalone_mode=False)
    except click.exceptions.Abort:
        print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code if exc.exit_code else EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except HificError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        print_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # a bug or an OS error: one line unless -v
        if verbose:
            import traceback

            traceback.print_exc()
        print_error(f"{type(exc).__name__}: {exc}", "run with -v for the traceback" if not verbose else None)
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)
