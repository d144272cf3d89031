from __future__ import annotations

import click

from ._common import IMAGES, SEED, Finite, print_table, write_json


@click.command("calib")
@click.option(
    "--data",
    required=True,
    help="Labelled dataset to draw from: 'digits' or an image folder (DIR/<class>/* or DIR/train/<class>/*).",
)
@click.option(
    "--n",
    "n",
    type=IMAGES,
    default=300,
    show_default=True,
    help="Number of images (300+ recommended for INT8 calibration).",
)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Folder to write the images to.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the per-class selection.")
@click.option(
    "--val-split",
    type=Finite(0.0, 1.0, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Held-out fraction of a single-folder dataset (never used for calibration).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing calibration folder written by 'edgecnn calib'.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the summary as JSON.")
def command(data, n, out, seed, val_split, overwrite, json_path):
    """Build a class-balanced calibration folder of N images from a labelled dataset's training split
    (the held-out split stays unseen), for 'edgecnn quantize --calib DIR'.

    \b
    Examples:
      edgecnn calib --data digits --n 300 --out runs/calib-digits
      edgecnn calib --data /data/my-images --n 500 --out calib/
    """
    from ..data.calibration import build_calibration_folder
    from ..data.source import DataSource

    info = build_calibration_folder(DataSource.parse(data), n, out, seed=seed, val_split=val_split, overwrite=overwrite)
    rows = [
        ["folder", info["out"]],
        ["source", f"{info['source']} ({info['split']} split)"],
        ["images", f"{info['images']} of {info['requested']} requested"],
        ["classes", str(len(info["per_class"]))],
        ["per class", ", ".join(f"{k}: {v}" for k, v in sorted(info["per_class"].items()))],
    ]
    print_table(rows, ["calib", "value"], title=f"edgecnn calib -> {info['out']}")
    write_json(json_path, info)
