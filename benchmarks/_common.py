"""Shared pieces of the benchmark scripts: random-weight artifacts, an OpenVINO runner that plugs into
``edgecnn.bench.measure_latency`` (interleaved timing, ratios, fingerprint), and result writing.

Every script compares its candidates *in one process run, interleaved* (edgecnn.bench), so the
ratios hold on a shared machine even when absolute milliseconds drift; the load average at the start
and end of the run is written next to the numbers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OPENVINO_HINT = "pip install -r benchmarks/requirements.txt   (or: pip install 'edgecnn[openvino]')"


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None


def random_artifact(
    name: str,
    out: Path,
    *,
    size: int = 224,
    num_classes: int = 1000,
    in_channels: int = 3,
    seed: int = 0,
    logit_scale: float | None = 10.0,
):
    """A torch artifact of zoo model ``name`` with torchvision's random initialisation (latency does not
    depend on the weights). With ``logit_scale`` the classifier is rescaled so that the largest logit
    on a few digits is that big, as a trained classifier's are: an untrained ResNet's logits reach
    ~1e2-1e5, where an absolute parity tolerance of 1e-4 would sit below float32 resolution."""
    import torch

    from edgecnn.data import load_dataset
    from edgecnn.models import create_model, get_spec, save_torch_artifact

    spec = get_spec(name)
    input_spec = spec.input_spec(in_channels=in_channels, input_size=size)
    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes, in_channels=in_channels, input_size=size).eval()
    if logit_scale:
        data = load_dataset("digits", input_spec, "val")
        x = torch.stack([data[i][0] for i in range(0, len(data), max(1, len(data) // 8))][:8])
        head = model.get_submodule(spec.classifier)
        with torch.no_grad():
            factor = logit_scale / float(model(x).abs().max())
            head.weight.mul_(factor)
            head.bias.mul_(factor)
    classes = [f"class{i}" for i in range(num_classes)]
    return save_torch_artifact(
        model,
        out,
        name=name,
        input_spec=input_spec,
        classes=classes,
        stage="random",
        params={"weights": "random", "seed": seed, "logit_scale": logit_scale},
    )


def require_openvino():
    try:
        import openvino
    except ImportError:
        sys.exit(f"OpenVINO is needed for this benchmark's peer column; install it with: {OPENVINO_HINT}")
    return openvino


class OpenVinoRunner:
    """Runner-like (``infer`` / ``description`` / ``label`` / ``input_spec``) OpenVINO CPU model for
    ``measure_latency``. The model is compiled once per batch size with that static shape (what
    ``benchmark_app -shape`` does; dynamic shapes are slower in OpenVINO's CPU plugin), FP32 inference
    precision forced (no silent bf16 on CPUs that have it), LATENCY hint, one stream, pinned threads."""

    format = "openvino"

    def __init__(
        self,
        model_path: str | Path,
        input_spec: dict,
        *,
        threads: int,
        label: str = "OpenVINO",
        precision: str = "fp32",
    ):
        ov = require_openvino()
        from edgecnn.runtime.openvino import shared_core

        self.core = shared_core()  # one Core per process: see shared_core
        self.model_path = str(model_path)
        self.input_spec, self.label, self.precision, self.threads = input_spec, label, precision, int(threads)
        self.config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if precision == "fp32":
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        self.version = ov.get_version().split("-")[0]
        self.description = (
            f"openvino {self.version} CPU (threads {self.threads}, LATENCY, 1 stream, "
            f"{'f32' if precision == 'fp32' else 'model'} precision, static shape per batch)"
        )
        self._requests: dict[int, object] = {}

    def _request(self, batch: int):
        req = self._requests.get(batch)
        if req is None:
            model = self.core.read_model(self.model_path)
            shape = [
                batch,
                int(self.input_spec["channels"]),
                int(self.input_spec["height"]),
                int(self.input_spec["width"]),
            ]
            model.reshape({model.inputs[0].any_name: shape})
            req = self.core.compile_model(model, "CPU", self.config).create_infer_request()
            self._requests[batch] = req
        return req

    def infer(self, batch: np.ndarray) -> np.ndarray:
        req = self._request(int(batch.shape[0]))
        req.infer({0: np.ascontiguousarray(batch, dtype=np.float32)}, share_inputs=True)
        return req.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self._requests.clear()


def torch_artifact(name: str, out: Path, *, size: int | None, weights: str = "random"):
    """(torch artifact, network) of zoo model ``name`` or of a torchvision classifier (``mobilenet_v2`` or
    ``torchvision:NAME``: random weights, ImageNet input spec), at input side ``size`` (None: the model's
    default). The class count is what the network outputs."""
    import torch
    import torchvision

    from edgecnn.models import build_model, get_spec, list_models, save_torch_artifact

    torch.manual_seed(0)
    tv = name.removeprefix("torchvision:")
    if name in list_models():
        ispec = get_spec(name).input_spec(input_size=size)
        net, _ = build_model(name, weights=weights, input_size=size, warn_random=False)
    else:  # ImageNet mean/std, RGB, resize + crop, like the zoo's torchvision families
        ispec = get_spec("resnet18").input_spec(input_size=size)
        net, name = torchvision.models.get_model(tv, weights=None, num_classes=1000), f"torchvision:{tv}"
    with torch.no_grad():
        n_cls = int(net.eval()(torch.zeros(1, ispec["channels"], ispec["height"], ispec["width"])).shape[1])
    src = save_torch_artifact(
        net,
        Path(out),
        name=name,
        input_spec=ispec,
        classes=[str(i) for i in range(n_cls)],
        stage="load",
        params={"weights": weights},
    )
    return src, net


def ort_quantize_static(fp32_onnx: str | Path, out: str | Path, batches) -> Path:
    """The ONNX Runtime peer route: ``onnxruntime.quantization.quantize_static`` on the same FP32 ONNX and
    calibration batches, in the layout ONNX Runtime recommends for x86 CPUs (QDQ, uint8 activations,
    int8 per-channel weights, MinMax calibration)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, name: str):
            self.items = iter([{name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

        def get_next(self):
            return next(self.items, None)

    import onnx

    name = onnx.load(str(fp32_onnx), load_external_data=False).graph.input[0].name
    quantize_static(
        str(fp32_onnx),
        str(out),
        Reader(name),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return Path(out)


def nncf_openvino_int8(fp32_onnx: str | Path, out_xml: str | Path, batches, subset: int) -> Path:
    """The OpenVINO peer route: NNCF's OpenVINO backend on the same FP32 ONNX and calibration batches
    (PERFORMANCE preset), saved as OpenVINO IR for the timing processes."""
    os.environ.setdefault("NNCF_CI", "1")
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32_onnx))
    ds = nncf.Dataset([np.ascontiguousarray(b, dtype=np.float32) for b in batches], lambda b: b)
    q = nncf.quantize(model, ds, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=subset)
    ov.save_model(q, str(out_xml))
    return Path(out_xml)


def ort_graph_profile(onnx_path: str | Path) -> dict:
    """What ONNX Runtime actually runs for an INT8 ONNX file: op counts of its optimized graph (QLinearConv
    against convolutions left in float, Q/DQ and layout transposes) and the activation quantizers with a
    per-channel scale in the file (ONNX Runtime's QLinearConv takes per-tensor activation scales only, so
    a convolution reading or writing one stays in float)."""
    import collections
    import tempfile

    import onnx
    from onnx import numpy_helper

    from edgecnn.runtime.onnxrt import session_options

    ort = __import__("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="edgecnn-ort-graph-") as tmp:
        so = session_options(threads=1, spinning=False)
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    model = onnx.load(str(onnx_path))
    inits = {i.name: i for i in model.graph.initializer}
    per_channel_act = sum(
        1
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
        and n.input[0] not in inits
        and n.input[1] in inits
        and numpy_helper.to_array(inits[n.input[1]]).size > 1
    )
    return {
        "qlinear_conv": ops["QLinearConv"],
        "float_conv": ops["Conv"] + ops["FusedConv"] + ops["NhwcConv"],
        "dequantize": ops["DequantizeLinear"],
        "quantize": ops["QuantizeLinear"],
        "transpose": ops["Transpose"],
        "per_channel_activation_quantizers": per_channel_act,
    }


def have_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def smoke_out(quick: bool, out: str | None, default: Path, tmp_name: str) -> Path:
    """Where a script writes: ``out``, else ``default`` - but a ``--quick`` smoke run never writes into
    benchmarks/results/ (its numbers are not results): by default it goes to a temporary folder, and an
    explicit ``--out`` under benchmarks/results/ is refused."""
    if not quick:
        return Path(out) if out else default
    if out is None:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="edgecnn-smoke-")) / tmp_name
    path = Path(out).resolve()
    if path.is_relative_to(RESULTS.resolve()):
        sys.exit(f"--quick numbers are a smoke test, not results: write them outside {RESULTS} (--out).")
    return path


def bench_setup(parse_args, argv) -> tuple:
    """The benchmarks' main() preamble: NNCF_CI set, options parsed, warnings off; (args, threads), threads
    being ``--threads`` or the physical cores."""
    import warnings

    from edgecnn.bench import physical_cores

    os.environ.setdefault("NNCF_CI", "1")
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    return args, args.threads or physical_cores()


def write_results(stem: str, data: dict, markdown: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """``out_dir/stem.json`` and ``out_dir/stem.md``, each written atomically."""
    from edgecnn.artifact import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_json(json_path, data)
    atomic_write_text(md_path, markdown)
    return json_path, md_path


def check_line(name: str, ok: bool, detail: str) -> str:
    return f"- {'PASS' if ok else 'FAIL'} - {name}: {detail}"


def dumps(data) -> str:
    return json.dumps(data, indent=2, default=str)
