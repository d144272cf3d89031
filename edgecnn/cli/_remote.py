"""The ssh options of ``deploy --host`` and of ``eval / bench / check --host`` (one definition), and how the
commands that run on a device say so."""

from __future__ import annotations

import functools

import click

from ._common import SECONDS, Finite

#: the keyword arguments :func:`ssh_click_options` adds, in the order of RemoteOptions' fields
SSH_KEYS = (
    "host",
    "port",
    "identity",
    "remote_dir",
    "remote_python",
    "ssh_option",
    "remote_timeout",
    "connect_timeout",
)


def ssh_click_options(host_help: str, remote_dir_help: str, timeout_help: str):
    """Decorator: --host, --port, --identity, --remote-dir, --remote-python, --ssh-option, --remote-timeout and
    --connect-timeout (bounded here; their rules are RemoteOptions.validate's)."""
    options = [
        click.option("--host", default=None, metavar="USER@HOST", help=host_help),
        click.option("--port", type=click.IntRange(1, 65535), default=None, help="ssh port (with --host)."),
        click.option(
            "--identity", type=click.Path(dir_okay=False), default=None, help="ssh private key (with --host)."
        ),
        click.option("--remote-dir", default=None, help=remote_dir_help),
        click.option("--remote-python", default="python3", show_default=True, help="Python on the host."),
        click.option("--ssh-option", multiple=True, metavar="KEY=VALUE", help="Extra ssh -o option (repeatable)."),
        click.option(
            "--remote-timeout",
            type=Finite(1, SECONDS.max),
            default=1800,
            show_default=True,
            metavar="SECONDS",
            help=timeout_help,
        ),
        click.option(
            "--connect-timeout",
            type=click.IntRange(1, 300),
            default=10,
            show_default=True,
            metavar="SECONDS",
            help="How long ssh waits for the host to answer.",
        ),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def on_device(fn):
    """Decorator for eval / bench / check: adds the ssh options and hands the command their values as one
    ``ssh`` mapping, for ``DeviceOptions.from_cli`` (which holds their rules)."""

    @ssh_click_options(
        "Run on this device over ssh: the artifacts are bundled for --device's profile, copied once (reused "
        "by sha256) and run there by the bundle's own runner; the device's state is reported.",
        "Folder on the host for bundles and inputs [default: edgecnn-gate].",
        "Limit for each step on the host.",
    )
    @functools.wraps(fn)
    def command(*args, **kwargs):
        return fn(*args, ssh={key: kwargs.pop(key) for key in SSH_KEYS}, **kwargs)

    return command


def echo_device(state: dict | None, on: dict | None) -> None:
    """Where it ran, what was copied or reused, and the device's state (each field or 'unavailable')."""
    if not on:
        return
    copies = [*on.get("bundles", []), *([on["inputs"]] if on.get("inputs") else [])]
    what = ", ".join(f"{c.get('role', 'inputs')} {'copied' if c['copied'] else 'reused (sha256)'}" for c in copies)
    click.echo(f"on the device: {on['host']} ({on['profile']}, {on.get('runtime')}); {what}")
    keys = ("board", "l4t", "jetpack", "tensorrt", "nvpmodel", "jetson_clocks", "gpu_clock", "temperature_c")
    shown = [f"{k} {_short(state.get(k))}" for k in keys] + [f"cpu {state.get('cpu_model')}"]
    click.echo("device state: " + "; ".join(shown) + f"; load {_short(state.get('load_average'))}")


def _short(v) -> str:
    if isinstance(v, dict):
        return v.get("name") or ", ".join(f"{k} {x}" for k, x in v.items() if k != "path")
    if isinstance(v, list):
        return " ".join(f"{x:.2f}" if isinstance(x, float) else str(x) for x in v)
    return str(v)
