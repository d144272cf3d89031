from __future__ import annotations

import click

from ._common import BATCH_SIZE, EPOCHS, SEED, Finite, fmt_pct, print_table, write_json


@click.command("distill")
@click.argument("student")
@click.option("--teacher", required=True, type=click.Path(), help="Torch artifact of the teacher.")
@click.option("--data", required=True, help="Training data: 'digits' or a folder of class sub-folders.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output artifact directory.")
@click.option("--epochs", type=click.IntRange(1, EPOCHS.max), default=10, show_default=True)
@click.option(
    "--temperature",
    type=Finite(min=0, min_open=True),
    default=4.0,
    show_default=True,
    help="Softmax temperature of both networks in the distillation term.",
)
@click.option(
    "--alpha",
    type=Finite(0, 1),
    default=0.9,
    show_default=True,
    help="Weight of the distillation term; 1 - alpha weighs cross-entropy on the labels.",
)
@click.option(
    "--feature",
    "features",
    multiple=True,
    metavar="S:T",
    help="Also match student layer S to teacher layer T (MSE; 1x1 conv adapter when channels differ). Repeat.",
)
@click.option(
    "--feature-weight", type=Finite(min=0), default=1.0, show_default=True, help="Weight of the feature-map loss."
)
@click.option(
    "--student-weights",
    default="random",
    show_default=True,
    help="Initial weights of a STUDENT given by name: random, imagenet, a state_dict file or an artifact.",
)
@click.option(
    "--lr",
    type=Finite(min=0, min_open=True),
    help="Learning rate [default: 0.05 from scratch, 0.01 for a student artifact; SGD].",
)
@click.option("--batch-size", type=BATCH_SIZE, default=64, show_default=True)
@click.option(
    "--augment",
    metavar="POLICY",
    help="Augmentation of the batches student and teacher both see: none | light | default | FILE.yaml "
    "[default: default; flips only color input]. A teacher far less accurate on them is warned about.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the summary as JSON.")
def command(
    student,
    teacher,
    data,
    out,
    epochs,
    temperature,
    alpha,
    features,
    feature_weight,
    student_weights,
    lr,
    batch_size,
    augment,
    seed,
    device,
    progress,
    json_path,
):
    """Train STUDENT (a model reference: zoo name, torchvision:NAME, timm:NAME, FILE.py:factory; or a torch
    artifact such as the pruned teacher) to mimic the TEACHER's softened outputs (Hinton KD), optionally
    matching feature maps too.

    \b
    Examples:
      edgecnn distill resnet18 --teacher runs/resnet50 --data digits --out runs/r18-kd --epochs 20
      edgecnn distill runs/resnet18-pruned --teacher runs/resnet18 --data digits --out runs/r18-p-kd \\
          --feature layer3:layer3
    """
    from ..compress.distill import DistillOptions, distill

    options = DistillOptions(
        data=data,
        epochs=epochs,
        temperature=temperature,
        alpha=alpha,
        feature_layers=features,
        feature_weight=feature_weight,
        student_weights=student_weights,
        lr=lr,
        batch_size=batch_size,
        augment=augment,
        seed=seed,
        device=device,
    )
    art = distill(student, teacher, out, options, progress=progress)
    rep = art.manifest["distillation"]
    rows = [["teacher", rep["teacher_model"], fmt_pct(rep["teacher_top1"])]]
    if rep.get("top1_before") is not None:
        rows.append(["student before", rep["student_model"], fmt_pct(rep["top1_before"])])
    rows.append(["student distilled", rep["student_model"], fmt_pct(rep["top1"])])
    print_table(
        rows,
        ["", "model", "top-1 (held out)"],
        title=f"distillation T={temperature} alpha={alpha}"
        + (f", {len(features)} feature pair(s)" if features else ""),
    )
    click.echo(f"wrote {art.path}")
    write_json(json_path, {"artifact": str(art.path), **rep, "history": art.manifest.get("history")})
