from __future__ import annotations

import click

from ._common import BATCH_SIZE, DLA_CORE, Finite, print_table


class BatchProfile(click.ParamType):
    """'MIN,OPT,MAX' (or one N for a static N,N,N) -> (min, opt, max)."""

    name = "MIN,OPT,MAX"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = [int(p) for p in str(value).split(",")]
            if len(parts) == 1:
                parts *= 3
            if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2] <= BATCH_SIZE.max:
                raise ValueError
            return tuple(parts)
        except ValueError:
            self.fail(
                f"{value!r} is not a batch profile; write MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX <= {BATCH_SIZE.max} "
                "(e.g. 1,8,32).",
                param,
                ctx,
            )


BATCH = BatchProfile()


def precision_option(f):
    f = click.option(
        "--int8", "precision", flag_value="int8", help="INT8 from the model's Q/DQ nodes (no calibrator)."
    )(f)
    f = click.option("--fp16", "precision", flag_value="fp16", help="Build FP16 (from an FP32 or FP16 ONNX).")(f)
    return f


@click.command("build")
@click.argument("artifact", type=click.Path())
@click.option("--device", required=True, help="Device profile this machine is (see 'edgecnn devices').")
@precision_option
@click.option("--batch", type=BATCH, default=None, help="Optimisation profile for a dynamic batch (default 1,1,16).")
@click.option("--dla-core", type=DLA_CORE, default=None, help="Run on this DLA core (Jetson Xavier/Orin).")
@click.option("--gpu-fallback", is_flag=True, help="Let layers the DLA cannot run fall back to the GPU.")
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False),
    default=None,
    help="Load and save TensorRT's timing cache here (faster rebuilds).",
)
@click.option(
    "--workspace",
    type=Finite(min=0, min_open=True),
    default=None,
    metavar="GB",
    help="Builder workspace limit (default: the profile's).",
)
@click.option("--no-preflight", is_flag=True, help="Skip the 'edgecnn doctor' check before building.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output engine artifact directory.")
def command(artifact, device, precision, batch, dla_core, gpu_fallback, timing_cache, workspace, no_preflight, out):
    """Build a TensorRT engine from an ONNX artifact, on the machine that will run it.

    Uses the TensorRT Python API (8.x, 10.x, 11.x): explicit quantization for Q/DQ models, FP16, dynamic-batch
    optimisation profiles, timing cache, DLA. The engine artifact records the TensorRT version and GPU; it
    loads nowhere else ('edgecnn eval' / 'bench' run it).
    """
    from ..runtime.tensorrt import build_engine

    art = build_engine(
        artifact,
        out,
        device=device,
        precision=precision,
        batch=batch,
        dla_core=dla_core,
        gpu_fallback=gpu_fallback,
        timing_cache=timing_cache,
        workspace_gb=workspace,
        preflight=not no_preflight,
    )
    meta = art.manifest["tensorrt"]
    print_table(
        [
            [
                art.path,
                art.precision,
                meta["version"],
                meta["gpu"],
                meta["compute_capability"],
                meta["options"]["batch"] or "static",
                meta["dla_core"] if meta["dla_core"] is not None else "-",
                f"{meta['plan_bytes'] / 1e6:.2f} MB",
            ]
        ],
        ["engine", "precision", "TensorRT", "GPU", "cc", "batch", "DLA", "size"],
        title="edgecnn build",
    )
