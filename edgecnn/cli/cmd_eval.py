from __future__ import annotations

import click

from ._common import BATCH_SIZE, RUNTIME_CHOICES, RUNTIME_HELP, THREADS, Finite, fmt_pct, print_table, write_json
from ._remote import echo_device, on_device


@click.command("eval")
@click.argument("artifact", type=click.Path(exists=False))
@click.option(
    "--data",
    default=None,
    help="'digits' (bundled held-out split), a folder (its val/ split), or 'synthetic[:N]' [default: the "
    "artifact's training data, from its manifest].",
)
@click.option("--batch-size", type=BATCH_SIZE, default=64, show_default=True)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu | cuda | cuda:N (runner dependent); with --host: the device profile (see 'edgecnn devices').",
)
@click.option("--threads", type=THREADS, default=None, help="Intra-op threads for the runner.")
@click.option("--runtime", type=click.Choice(RUNTIME_CHOICES), default=None, help=RUNTIME_HELP)
@click.option(
    "--val-split",
    type=Finite(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Held-out fraction when DATA is one folder of class sub-folders (same seed as train).",
)
@click.option("--skip-corrupt", is_flag=True, help="Skip unreadable images (counted) instead of failing.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Write the result as JSON (top1/top5 as fractions)."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@on_device
def command(artifact, data, batch_size, device, threads, runtime, val_split, skip_corrupt, json_path, quiet, ssh):
    """Score ARTIFACT (torch, onnx or engine) on the held-out split of DATA: top-1, top-5, per-class
    accuracy and throughput.

    \b
    edgecnn eval runs/lenet5 --data digits --json runs/lenet5-eval.json
    """
    from ..deploy.session import DeviceOptions
    from ..evaluation import evaluate
    from ..ondevice import evaluate_on_device
    from ..runtime_choice import RuntimeOptions

    host = DeviceOptions.from_cli(ssh, device)  # None: run here
    runtime = RuntimeOptions().merged(runtime=runtime, device=device).runtime
    if host is not None:  # the same numbers, measured on the device
        r = evaluate_on_device(
            artifact,
            data,
            host=host,
            batch_size=batch_size,
            threads=threads,
            val_split=val_split,
            skip_corrupt=skip_corrupt,
            runtime=runtime,
        )
    else:
        r = evaluate(
            artifact,
            data,
            batch_size=batch_size,
            device=device,
            threads=threads,
            progress=not quiet,
            skip_corrupt=skip_corrupt,
            val_split=val_split,
            runtime=runtime,
        )
    ips = r.get("images_per_second")
    rows = [
        ["artifact", f"{r['artifact']} ({r['model']}, {r['format']} {r['precision']})"],
        ["runner", r["runner"]],
        *([["runtime choice", r["runtime_choice"]["why"]]] if r.get("runtime_choice") else []),
        ["images", f"{r['n']:,}" + (f" (skipped {r['skipped']} unreadable)" if r.get("skipped") else "")],
        ["top-1", fmt_pct(r["top1"])],
        ["top-5", fmt_pct(r["top5"])],
        ["throughput", "-" if ips is None else f"{ips:,.1f} images/s (batch {batch_size})"],
    ]
    if r.get("int8_layout"):
        click.echo(r["int8_layout"]["line"])
    if r["data"].get("chosen"):
        click.echo(f"data: {r['data']['source']} - {r['data']['chosen']}")
    print_table(rows, ["eval", "result"], title=f"edgecnn eval on {data or r['data']['source']}")
    echo_device(r.get("device_state"), r.get("on_device"))
    counts = r.get("per_class_n", {})
    print_table(
        [[name, fmt_pct(acc), counts.get(name, "")] for name, acc in r["per_class"].items()],
        ["class", "top-1", "images"],
        title="per-class accuracy",
    )
    write_json(json_path, r)
