from __future__ import annotations

import click

from ..estimator import RATIO_ESTIMATOR
from ._common import BATCH_SIZE, FINITE, RUNTIME_CHOICES, RUNTIME_HELP, SECONDS, SEED, THREADS, print_table
from ._remote import echo_device, on_device


@click.command("check")
@click.argument("candidate", type=click.Path())
@click.option(
    "--against",
    "original",
    required=True,
    type=click.Path(),
    help="The original artifact the candidate was derived from.",
)
@click.option(
    "--data",
    default=None,
    help="Images to compare on: 'digits', a folder of class sub-folders, or 'synthetic[:N]' (plumbing "
    "only); the held-out split is used [default: the original's training data, from its manifest].",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False),
    help="YAML policy with thresholds (options below override it); see examples/policies/.",
)
@click.option(
    "--max-top1-drop", type=FINITE, metavar="PT", help="Max top-1 accuracy drop in percentage points [default: 1.0]."
)
@click.option("--max-top5-drop", type=FINITE, metavar="PT", help="Max top-5 accuracy drop in percentage points.")
@click.option(
    "--min-agreement",
    type=FINITE,
    metavar="F",
    help="Min fraction of images with the same top-1 prediction (0.98 = 98 %).",
)
@click.option(
    "--max-class-drop", type=FINITE, metavar="PT", help="Max accuracy drop of the worst class, in percentage points."
)
@click.option(
    "--max-kl", type=FINITE, metavar="F", help="Max mean KL(original || candidate) of the softmax outputs (nats)."
)
@click.option(
    "--min-speedup",
    type=FINITE,
    metavar="X",
    help=f"Min speed-up: 1 / the latency ratio candidate / original, the {RATIO_ESTIMATOR} of interleaved rounds "
    "(flagged and widened when the rounds are multi-modal; see edgecnn bench --help).",
)
@click.option(
    "--max-latency-ratio", type=FINITE, metavar="X", help=f"Max candidate / original latency ({RATIO_ESTIMATOR})."
)
@click.option("--max-size-ratio", type=FINITE, metavar="X", help="Max candidate file size / original file size.")
@click.option(
    "--decide-on",
    type=click.Choice(["ci", "point"]),
    help="ci: pass/fail only when the confidence interval is clear of the threshold, else inconclusive "
    "(exit 4); point: point estimates [default: ci].",
)
@click.option("--confidence", type=FINITE, help="Confidence level of the intervals, in [0.5, 1) [default: 0.95].")
@click.option("--seed", type=SEED, help="Bootstrap seed [default: 0]; the same seed gives the same interval.")
@click.option("--no-latency", is_flag=True, help="Do not measure latency (latency thresholds are reported as skipped).")
@click.option("--latency-batch-size", type=BATCH_SIZE, help="Batch size of the latency measurement [default: 1].")
@click.option("--latency-min-time", type=SECONDS, metavar="S", help="Seconds of timed runs per model [default: 1.0].")
@click.option("--threads", type=THREADS, help="CPU threads for inference and latency.")
@click.option("--runtime", type=click.Choice(RUNTIME_CHOICES), default=None, help=RUNTIME_HELP)
@click.option("--batch-size", type=BATCH_SIZE, default=64, show_default=True, help="Batch size of the accuracy pass.")
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu, cuda or cuda:N; with --host: the device profile (see 'edgecnn devices').",
)
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False),
    help="Fail when a metric regressed beyond tolerance since this baseline.",
)
@click.option(
    "--save-baseline",
    type=click.Path(dir_okay=False),
    help="Store the accepted metrics (when the gate passes) as a baseline.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write JUnit XML (one test case per metric).")
@click.option("--markdown", type=click.Path(dir_okay=False), help="Write a Markdown report (a pull-request comment).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG: accuracy vs latency and per-class delta.")
@click.option("--progress/--no-progress", default=False, help="Show progress bars.")
@click.pass_context
@on_device
def command(
    ctx,
    candidate,
    original,
    data,
    policy_file,
    no_latency,
    latency_min_time,
    threads,
    batch_size,
    device,
    baseline,
    save_baseline,
    json_path,
    junit,
    markdown,
    plot,
    progress,
    ssh,
    runtime,
    **thresholds,
):
    """Gate CANDIDATE (a compressed artifact) against its original on the same images.

    Compares top-1/top-5 (paired bootstrap interval of the drop, McNemar test), prediction agreement,
    worst per-class drop, KL of the outputs, latency (both measured interleaved), size and MACs.

    Exit codes: 0 pass, 3 fail (the failing metrics are named), 4 inconclusive (an interval straddles
    a threshold: too few images to decide), 1 bad input, 2 bad options.
    """
    from ..check import TABLE_COLUMNS, Policy, check
    from ..check import save_baseline as store_baseline
    from ..deploy.session import DeviceOptions
    from ..report import check_plot_path
    from ..runtime_choice import RuntimeOptions

    runtime = RuntimeOptions().merged(runtime=runtime, device=device).runtime
    host = DeviceOptions.from_cli(ssh, device)  # None: run here
    check_plot_path(plot)
    policy = Policy.load(policy_file) if policy_file else Policy()
    # **thresholds are the options named after Policy fields; Policy.validate holds their rules (exit 2)
    policy = policy.merged(thresholds, latency_min_time_s=latency_min_time, latency_threads=threads)
    report = check(
        candidate,
        original,
        data,
        policy,
        latency=not no_latency,
        baseline=baseline,
        batch_size=batch_size,
        device=device,
        threads=threads,
        progress=progress,
        host=host,
        runtime=runtime,
    )
    if report.data.get("chosen"):
        click.echo(f"data: {report.data['source']} - {report.data['chosen']}")
    print_table(
        report.table_rows(),
        TABLE_COLUMNS,
        title=f"edgecnn check: {report.candidate['model']} {report.candidate['format']}/"
        f"{report.candidate['precision']} vs original on {report.n_images} images",
    )
    echo_device(report.device_state, report.on_device)
    if save_baseline:
        if report.passed:
            store_baseline(report, save_baseline)
        else:
            click.echo(f"warning: baseline {save_baseline} not saved: the gate did not pass.", err=True)
    report.write(json=json_path, junit=junit, markdown=markdown, plot=plot)
    for kind, path in report.reports.items():
        click.echo(f"{kind}: {path}")
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(report.summary())
    ctx.exit(report.exit_code)
