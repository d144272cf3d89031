from __future__ import annotations

import functools

import click

from ..bench_table import FLAGS_COLUMN, RATIO_COLUMN, SPEEDUP_COLUMN
from ..estimator import RATIO_ESTIMATOR, RATIO_RULE, RATIO_TOLERANCE
from ._common import BATCH_SIZE, RUNS, RUNTIME_CHOICES, RUNTIME_HELP, SECONDS, THREADS, print_table, write_json
from ._remote import echo_device, on_device


class Warmup(click.ParamType):
    """'10' = 10 warm-up runs, '2s' = 2 seconds of warm-up."""

    name = "N|Ns"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return value
        text = str(value).strip().lower()
        try:
            result = float(text[:-1]) if text.endswith("s") else int(text)
        except ValueError:
            self.fail(f"{value!r}: write N (runs) or Ns (seconds), e.g. 10 or 2s.", param, ctx)
        if not 0 <= result <= (SECONDS.max if text.endswith("s") else RUNS.max):  # NaN fails too
            self.fail(f"{value!r}: warm-up is 0 to {RUNS.max:,} runs or 0 to {SECONDS.max:,}s.", param, ctx)
        return result


HELP = f"""Measure the latency of one or more ARTIFACTS (torch, onnx, engine) in one process.

With several artifacts they run interleaved in rounds (A B, B A, ...). The table prints per row: p50,
p90, p99, mean ± std (ms), img/s, runs, rounds, then the ratio of the row's latency to the first's as
{RATIO_COLUMN!r} = {RATIO_ESTIMATOR}, its {SPEEDUP_COLUMN!r} (1 / ratio) and {FLAGS_COLUMN!r}.
{RATIO_RULE[0].upper()}{RATIO_RULE[1:]} Flagged rows are explained under the table.

\b
Example:
  edgecnn bench runs/resnet50 runs/resnet50-onnx -b 1 -b 8 --threads 2 --json bench.json
"""


@click.command("bench", help=HELP)
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option(
    "--batch-size",
    "-b",
    "batch_sizes",
    multiple=True,
    type=BATCH_SIZE,
    default=(1,),
    show_default=True,
    help="Batch size to measure (repeat for several).",
)
@click.option(
    "--threads", type=THREADS, default=None, help="Threads pinned for every runtime [default: physical cores]."
)
@click.option(
    "--warmup",
    type=Warmup(),
    default="10",
    show_default=True,
    help="Warm-up per artifact and batch size: N runs or Ns seconds.",
)
@click.option(
    "--min-time",
    type=SECONDS,
    default=5.0,
    show_default=True,
    help="Minimum timed seconds per artifact and batch size.",
)
@click.option(
    "--max-time",
    type=SECONDS,
    default=None,
    help=f"Time budget per artifact and batch size: rounds go on past --min-time until every ratio's interval "
    f"is within +-{100 * RATIO_TOLERANCE:g}% [default: 3x --min-time].",
)
@click.option(
    "--min-repeats", type=RUNS, default=20, show_default=True, help="Minimum timed runs per artifact and batch size."
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu, cuda[:N] (engines and ONNX with a GPU build); with --host: the device profile.",
)
@click.option(
    "--interleave/--sequential",
    default=True,
    show_default=True,
    help="Run artifacts in interleaved rounds (A B A B ...) so machine drift cancels in the ratios.",
)
@click.option(
    "--data",
    default="digits",
    show_default=True,
    help="Input images: 'digits' (real, preprocessed per artifact) or 'synthetic'.",
)
@click.option(
    "--ort-spinning",
    is_flag=True,
    help="Let ONNX Runtime's intra-op threads spin between runs (its own default, what a deployed CPU "
    "bundle uses). Off by default: spinning threads slow the other candidates of an interleaved "
    "run (torch most), so time spinning ONNX artifacts without torch next to them.",
)
@click.option("--runtime", type=click.Choice(RUNTIME_CHOICES), default=None, help=RUNTIME_HELP)
@click.option(
    "--memory/--no-memory",
    default=True,
    show_default=True,
    help="Peak memory: RSS high-water mark of a fresh process that loads and runs each candidate.",
)
@click.option(
    "--throughput-batch",
    type=BATCH_SIZE,
    default=8,
    show_default=True,
    help="Throughput mode's batch size (several inferences in flight; see --streams).",
)
@click.option(
    "--streams",
    type=THREADS,
    default=2,
    show_default=True,
    help="Throughput mode: inferences in flight (OpenVINO streams; ONNX Runtime/torch: threads on one session).",
)
@click.option("--no-throughput", is_flag=True, help="Skip the throughput mode.")
@click.option("--label", "labels", multiple=True, help="Name for each artifact in the table (repeat, in order).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the full result as JSON.")
@on_device
def command(
    artifacts,
    batch_sizes,
    threads,
    warmup,
    min_time,
    min_repeats,
    max_time,
    device,
    interleave,
    data,
    ort_spinning,
    runtime,
    memory,
    throughput_batch,
    streams,
    no_throughput,
    labels,
    json_path,
    ssh,
):
    from ..bench import environment_line, results_table, table_title
    from ..bench_modes import extra_table, run_bench
    from ..deploy.session import DeviceOptions
    from ..ondevice import bench_on_device
    from ..runtime_choice import RuntimeOptions

    host = DeviceOptions.from_cli(ssh, device)  # None: run here
    runtime = RuntimeOptions().merged(runtime=runtime, device=device).runtime
    run = run_bench if host is None else functools.partial(bench_on_device, host=host)  # timed on the device
    result = run(
        list(artifacts),
        runtime=runtime,
        memory=memory,
        throughput_batch=None if no_throughput else throughput_batch,
        streams=streams,
        batch_sizes=batch_sizes,
        warmup=warmup,
        min_time_s=min_time,
        min_repeats=min_repeats,
        max_time_s=max_time,
        threads=threads,
        device=device,
        interleave=interleave,
        data=data,
        labels=list(labels) or None,
        ort_spinning=ort_spinning,
    )
    rows, cols = results_table(result)
    print_table(rows, cols, title=table_title(result))
    if (memory or not no_throughput) and host is None:
        rows, cols = extra_table(result)
        print_table(rows, cols, title="peak memory (fresh process) and throughput mode")
    for choice in result.get("runtime_choices", []):
        click.echo(f"runtime auto: {choice['artifact']} batch {choice['batch_size']}: {choice['why']}")
    click.echo(environment_line(result))
    for cand in result["candidates"]:
        if cand.get("int8_layout"):
            click.echo(f"{cand['label']}: {cand['int8_layout']['line']}")
    echo_device(result.get("device_state"), result.get("on_device"))
    for note in result["notes"]:
        click.echo(f"flagged: {note}")
    write_json(json_path, result)
