from __future__ import annotations

import click

from ._common import DLA_CORE, print_table, write_json


@click.command("doctor")
@click.argument("artifact", type=click.Path())
@click.option("--device", required=True, help="Device profile (see 'edgecnn devices') or a profile YAML file.")
@click.option(
    "--tensorrt",
    "tensorrt",
    default=None,
    metavar="VERSION",
    help="TensorRT version to check against (default: the profile's default, e.g. 10.3 for JetPack 6.1).",
)
@click.option("--dla-core", type=DLA_CORE, default=None, help="Also list the layers that fall off this DLA core.")
@click.option("--fp16", "precision", flag_value="fp16", help="Check an FP16 build of an FP32 model.")
@click.option("--int8", "precision", flag_value="int8", help="Check an INT8 (Q/DQ) build.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
def command(artifact, device, tensorrt, dla_core, precision, json_path):
    """Pre-flight check of an ONNX artifact for a device, before building or flashing anything.

    Lists the ONNX ops the device's TensorRT version cannot import, Q/DQ nodes TensorRT rejects, precisions
    the device lacks and, with --dla-core, every layer that falls back from the DLA to the GPU. Exit 0 when
    clean, 1 with a table of problems.
    """
    from ..doctor import diagnose

    report = diagnose(artifact, device, tensorrt=tensorrt, dla_core=dla_core, precision=precision)
    where = f"TensorRT {report.tensorrt}" + (f" (JetPack {report.jetpack})" if report.jetpack else "")
    if report.tensorrt == "-":
        where = "ONNX Runtime"
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(report.ops.items()))
    click.echo(f"{report.artifact}: opset {report.opset}, {report.precision}, ops: {ops}")
    click.echo(f"checked for {report.device} with {where}" + (f", DLA core {dla_core}" if dla_core is not None else ""))
    if report.findings:
        print_table(
            [[f.severity, f.op, f.node, f.problem, f.fix] for f in report.findings],
            ["severity", "op", "node", "problem", "fix"],
            title=f"edgecnn doctor: {report.device}",
        )
    if report.sparsity:
        sp = report.sparsity
        print_table(
            [
                [r["node"], r["op"], r["in"], r["out"], "yes" if r["eligible"] else "no", r.get("reason", "")]
                for r in sp["layers"]
            ],
            ["layer", "op", "in", "out", "sparse-eligible", "why not"],
            title=f"2:4 sparsity: {sp['eligible']} of {len(sp['layers'])} 2:4 layer(s) eligible",
        )
        click.echo(f"sparse tensor cores: {sp['device']}")
    write_json(json_path, report.to_dict())
    click.echo(f"coverage: {report.coverage}")
    if report.ok:
        click.echo(f"OK: no problems found ({len(report.warnings)} warning(s)).")
        return
    click.echo(f"PROBLEMS: {len(report.errors)} error(s), {len(report.fallbacks)} DLA fallback(s).")
    raise click.exceptions.Exit(1)
