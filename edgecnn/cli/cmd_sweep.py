from __future__ import annotations

import click

from ..estimator import RATIO_ESTIMATOR
from ._common import EPOCHS, IMAGES, RUNTIME_CHOICES, SECONDS, THREADS, Finite, print_table, write_json


@click.command("sweep")
@click.argument("source", metavar="MODEL|ARTIFACT")
@click.option(
    "--data",
    default=None,
    help="Labelled data for accuracy: 'digits' or an image folder (held-out split) [default: an artifact's "
    "training data, from its manifest].",
)
@click.option(
    "--prune",
    "prune",
    default=None,
    help="Comma-separated pruning ratios [default: 0,0.3,0.5,0.7; 0 for an ONNX artifact, which has no torch network].",
)
@click.option(
    "--precision",
    "precision",
    default="fp32,int8",
    show_default=True,
    help="Comma-separated: fp32, fp16, int8, bf16 (OpenVINO on a CPU with BF16; skipped with the reason elsewhere).",
)
@click.option("--target", type=click.Choice(["cpu", "gpu", "jetson"]), default="cpu", show_default=True)
@click.option("--device", default=None, help="Device profile (edgecnn devices); default per target.")
@click.option("--calib", default=None, help="Calibration images for int8 (default: the training split of --data).")
@click.option(
    "--budget",
    default=None,
    help="e.g. 'top1_drop<=0.5' or 'top1_drop<=1, speedup>=2': names the fastest candidate that meets it. "
    f"speedup = 1 / latency ratio against the prune-0 fp32 candidate in the same runtime ({RATIO_ESTIMATOR}).",
)
@click.option("--weights", default=None, help="Weights for a MODEL name (file, artifact, imagenet).")
@click.option(
    "--finetune-epochs", type=EPOCHS, default=0, show_default=True, help="Fine-tune each pruned candidate on --data."
)
@click.option("--distill", is_flag=True, help="Fine-tune pruned candidates with KD from the original.")
@click.option(
    "--augment",
    metavar="POLICY",
    help="Fine-tuning augmentation: none | light | default | FILE.yaml [default: default].",
)
@click.option("--subset-size", type=IMAGES, default=300, show_default=True, help="INT8 calibration images.")
@click.option("--threads", type=THREADS, default=None, help="Threads for every runtime (default: physical cores).")
@click.option(
    "--runtime",
    type=click.Choice(RUNTIME_CHOICES),
    default=None,
    help="--target cpu: measure every candidate in onnxruntime, openvino, or auto = both (a runtime dimension; "
    "bf16 needs openvino) [default: onnxruntime].",
)
@click.option(
    "--min-time",
    type=Finite(0.05, SECONDS.max),
    default=1.0,
    show_default=True,
    help="Seconds of timed runs per candidate.",
)
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Sweep folder (default runs/sweep/MODEL-TARGET)."
)
@click.option("--fresh", is_flag=True, help="Discard finished candidates in --out and start over.")
@click.option(
    "--deploy-out",
    type=click.Path(file_okay=False),
    default=None,
    help="Bundle the chosen candidate for --target here.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report here.")
def command(
    source,
    data,
    prune,
    precision,
    target,
    device,
    calib,
    budget,
    weights,
    finetune_epochs,
    distill,
    augment,
    subset_size,
    threads,
    runtime,
    min_time,
    out,
    fresh,
    deploy_out,
    json_path,
):
    """Measured Pareto front over pruning ratio x precision on one target.

    MODEL is an artifact, or a zoo name / torchvision:NAME / timm:NAME / FILE.py:factory with --weights.

    Every candidate is built, scored on real held-out data and timed interleaved in one run. A sweep
    that stops part-way resumes where it stopped when run again with the same --out.
    """
    from ..sweep import PRECISIONS, Candidate, SweepOptions, candidate_rows, parse_list, sweep

    options = SweepOptions().merged(
        data=data,
        out=out,
        prune_ratios=None if prune is None else tuple(parse_list(prune, kind="prune")),
        precisions=tuple(parse_list(precision, kind="precision", choices=PRECISIONS)),
        target=target,
        device=device,
        calib=calib,
        budget=budget,
        weights=weights,
        finetune_epochs=finetune_epochs,
        distill=distill,
        augment=augment,
        subset_size=subset_size,
        threads=threads,
        runtime=runtime,
        min_time_s=min_time,
        fresh=fresh,
        deploy_out=deploy_out,
        validate=False,
    )
    report = sweep(source, options)  # checks the options, once

    if report.get("data_chosen"):
        click.echo(f"data: {report['data']} - {report['data_chosen']}")
    rows, cols = candidate_rows([Candidate(**c) for c in report["candidates"]])
    ref = report.get("original_latency_ms")
    print_table(
        rows,
        cols,
        title=f"sweep {report['model']} on {report['target']} - original top-1 "
        f"{report['original_top1']:.2f}%" + (f", reference {ref:.3f} ms" if ref else ""),
    )
    for kind, path in report["paths"].items():
        click.echo(f"{kind}: {path}")
    write_json(json_path, {k: v for k, v in report.items() if k != "deploy"})
    if budget:
        best = report.get("best")
        if best is None:
            raise click.ClickException(
                f"No measured candidate meets the budget '{budget}'; loosen it or add candidates."
            )
        click.echo(
            f"best within '{budget}': {best['name']} ({best['metrics']['latency_ms']:.3f} ms, "
            f"top-1 {best['metrics']['top1']:.2f}%) -> {best['path']}"
        )
        if report.get("deploy"):
            click.echo(f"deployed bundle: {report['deploy'].get('bundle')}")
        else:
            click.echo(f"deploy it with: edgecnn deploy {best['path']} --target {report['target']}")
