from __future__ import annotations

import click

from ._common import BATCH_SIZE, IMAGES, print_table, write_json

# torch's legacy (TorchScript) exporter covers opsets 7-20; below 11 the zoo's Pad/Gemm semantics differ.
MIN_OPSET, MAX_OPSET = 11, 20


def _size(path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@click.command("export")
@click.argument("artifact", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output artifact directory.")
@click.option(
    "--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=17, show_default=True, help="ONNX opset version."
)
@click.option(
    "--dynamic-batch/--static-batch",
    default=True,
    show_default=True,
    help="Batch dimension symbolic (any batch size) or fixed to --batch-size.",
)
@click.option(
    "--batch-size",
    type=BATCH_SIZE,
    default=1,
    show_default=True,
    help="Batch size of the example input; the fixed batch size with --static-batch.",
)
@click.option("--simplify/--no-simplify", default=True, show_default=True, help="Simplify the graph with onnxslim.")
@click.option(
    "--fold-bn/--no-fold-bn",
    default=True,
    show_default=True,
    help="Fold BatchNorm into the preceding convolution before export.",
)
@click.option(
    "--parity-data",
    default="digits",
    show_default=True,
    help="Real images to compare torch and ONNX Runtime on: 'digits', an image folder, or 'none'.",
)
@click.option(
    "--parity-images", type=IMAGES, default=16, show_default=True, help="How many images the parity check uses."
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the export summary as JSON.")
def command(artifact, out, opset, dynamic_batch, batch_size, simplify, fold_bn, parity_data, parity_images, json_path):
    """Export a torch ARTIFACT to an ONNX artifact (BatchNorm folded, simplified, checked) and record the
    parity torch vs ONNX Runtime on real images in its manifest.

    \b
    Example:
      edgecnn export runs/lenet5 --out runs/lenet5-onnx
      edgecnn export runs/resnet50 --out runs/resnet50-b8 --static-batch --batch-size 8
    """
    from ..export import export_onnx

    data = None if parity_data.lower() == "none" else parity_data
    art = export_onnx(
        artifact,
        out,
        opset=opset,
        dynamic_batch=dynamic_batch,
        batch_size=batch_size,
        simplify=simplify,
        fold_bn=fold_bn,
        parity_data=data,
        parity_images_n=parity_images,
    )
    info, parity = art.manifest["onnx"], art.manifest["metrics"].get("parity")
    shape = "x".join(str(d) for d in info["input_shape"])
    rows = [
        ["artifact", str(art.path)],
        ["model", f"{art.model} ({art.precision}, {art.num_classes} classes)"],
        ["file", f"{art.manifest['file']} ({_size(art.model_file)})"],
        ["opset", str(info["opset"])],
        ["input", f"{info['input_name']} {shape} ({'dynamic' if info['dynamic_batch'] else 'static'} batch)"],
        ["output", f"{info['output_name']} {'x'.join(str(d) for d in info['output_shape'])}"],
        ["BatchNorm folded", f"{info['bn_folded']} (left in graph: {info['bn_remaining']})"],
        [
            "simplified",
            f"{'yes' if info['simplified'] else 'no'} ({info['nodes_before_simplify']} -> {info['nodes']} nodes)",
        ],
        ["onnx.checker", "passed"],
    ]
    for rewrite in info.get("rewrites") or []:
        rows.append(["rewrite", rewrite])
    if parity:
        within = "" if "within_atol" not in parity else (" (<= 1e-4)" if parity["within_atol"] else " (> 1e-4!)")
        rows.append(["parity max abs", f"{parity['max_abs']:.3g}{within}"])
        rows.append(["parity max rel", f"{parity['max_rel']:.3g} of largest logit {parity['reference_max_abs']:.3g}"])
        rows.append(
            [
                "parity top-1 agreement",
                f"{100 * parity['top1_agreement']:.1f}% on {parity['n_images']} {parity['data']['source']} images",
            ]
        )
    else:
        rows.append(["parity", "not measured (--parity-data none)"])
    rows.append(["seconds", str(info["seconds"].get("total"))])
    print_table(rows, ["export", "value"], title=f"edgecnn export -> {art.path}")
    write_json(json_path, {"artifact": str(art.path), "id": art.id, "onnx": info, "parity": parity})
