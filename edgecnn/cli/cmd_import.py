from __future__ import annotations

import click

from ._common import CLASSES, IMAGES, SIDE, input_options, print_table, write_json


@click.command("import")
@click.argument("model", metavar="MODEL.onnx", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output artifact directory.")
@click.option(
    "--classes", "classes", type=click.Path(dir_okay=False), help="Class names, one per line, in output order."
)
@click.option("--num-classes", type=CLASSES, default=None, help="Instead of --classes: N classes named 0..N-1.")
@input_options("the graph's", stats_note=" (required)")
@click.option(
    "--resize",
    type=SIDE,
    default=None,
    help="Resize the shorter image side to this before the center crop "
    "to the input size [default: the input's shorter side].",
)
@click.option("--name", default=None, help="Model name in the manifest [default: the file's name].")
@click.option(
    "--opset", type=click.IntRange(13, 30), default=None, help="Convert to this opset [default: 13 if older]."
)
@click.option(
    "--dynamic-batch/--static-batch",
    default=True,
    show_default=True,
    help="Make a fixed batch dimension dynamic (parity measured), or keep it.",
)
@click.option("--simplify/--no-simplify", default=False, show_default=True, help="Simplify with onnxslim.")
@click.option(
    "--parity-data", default=None, help="Real images the network is run and rewrites are proved on [default: digits]."
)
@click.option("--parity-images", type=IMAGES, default=16, show_default=True, help="How many parity images.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the import summary as JSON.")
def command(model, out, json_path, **options):
    """Import an ONNX image classifier made elsewhere (torch.onnx, tf2onnx, a model zoo) as an edgecnn ONNX
    artifact that quantize, eval, bench, check, deploy, doctor and sweep (precision only) take.

    It must have one float32 N x C x H x W input and one N x C output. The preprocessing is yours to give:
    x = (pixel / 255 - mean) / std after resizing the shorter side to --resize and a center crop to the
    input size. A fixed batch is made dynamic, an opset below 13 converted; each rewrite is compared with
    the original in ONNX Runtime on real images and refused if the logits differ. Nothing in the file runs
    except in ONNX Runtime.

    \b
    Example:
      edgecnn import squeezenet.onnx --classes classes.txt --input-size 224 \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --out runs/squeezenet
    """
    from ..onnx_import import ImportOptions, import_onnx

    opts = ImportOptions().merged({k: v for k, v in options.items() if v is not None}, where="edgecnn import")
    art = import_onnx(model, out, opts)
    info, parity, spec = art.manifest["onnx"], art.metrics.get("parity"), art.input
    src = art.manifest["architecture"]["source"]
    rows = [
        ["artifact", str(art.path)],
        ["model", f"{art.model} ({art.precision}, {art.num_classes} classes)"],
        ["source", f"{src['file']} (sha256 {src['sha256'][:12]}...)"],
        ["producer", info["producer"] or "-"],
        ["opset", str(info["opset"])],
        ["input", f"{info['input_name']} {' x '.join(map(str, info['input_shape']))}"],
        ["output", f"{info['output_name']} {' x '.join(map(str, info['output_shape']))}"],
        [
            "preprocess",
            f"resize {spec['resize']}, crop {spec['crop'][0]}x{spec['crop'][1]}, mean {spec['mean']}, "
            f"std {spec['std']}",
        ],
    ]
    rows += [["rewrite", r] for r in info["rewrites"]] or [["rewrite", "none: the file's bytes are kept"]]
    if info.get("batch_note"):
        rows.append(["note", info["batch_note"]])
    if parity:
        rows.append(["parity max abs", f"{parity['max_abs']:.3g} (of logits up to {parity['reference_max_abs']:.3g})"])
        rows.append(
            [
                "parity top-1 agreement",
                f"{100 * parity['top1_agreement']:.1f}% on {parity['n_images']} {parity['data']['source']} images",
            ]
        )
    print_table(rows, ["import", "value"], title=f"edgecnn import -> {art.path}")
    write_json(json_path, {"artifact": str(art.path), "id": art.id, "onnx": info, "parity": parity})
