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


class HificGroup(click.Group):
    """The ``hific`` group: its help lists each command's whole first sentence (click's default cuts
    it to fit one line, often mid-sentence)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=HificGroup, invoke_without_command=True, no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "-V", "--version", prog_name="hific")
@click.option("-v", "--verbose", count=True, help="More output; -v also shows tracebacks on errors.")
@click.option("--quiet", is_flag=True, help="Print only errors (no short form: -q is encode's quality).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """hific: learned generative image compression (HiFiC) for the command line.

    \b
    Exit codes: 0 ok, 1 error, 2 usage, 3 invalid or corrupt input,
                4 model unavailable or mismatched, 5 output exists (use -f),
                6 --size/--bpp target below the smallest file, 130 interrupted.
    """
    ctx.obj = Settings(verbose=verbose, quiet=quiet and not verbose)
    if ctx.invoked_subcommand is None:  # plain `hific`: the help, and success
        click.echo(ctx.get_help())
        ctx.exit(0)
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


def _click_error(exc: click.ClickException) -> tuple[str, str | None]:
    """A click error as hific's one line (``error: ...``) and a hint naming the command's help."""
    message = exc.format_message().strip().rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    hint = f"see '{ctx.command_path} --help'" if ctx is not None else None
    return message, hint


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
        print_error(*_click_error(exc))
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
