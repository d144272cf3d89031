from __future__ import annotations

import click

from ._common import DLA_CORE, Finite, print_table, write_json
from ._remote import ssh_click_options
from .cmd_build import BATCH


@click.command("deploy")
@click.argument("artifact", required=False, type=click.Path())
@click.option("--target", required=True, type=click.Choice(["jetson", "gpu", "cpu"]), help="Kind of device.")
@click.option(
    "--device",
    default=None,
    help="Device profile (default: jetson-orin-nano / x86-gpu / x86-cpu); see 'edgecnn devices'.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Bundle directory (default runs/deploy/<model>-<device>-<precision>).",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default=None,
    help="Precision on the device (default: the model's; fp16 may be asked for an FP32 model).",
)
@click.option(
    "--runtime",
    type=click.Choice(["tensorrt", "onnxruntime", "openvino", "auto"]),
    default=None,
    help="What run.py uses by default (default: the device's). --target cpu: openvino, or auto = measure ONNX "
    "Runtime and OpenVINO here (interleaved) and ship the faster, with the numbers in bundle.json.",
)
@click.option(
    "--tensorrt",
    "tensorrt",
    default=None,
    metavar="VERSION",
    help="TensorRT version the bundle is made for (default: the profile's; the script adapts on the device).",
)
@click.option("--batch", type=BATCH, default=None, help="TensorRT optimisation profile MIN,OPT,MAX (default 1,1,16).")
@click.option("--dla-core", type=DLA_CORE, default=None, help="Build for this DLA core.")
@click.option("--gpu-fallback", is_flag=True, help="Let layers the DLA cannot run fall back to the GPU.")
@click.option(
    "--workspace",
    type=Finite(min=0, min_open=True),
    default=None,
    metavar="GB",
    help="TensorRT builder workspace (default: the profile's).",
)
@click.option(
    "--golden",
    type=click.IntRange(min=1, max=10_000),
    default=32,
    show_default=True,
    help="Number of real held-out images in the golden set (per-image tolerance report on the device).",
)
@click.option(
    "--data",
    "golden_data",
    default=None,
    metavar="DIR|digits",
    help="Images of the golden set [default: the model's training data from its manifest, else the digits].",
)
@click.option(
    "--no-build", is_flag=True, help="--target gpu: do not build the engine here even if TensorRT is present."
)
@ssh_click_options(
    "Copy the bundle there over ssh, build and verify it.",
    "Folder on the host (default ~/edgecnn-bundles/<bundle>).",
    "Limit for the build and the verification on the host.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
def command(
    artifact,
    target,
    device,
    out,
    precision,
    runtime,
    tensorrt,
    batch,
    dla_core,
    gpu_fallback,
    workspace,
    golden,
    golden_data,
    no_build,
    host,
    port,
    identity,
    remote_dir,
    remote_python,
    ssh_option,
    remote_timeout,
    connect_timeout,
    json_path,
):
    """Write a deployment bundle for a Jetson, an x86 GPU or a CPU, and optionally ship it over ssh.

    With no ARTIFACT, deploys the newest 'edgecnn compress' output under ./runs/compress. The bundle holds
    the ONNX model, build_engine.sh (trtexec flags for the device's TensorRT), run.py, golden inputs and
    outputs, and verify.sh; every file's sha256 is in manifest.json. With --host the bundle is copied with
    scp, built and verified on the device, and the device's result is reported.
    """
    from ..deploy import deploy

    result = deploy(
        artifact,
        target=target,
        device=device,
        out=out,
        host=host,
        port=port,
        identity=identity,
        remote_dir=remote_dir,
        remote_python=remote_python,
        ssh_option=ssh_option,
        remote_timeout=remote_timeout,
        connect_timeout=connect_timeout,
        precision=precision,
        runtime=runtime,
        tensorrt=tensorrt,
        batch=batch,
        dla_core=dla_core,
        gpu_fallback=gpu_fallback,
        workspace_gb=workspace,
        golden=golden,
        golden_data=golden_data,
        build_now="never" if no_build else "auto",
    )
    _report(result, artifact, json_path)


def _report(result: dict, artifact, json_path) -> None:
    """Print the bundle (and the device's verification with --host); write the JSON when asked."""
    bundle = result["bundle"]
    info = bundle.manifest["stage"]["params"]
    if artifact is None:
        click.echo(f"deploying the {result['source']}")
    print_table(
        [
            [
                bundle.path,
                info["device"],
                info["runtime"],
                info["precision"],
                info["tensorrt"] or "-",
                len(bundle.manifest["files"]),
            ]
        ],
        ["bundle", "device", "runtime", "precision", "TensorRT", "files"],
        title="edgecnn deploy",
    )
    layout = bundle.manifest["bundle"].get("int8_layout")
    if layout:
        click.echo(layout["line"])
    for note in result["notes"]:
        click.echo(f"note: {note}")
    remote = result["remote"]
    if remote:
        v = remote["verify"]
        print_table(
            [
                [
                    remote["host"],
                    remote["remote_dir"],
                    v["runner"],
                    f"{v['max_abs_error']:.3g}",
                    f"{v['argmax_agree']}/{v['n']}",
                    "PASSED" if remote["passed"] else "FAILED",
                    remote["seconds"],
                ]
            ],
            ["host", "folder", "runner", "max |err|", "top-1 agree", "verify", "seconds"],
            title="on the device",
        )
    else:
        steps = "./build_engine.sh && ./verify.sh" if info["runtime"] == "tensorrt" else "./verify.sh"
        click.echo(f"next: copy {bundle.path} to the device and run {steps} there (see its README.md)")
    if json_path:
        write_json(
            json_path,
            {
                "bundle": str(bundle.path),
                "source": result["source"],
                "notes": result["notes"],
                "params": info,
                "files": bundle.manifest["files"],
                "remote": remote,
            },
        )
