"""The ``edgecnn`` command line. Each command lives in its own module in this package (``cmd_*.py``,
exposing ``command``), parses its options, calls ONE library function and prints the result.

User errors (EdgeCnnError) become one line and exit 1; usage errors exit 2 (click); a failed
regression gate exits 3. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import warnings

import click

from .. import __version__
from ..errors import WRITE_ONLY_ERRNOS, EdgeCnnError, OptionError, cannot_write, suggest

# Commands in pipeline order; modules found but not listed here come after, alphabetically.
ORDER = [
    "models",
    "train",
    "import",
    "eval",
    "export",
    "bench",
    "prune",
    "distill",
    "calib",
    "quantize",
    "compress",
    "devices",
    "doctor",
    "build",
    "deploy",
    "check",
    "sweep",
]


def _discover() -> dict[str, str]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cmd_"):
            found[info.name[4:].replace("_", "-")] = f"{__name__}.{info.name}"
    return found


class EdgeCnnGroup(click.Group):
    def list_commands(self, ctx):
        names = list(_discover())
        return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))

    def get_command(self, ctx, name):
        module = _discover().get(name)
        if module is None:
            return None
        return importlib.import_module(module).command

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            ctx.fail(f"No such command '{name}'.{suggest(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OptionError as exc:  # bad or conflicting options: a usage error, exit 2
            raise click.UsageError(str(exc), ctx) from None
        except EdgeCnnError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # disk full / read-only outside the write helpers: still one line
            if exc.errno not in WRITE_ONLY_ERRNOS:
                raise
            raise click.ClickException(str(cannot_write(exc.filename or "the output", exc))) from None


def _showwarning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


@click.group(cls=EdgeCnnGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgecnn")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage is doing.")
def cli(verbose: bool) -> None:
    """Train, compress, deploy and gate classic image-classification CNNs.

    Every command reads and writes artifacts: a directory with one model file and manifest.json.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.showwarning = _showwarning
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="edgecnn")


if __name__ == "__main__":  # python -m edgecnn.cli (torchrun uses this)
    main(sys.argv[1:])
