from __future__ import annotations

import click

from ._common import CHANNELS, CLASSES, INPUT_SIZE, fmt_count, print_table, write_json


@click.command("models")
@click.option(
    "--input-size",
    type=INPUT_SIZE,
    default=None,
    help="Count MACs at this input (N or HxW); default: each model's own.",
)
@click.option("--in-channels", type=CHANNELS, default=None, help="Input channels (default: each model's own).")
@click.option(
    "--num-classes",
    type=CLASSES,
    default=None,
    help="Classifier size (default: 10 for lenet5, 1000 for the ImageNet networks).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
@click.argument("names", nargs=-1)
def command(input_size, in_channels, num_classes, json_path, names):
    """List the model zoo with parameters and MACs (optionally only NAMES: zoo names, torchvision:NAME,
    timm:NAME, FILE.py:factory or module:factory).

    MACs are multiply-accumulates of one image (convolutions and matrix products), counted on torch's
    meta device, so the whole table takes about a second.

    \b
    edgecnn models
    edgecnn models resnet18 vgg16 --input-size 32 --in-channels 1 --num-classes 10
    edgecnn models torchvision:mobilenet_v3_small timm:resnet18d examples/custom_model.py:build
    """
    from ..models import describe_models

    rows = describe_models(list(names) or None, input_size=input_size, in_channels=in_channels, num_classes=num_classes)
    print_table(
        [
            [
                r["name"],
                r["family"],
                "x".join(map(str, r["input"])),
                r["classes"],
                r["min_input"],
                f"{r['params']:,}",
                fmt_count(r["macs"]),
                r["paper"],
            ]
            for r in rows
        ],
        ["model", "family", "input", "classes", "min side", "params", "MACs", "reference"],
        title="edgecnn model zoo",
    )
    write_json(json_path, rows)
