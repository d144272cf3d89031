from __future__ import annotations

import click

from ._common import (
    BATCH_SIZE,
    CLASSES,
    EPOCHS,
    SEED,
    WORKERS,
    Finite,
    fmt_count,
    fmt_pct,
    input_options,
    print_table,
    write_json,
)


@click.command("train")
@click.argument("model")
@click.option(
    "--data",
    required=True,
    help="'digits' (bundled, real), a folder (train/+val/ or class folders), or 'synthetic[:N]'.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Artifact directory to write.")
@click.option("--epochs", type=EPOCHS, default=None, help="Epochs [default: the recipe's, see below].")
@click.option(
    "--weights",
    default="random",
    show_default=True,
    help="Start from: random | imagenet | a state_dict file (.pth/.pt/.safetensors) | an edgecnn artifact.",
)
@click.option(
    "--num-classes", type=CLASSES, default=None, help="Check the data has this many classes (synthetic: make them)."
)
@input_options("recipe / model")
@click.option("--batch-size", type=BATCH_SIZE, default=None, help="Per process (torchrun: global = this x WORLD_SIZE).")
@click.option(
    "--optimizer", type=click.Choice(["sgd", "adamw"]), default=None, help="SGD with Nesterov momentum or AdamW."
)
@click.option("--lr", type=Finite(min=0, min_open=True), default=None, help="Peak learning rate (cosine schedule).")
@click.option("--weight-decay", type=Finite(min=0), default=None)
@click.option("--label-smoothing", type=Finite(0, 1, max_open=True), default=None)
@click.option(
    "--warmup-epochs", type=Finite(0, EPOCHS.max), default=None, help="Linear warm-up before the cosine decay."
)
@click.option("--seed", type=SEED, default=None)
@click.option(
    "--val-split",
    type=Finite(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Held-out fraction when DATA is one folder of class sub-folders.",
)
@click.option(
    "--skip-corrupt", is_flag=True, help="Skip unreadable images (counted) instead of failing on the first one."
)
@click.option(
    "--augment",
    metavar="POLICY",
    default=None,
    help="Random changes of training images: none | light | default | FILE (YAML) [default: default: random "
    "crop, flips only for color input].",
)
@click.option("--no-augment", is_flag=True, help="Same as --augment none.")
@click.option("--workers", type=WORKERS, default=None, help="DataLoader worker processes [default: 0].")
@click.option(
    "--resume",
    "resume",
    type=click.Path(dir_okay=False),
    default=None,
    help="Continue from OUT.ckpt.pt (written after every epoch).",
)
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N [default: auto].")
@click.option("--no-amp", is_flag=True, help="Full FP32 on CUDA (AMP is on by default there).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def command(
    model,
    data,
    out,
    epochs,
    weights,
    num_classes,
    in_channels,
    input_size,
    mean,
    std,
    batch_size,
    optimizer,
    lr,
    weight_decay,
    label_smoothing,
    warmup_epochs,
    seed,
    val_split,
    skip_corrupt,
    augment,
    no_augment,
    workers,
    resume,
    device,
    no_amp,
    json_path,
    quiet,
):
    """Train MODEL on DATA and write a torch artifact to OUT.

    MODEL is a zoo name ('edgecnn models'), torchvision:NAME, timm:NAME, path/to/file.py:factory or
    package.module:factory (a callable returning an nn.Module, given num_classes= when it takes it; its
    input from --input-size/--in-channels/--mean/--std or a YAML model card beside the file).

    Options left unset come from the model's recipe for the data: on the bundled digits the measured
    one (e.g. lenet5: 1x32x32, 30 epochs, SGD lr 0.1; resnet18: 1x32x32), elsewhere TrainConfig's
    defaults. For a folder, an unset input follows its images: 1 channel when all are grayscale (else 3),
    side = their median short side rounded up to 8, within [the model's minimum, the model's default]
    (28x28 gray digits -> 1x32x32); the choice is printed before training. Augmentation (--augment):
    'default' crops at random and flips only color input; 'light' and 'none' never flip. Without a
    terminal, progress is a plain line every EDGECNN_PROGRESS_EVERY seconds (default 30). Under torchrun
    (WORLD_SIZE > 1) it trains with DistributedDataParallel and only rank 0 writes.

    \b
    edgecnn train lenet5 --data digits --out runs/lenet5
    edgecnn train resnet18 --data ./flowers --weights imagenet --epochs 10 --out runs/r18
    edgecnn train torchvision:mobilenet_v2 --data digits --out runs/mnv2
    edgecnn train examples/custom_model.py:build --data digits --out runs/custom
    torchrun --nproc_per_node=2 -m edgecnn.cli train resnet18 --data digits --out runs/r18
    """
    from ..train import train

    overrides = _overrides(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        warmup_epochs=warmup_epochs,
        seed=seed,
        device=device,
        no_amp=no_amp,
        augment=augment,
        no_augment=no_augment,
        workers=workers,
    )
    art = train(
        model,
        data=data,
        out=out,
        weights=weights,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        mean=mean,
        std=std,
        overrides=overrides,
        val_split=val_split,
        skip_corrupt=skip_corrupt,
        progress=not quiet,
        resume=resume,
    )
    if art is None:  # another rank under torchrun: rank 0 reports
        return
    _report(art, model, data, weights, json_path)


def _overrides(*, no_amp, augment, no_augment, workers, **fields) -> dict:
    """The TrainConfig fields the command line sets (None = unset: the recipe's)."""
    from ..data.augment import AugmentPolicy

    return {
        **fields,
        "amp": False if no_amp else None,
        "augment": AugmentPolicy.from_flags(augment, no_augment),
        "num_workers": workers,
    }


def _report(art, model, data, weights, json_path) -> None:
    """Print the result table and write the JSON (rank 0)."""
    m, p = art.metrics, art.manifest["stage"]["params"]
    shape = "x".join(str(v) for v in art.input_shape)
    rows = [
        ["model", f"{art.model} ({shape}, {art.num_classes} classes)"],
        [
            "recipe",
            f"{p['recipe']}: {p['epochs']} epochs, {p['optimizer']} lr {p['lr']:g}, "
            f"batch {p['batch_size']}, label smoothing {p['label_smoothing']:g}",
        ],
        ["weights", weights],
        ["data", data + (f" (skipped {p['skipped_images']} unreadable)" if p.get("skipped_images") else "")],
        ["val top-1", fmt_pct(m.get("top1"))],
        ["val top-5", fmt_pct(m.get("top5"))],
        [
            "train time",
            f"{m.get('train_seconds', 0):.1f} s wall, {m.get('train_cpu_seconds', 0):.1f} s CPU"
            + (f", {p['world_size']} processes (rank 0 shown)" if p.get("world_size", 1) > 1 else ""),
        ],
        ["params / MACs", f"{m['params']:,} / {fmt_count(m['macs'])}"],
        ["artifact", str(art.path)],
        ["checkpoint", art.manifest.get("checkpoint") or "-"],
    ]
    print_table(rows, ["train", "result"], title=f"edgecnn train {model}")
    write_json(
        json_path,
        {
            "artifact": str(art.path),
            "id": art.id,
            "model": art.model,
            "input": list(art.input_shape),
            "classes": art.classes,
            "recipe": p["recipe"],
            "config": p,
            "metrics": m,
            "history": art.manifest.get("history"),
        },
    )
