from __future__ import annotations

import sys

import click

from ._common import BATCH_SIZE, EPOCHS, SEED, Finite, fmt_pct, print_table, write_json


@click.command("sparsify")
@click.argument("artifact", type=click.Path())
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Output artifact directory (not with --check).")
@click.option(
    "--pattern",
    type=click.Choice(["2:4", "unstructured"]),
    default="2:4",
    show_default=True,
    help="2:4 (2 zeros in every 4 input-channel weights: TensorRT sparse tensor cores) or unstructured magnitude.",
)
@click.option(
    "--sparsity",
    type=Finite(0, 1, min_open=True, max_open=True),
    help="Fraction of each layer's weights to zero with --pattern unstructured [default: 0.5; 2:4 is always 0.5].",
)
@click.option(
    "--finetune-epochs",
    type=EPOCHS,
    default=0,
    show_default=True,
    help="Train with the mask held fixed (needs --data).",
)
@click.option("--data", help="Training / evaluation data: 'digits' or a folder of class sub-folders.")
@click.option("--exclude", multiple=True, metavar="LAYER", help="Leave this layer dense; repeat.")
@click.option(
    "--augment",
    metavar="POLICY",
    help="Fine-tuning augmentation: none | light | default | FILE.yaml [default: default].",
)
@click.option("--lr", type=Finite(min=0, min_open=True), help="Fine-tuning learning rate [default: 0.01, SGD].")
@click.option("--batch-size", type=BATCH_SIZE, default=64, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="Fine-tuning device: auto, cpu, cuda[:N].")
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Only verify ARTIFACT's 2:4 pattern (exit 3 if a group of 4 has fewer than 2 zeros).",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the summary as JSON.")
def command(
    artifact,
    out,
    pattern,
    sparsity,
    finetune_epochs,
    data,
    exclude,
    augment,
    lr,
    batch_size,
    seed,
    device,
    check_only,
    progress,
    json_path,
):
    """Zero weights of a torch ARTIFACT in the 2:4 pattern TensorRT runs on sparse tensor cores (or
    unstructured), optionally fine-tuning with the mask fixed; or --check an artifact's 2:4 pattern.

    Layers TensorRT would not run sparse (grouped convs, input channels not a multiple of 16, outputs
    not a multiple of 8 - e.g. a 1-3 channel stem) stay dense; the manifest lists them with the reason.

    \b
    Examples:
      edgecnn sparsify runs/resnet18 --out runs/resnet18-24 --finetune-epochs 3 --data digits
      edgecnn sparsify runs/resnet18-24 --check
    """
    from ..compress.sparsity import SparsifyOptions, check_2to4, check_mode, sparsify

    check_mode(out, check_only)
    if check_only:
        bad = check_2to4(artifact)
        write_json(json_path, {"artifact": artifact, "violations": bad, "ok": not bad})
        if bad:
            print_table(
                [
                    [b["layer"], b.get("violating_groups", "-"), b.get("groups", "-"), b.get("first", b.get("error"))]
                    for b in bad
                ],
                ["layer", "violating groups", "groups", "first (out, in, kh, kw)"],
                title="2:4 violations (groups of 4 input-channel weights with more than 2 non-zeros)",
            )
            click.echo(f"2:4 check failed: {len(bad)} layer(s) break the pattern.", err=True)
            sys.exit(3)
        click.echo("2:4 check passed: every group of 4 input-channel weights has at least 2 zeros.")
        return
    options = SparsifyOptions(
        pattern=pattern,
        sparsity=sparsity,
        finetune_epochs=finetune_epochs,
        data=data,
        exclude=exclude,
        augment=augment,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    art = sparsify(artifact, out, options, progress=progress)
    rep = art.manifest["sparsity"]
    rows = [[n, fmt_pct(v, 1)] for n, v in rep["layers"].items()]
    rows += [[n, f"dense ({why})"] for n, why in rep["skipped"].items()]
    print_table(
        rows,
        ["layer", "zeros"],
        title=f"{art.model}: {pattern} sparsity on {len(rep['layers'])} layer(s), "
        f"{fmt_pct(rep['covered_weight_fraction'], 1)} of conv/linear weights",
    )
    if rep["top1"]:
        t = rep["top1"]
        click.echo(
            f"top-1 (held out): original {fmt_pct(t['original'])}, masked {fmt_pct(t['masked'])}, "
            f"final {fmt_pct(t['final'])}"
        )
    click.echo(f"wrote {art.path}")
    write_json(json_path, {"artifact": str(art.path), **rep})
