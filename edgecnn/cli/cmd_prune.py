from __future__ import annotations

import click

from ._common import BATCH_SIZE, EPOCHS, SEED, Finite, fmt_count, fmt_pct, print_table, write_json

_RATIO = Finite(0, 1, min_open=True, max_open=True)


def summary(art) -> dict:
    """What the table and --json show: before/after, achieved vs requested, per step."""
    rep = art.manifest["pruning"]
    return {
        "artifact": str(art.path),
        "model": art.model,
        "requested": rep["requested"],
        "achieved": rep["achieved"],
        "macs": rep["macs"],
        "params": rep["params"],
        "top1": rep["top1"],
        "importance": rep["importance"],
        "global": rep["global"],
        "round_to": rep["round_to"],
        "max_layer_ratio": rep["max_layer_ratio"],
        "layers_changed": len(rep["layers"]),
        "steps": [{k: v for k, v in s.items() if k != "history"} for s in rep["steps"]],
    }


def print_summary(s: dict) -> None:
    top1 = s["top1"] or {}
    a = s["achieved"]
    rows = [
        ["MACs", fmt_count(s["macs"]["before"]), fmt_count(s["macs"]["after"]), f"{a['macs_ratio']:.3f}"],
        ["params", fmt_count(s["params"]["before"]), fmt_count(s["params"]["after"]), f"{a['params_ratio']:.3f}"],
        ["channels removed", "", fmt_pct(a["channel_ratio"], 1), ""],
    ]
    if top1:
        rows.append(
            [
                "top-1 (held out)",
                fmt_pct(top1["original"]),
                fmt_pct(top1["pruned"]),
                f"{100 * (top1['pruned'] - top1['original']):+.2f} pt",
            ]
        )
    req = s["requested"]
    print_table(
        rows,
        ["", "original", "pruned", "after/before"],
        title=f"{s['model']} pruned ({req['kind'].replace('_', '-')} {req['value']}, "
        f"importance {s['importance']}{', global' if s['global'] else ''}, round-to {s['round_to']})",
    )
    if len(s["steps"]) > 1 or any("top1_finetuned" in st for st in s["steps"]):
        print_table(
            [
                [
                    st["step"],
                    st["channel_ratio"],
                    f"{st['macs_ratio']:.3f}",
                    f"{st['params_ratio']:.3f}",
                    fmt_pct(st.get("top1_pruned")),
                    fmt_pct(st.get("top1_finetuned")),
                ]
                for st in s["steps"]
            ],
            ["step", "channel ratio", "MACs", "params", "top-1 pruned", "top-1 fine-tuned"],
            title="steps",
        )


@click.command("prune")
@click.argument("artifact", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output artifact directory.")
@click.option(
    "--ratio", type=_RATIO, help="Fraction of channels to remove (per layer; across the network with --global)."
)
@click.option(
    "--target-macs", type=_RATIO, metavar="F", help="Keep at most this fraction of the original MACs (0.5 = half)."
)
@click.option(
    "--target-params", type=_RATIO, metavar="F", help="Keep at most this fraction of the original parameters."
)
@click.option(
    "--importance",
    type=click.Choice(["l1", "l2", "bn", "taylor"]),
    default="l1",
    show_default=True,
    help="How channels are ranked: weight L1/L2 norm, BatchNorm scale, or Taylor (gradients; needs --data).",
)
@click.option(
    "--global", "global_pruning", is_flag=True, help="Rank channels across the whole network instead of per layer."
)
@click.option(
    "--max-layer-ratio",
    type=_RATIO,
    default=0.8,
    show_default=True,
    help="No layer loses more than this fraction of its channels.",
)
@click.option(
    "--round-to",
    type=click.IntRange(1, 1024),
    default=None,
    help="Keep channel counts multiples of N [default: 8 - good for INT8/tensor cores - or smaller when "
    "the narrowest layer has under 32 channels: 4 for GoogLeNet, 1 for LeNet-5].",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Reach the target in N steps, fine-tuning after each.",
)
@click.option(
    "--finetune-epochs",
    type=EPOCHS,
    default=0,
    show_default=True,
    help="Training epochs after every step (needs --data).",
)
@click.option("--data", help="Training / evaluation data: 'digits' or a folder of class sub-folders.")
@click.option("--distill", is_flag=True, help="Fine-tune with knowledge distillation from the unpruned original.")
@click.option(
    "--augment",
    metavar="POLICY",
    help="Fine-tuning augmentation: none | light | default | FILE.yaml [default: default].",
)
@click.option(
    "--temperature", type=Finite(min=0, min_open=True), default=4.0, show_default=True, help="Distillation temperature."
)
@click.option(
    "--alpha",
    type=Finite(0, 1),
    default=0.9,
    show_default=True,
    help="Weight of the distillation term (1 - alpha goes to cross-entropy).",
)
@click.option("--lr", type=Finite(min=0, min_open=True), help="Fine-tuning learning rate [default: 0.01, SGD].")
@click.option("--batch-size", type=BATCH_SIZE, default=64, show_default=True)
@click.option(
    "--ignore",
    multiple=True,
    metavar="LAYER",
    help="Leave this layer (module path) unpruned; repeat. The classifier is always kept.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="Fine-tuning device: auto, cpu, cuda[:N].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the summary as JSON.")
def command(
    artifact,
    out,
    ratio,
    target_macs,
    target_params,
    importance,
    global_pruning,
    max_layer_ratio,
    round_to,
    steps,
    finetune_epochs,
    data,
    distill,
    augment,
    temperature,
    alpha,
    lr,
    batch_size,
    ignore,
    seed,
    device,
    progress,
    json_path,
):
    """Remove channels from a torch ARTIFACT with Torch-Pruning's dependency graph (residual adds,
    concatenations and the classifier stay consistent) and write a smaller torch artifact.

    \b
    Examples:
      edgecnn prune runs/resnet18 --out runs/resnet18-p50 --target-macs 0.5 \\
          --finetune-epochs 5 --data digits --distill
      edgecnn prune runs/resnet50 --out runs/resnet50-p --ratio 0.5 --global --importance taylor --data digits
    """
    from ..compress.prune import PruneOptions, prune

    options = PruneOptions(
        ratio=ratio,
        target_macs=target_macs,
        target_params=target_params,
        importance=importance,
        global_pruning=global_pruning,
        max_layer_ratio=max_layer_ratio,
        round_to=round_to,
        steps=steps,
        finetune_epochs=finetune_epochs,
        data=data,
        distill=distill,
        augment=augment,
        temperature=temperature,
        alpha=alpha,
        lr=lr,
        batch_size=batch_size,
        ignore=ignore,
        seed=seed,
        device=device,
    )
    art = prune(artifact, out, options, progress=progress)
    s = summary(art)
    print_summary(s)
    click.echo(f"wrote {art.path}")
    write_json(json_path, s)
