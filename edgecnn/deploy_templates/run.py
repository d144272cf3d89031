#!/usr/bin/env python3
"""Run and verify an edgecnn deployment bundle on the device.

    python3 run.py IMAGE_OR_FOLDER [...]      classify images (top-k per image)
    python3 run.py --verify                   check file hashes, then outputs against the golden outputs
    python3 run.py --check-files              check file hashes only
    python3 run.py --bench --batch-sizes 1,8  check file hashes, then time the model (p50/p90/p99, images/s)
    python3 run.py --serve --inputs X.npy ...  what edgecnn eval/bench/check --host run on the device

The model runs with TensorRT (model.engine, built by ./build_engine.sh) or with ONNX Runtime
(model.onnx; --runtime onnxruntime). Preprocessing, classes, tolerances and the golden data are read
from bundle.json; every file's sha256 is in manifest.json. Needs only numpy, plus tensorrt or
onnxruntime, plus Pillow for images. GPU buffers for TensorRT go through libcudart via ctypes, so
neither pycuda nor torch is required. Written for Python 3.6+ (JetPack 4.6).

Exit status: 0 success, 1 failure (message on stderr), 2 bad usage.

Nothing in the bundle's folder is ever imported: before its first import this script takes its own
folder off sys.path (Python puts a script's folder first there), so a stray numpy.py or json.py copied
into the bundle cannot stand in for the real module; and the file check refuses any file the manifest
does not list that Python could import (.py, .so, .pth ...) and names every other unlisted file.
"""

import sys


def _drop_own_folder():
    """Remove this script's folder from sys.path, using only modules built into the interpreter (posix /
    nt cannot be shadowed by a file): a folder entry is the same directory when its stat is."""
    try:
        import posix as fs
    except ImportError:  # Windows
        import nt as fs
    script = globals().get("__file__") or ""
    cut = max(script.rfind("/"), script.rfind("\\"))
    try:
        own = fs.stat(script[:cut] if cut > 0 else ("/" if cut == 0 else "."))
    except (OSError, ValueError):
        return
    keep = []
    for entry in sys.path:
        try:
            st = fs.stat(entry or ".")
        except (OSError, TypeError, ValueError):
            keep.append(entry)
            continue
        if (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino):
            keep.append(entry)
    sys.path[:] = keep


if __name__ == "__main__":
    _drop_own_folder()

import argparse  # noqa: E402 - only once this folder is off sys.path
import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import glob  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":  # also through a symlinked run.py: the real file's folder
    _own = {os.path.realpath(HERE), os.path.dirname(os.path.realpath(__file__))}
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") not in _own]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: what build_engine.sh and the device write into the bundle (not edgecnn's files, so not in the manifest)
DEVICE_OUTPUTS = ("model.engine", "engine.json", "build_engine.log", "timing.cache", "model_fp16.onnx")
#: files Python could import (or run at start-up) if the folder were on its path
IMPORTABLE = (".py", ".pyc", ".pyo", ".pyw", ".so", ".pyd", ".pth")


class BundleError(Exception):
    """Something the user must fix; printed as one line."""


class UsageError(BundleError):
    """A bad or conflicting option; printed as one line, exit 2."""


class MissingRuntime(BundleError):
    """The runtime asked for is not installed here."""


def path_in(*parts):
    return os.path.join(HERE, *parts)


def load_json(name):
    try:
        with open(path_in(name), "r") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise BundleError("cannot read %s (%s); copy the whole bundle folder again" % (name, exc))


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def unlisted_files(listed):
    """Files (and linked folders) in the bundle that manifest.json does not list, except what the device
    writes there (DEVICE_OUTPUTS) and Python's caches of listed scripts."""
    stems = set(os.path.splitext(os.path.basename(rel))[0] for rel in listed if rel.endswith(".py"))
    found = []
    for root, dirs, names in os.walk(HERE):
        rel_root = os.path.relpath(root, HERE).replace(os.sep, "/")
        prefix = "" if rel_root == "." else rel_root + "/"
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                found.append(prefix + d + "/")
        for name in names:
            rel = prefix + name
            if rel in listed or rel == "manifest.json" or (not prefix and name in DEVICE_OUTPUTS):
                continue
            if rel_root.endswith("__pycache__") and name.endswith(".pyc") and name.split(".")[0] in stems:
                continue
            found.append(rel)
    return sorted(found)


def importable(rel):
    if rel.endswith("/"):  # a linked folder: a package if it has an __init__.py
        return os.path.isfile(path_in(rel, "__init__.py"))
    return rel.lower().endswith(IMPORTABLE) or ".so." in os.path.basename(rel)


def check_files():
    """Every file listed in manifest.json exists and has its recorded sha256; a file it does not list
    that Python could import is refused, any other is named in a warning."""
    manifest = load_json("manifest.json")
    files = manifest.get("files") or {}
    if not files or not isinstance(files, dict):
        raise BundleError("manifest.json lists no files; this is not an edgecnn bundle")
    extra = unlisted_files(files)
    risky = [rel for rel in extra if importable(rel)]
    if risky:
        raise BundleError(
            "%s %s in the bundle but not listed in manifest.json; Python could import it in place of a real "
            "module - delete it, or copy the bundle again" % (", ".join(risky), "is" if len(risky) == 1 else "are")
        )
    if extra:
        more = " and %d more" % (len(extra) - 10) if len(extra) > 10 else ""
        sys.stderr.write(
            "warning: %s%s %s in the bundle but not listed in manifest.json (not checked)\n"
            % (", ".join(extra[:10]), more, "is" if len(extra) == 1 else "are")
        )
    for rel, digest in sorted(files.items()):
        parts = rel.split("/")
        if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            raise BundleError("manifest.json lists %r, a path outside the bundle; copy the bundle again" % rel)
        full = path_in(*parts)
        if not os.path.isfile(full):
            raise BundleError("%s is listed in manifest.json but missing; copy the whole bundle again" % rel)
        if sha256_file(full) != digest:
            raise BundleError(
                "%s does not match its sha256 in manifest.json (modified or corrupted in transfer); "
                "copy the bundle again or re-run 'edgecnn deploy'" % rel
            )
    return len(files)


# -- preprocessing (same steps as edgecnn's eval transform) -----------------------------------------
def preprocess(path, spec):
    """Image file -> float32 (C, H, W): resize the shorter side (Pillow bilinear on 8-bit), floor center crop,
    /255, (x - mean) / std in float32 - input.preprocess in bundle.json states each step."""
    import numpy as np

    try:
        from PIL import Image
    except ImportError:
        raise BundleError("Pillow is needed to read images: pip3 install pillow (or sudo apt install python3-pil)")
    channels = int(spec["channels"])
    try:
        img = Image.open(path)
        img.load()
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise BundleError("cannot read image %s (%s)" % (path, str(exc).splitlines()[0][:120]))
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    # the contract in bundle.json's input.preprocess: integer (floor) sizes and offsets, Pillow on 8-bit
    crop_h, crop_w = [int(v) for v in (spec.get("crop") or (spec["height"], spec["width"]))]
    size = int(spec.get("resize") or min(crop_h, crop_w))
    w, h = img.size
    if w <= h:
        new_w, new_h = size, h * size // w
    else:
        new_w, new_h = w * size // h, size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top = (new_h - crop_h) // 2
    left = (new_w - crop_w) // 2
    img = img.crop((left, top, left + crop_w, top + crop_h))
    x = np.asarray(img, dtype=np.float32) / np.float32(255)
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(-1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


# -- ONNX Runtime --------------------------------------------------------------------------------
class OrtModel(object):
    def __init__(self, bundle, threads=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError("onnxruntime is not installed: pip3 install onnxruntime (or onnxruntime-gpu)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if bundle["target"] != "cpu" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(path_in(bundle["onnx"]), sess_options=opts, providers=providers)
        self.input = self.session.get_inputs()[0].name
        self.dtype = "float16" if "float16" in self.session.get_inputs()[0].type else "float32"
        self.name = "onnxruntime %s (%s)" % (ort.__version__, self.session.get_providers()[0])
        self.runtime, self.version = "onnxruntime", ort.__version__

    def infer(self, x):
        return self.session.run(None, {self.input: x.astype(self.dtype)})[0].astype("float32")

    def batch_range(self, fallback):
        """(smallest, largest) batch the model takes: its ONNX batch dimension if fixed, else any."""
        dim = self.session.get_inputs()[0].shape[0]
        if isinstance(dim, int) and dim > 0:
            return dim, dim, "the ONNX model's batch dimension is fixed at %d" % dim
        return 1, BENCH_MAX_BATCH, "dynamic batch"

    def bench_calls(self, x):
        """([(what, call)], done) to time for a batch ``x``; the input is converted once, outside the timing."""
        feed = {self.input: x.astype(self.dtype)}
        return [("latency_ms", lambda: self.session.run(None, feed))], lambda: None

    def threads(self):
        n = self.session.get_session_options().intra_op_num_threads
        return {"intra_op_num_threads": n or "onnxruntime default (0)"}

    def gpu_name(self):
        return None


# -- OpenVINO (CPU bundles) ----------------------------------------------------------------------
class OvModel(object):
    """OpenVINO on the CPU: the bundle's ONNX compiled once per batch size (static shape), with the settings of
    bundle.json "openvino" (f32 pinned: a BF16-capable CPU would otherwise run FP32 models in bf16)."""

    def __init__(self, bundle, threads=None):
        try:
            import openvino as ov
        except ImportError:
            raise MissingRuntime("openvino is not installed (pip3 install openvino)")
        self.ov, self.core = ov, ov.Core()
        self.config = dict(bundle.get("openvino") or {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        self.config.setdefault("INFERENCE_PRECISION_HINT", "f32")
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.model = self.core.read_model(path_in(bundle["onnx"]))
        self.fixed = self.model.inputs[0].get_partial_shape()[0]
        self.fixed = self.fixed.get_length() if self.fixed.is_static else None
        self.compiled, self.requests = {}, {}
        self._request(self.fixed or 1)
        self.version = ov.get_version().split("-")[0]
        first = self.compiled[self.fixed or 1]
        self.settings = dict((k, str(first.get_property(k))) for k in ("INFERENCE_NUM_THREADS", "NUM_STREAMS"))
        self.name = "openvino %s CPU (%s, %s threads, %s stream(s), f32)" % (
            self.version,
            self.config["PERFORMANCE_HINT"],
            self.settings["INFERENCE_NUM_THREADS"],
            self.settings["NUM_STREAMS"],
        )
        self.runtime = "openvino"

    def _request(self, n):
        req = self.requests.get(n)
        if req is None:
            model = self.model.clone()
            if self.fixed is None:
                shape = [d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape()]
                model.reshape({model.inputs[0].any_name: [n] + shape[1:]})
            self.compiled[n] = self.core.compile_model(model, "CPU", self.config)
            req = self.requests[n] = self.compiled[n].create_infer_request()
        return req

    def infer(self, x):
        import numpy as np

        req = self._request(int(x.shape[0]))
        req.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return req.get_output_tensor(0).data.copy().astype("float32")

    def batch_range(self, fallback):
        if self.fixed:
            return self.fixed, self.fixed, "the ONNX model's batch dimension is fixed at %d" % self.fixed
        return 1, BENCH_MAX_BATCH, "dynamic batch (compiled once per batch size)"

    def bench_calls(self, x):
        import numpy as np

        req, feed = self._request(int(x.shape[0])), {0: np.ascontiguousarray(x, dtype=np.float32)}
        return [("latency_ms", lambda: req.infer(feed))], lambda: None

    def threads(self):
        return {"INFERENCE_NUM_THREADS": self.settings["INFERENCE_NUM_THREADS"]}

    def gpu_name(self):
        return None


# -- TensorRT -------------------------------------------------------------------------------------
class CudaRT(object):
    """The few CUDA runtime calls TensorRT inference needs, through ctypes (no pycuda / torch)."""

    H2D, D2H = 1, 2

    def __init__(self):
        self.lib = None
        names = [
            ctypes.util.find_library("cudart"),
            "libcudart.so",
            "libcudart.so.13",
            "libcudart.so.12",
            "libcudart.so.11.0",
            "libcudart.so.10.2",
        ]
        for pattern in (
            "/usr/local/cuda/lib64/libcudart.so*",
            "/usr/local/cuda/targets/*/lib/libcudart.so*",
            "/usr/lib/*-linux-gnu/libcudart.so*",
        ):
            names += sorted(glob.glob(pattern))
        for site in sys.path:
            names += sorted(glob.glob(os.path.join(site, "nvidia", "cuda_runtime", "lib", "libcudart.so*")))
        for name in names:
            if not name:
                continue
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if self.lib is None:
            raise BundleError(
                "libcudart (the CUDA runtime) was not found; on Jetson install JetPack's CUDA "
                "(sudo apt install nvidia-jetpack), elsewhere add /usr/local/cuda/lib64 to LD_LIBRARY_PATH"
            )
        lib = self.lib
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        for fn in ("cudaMalloc", "cudaFree", "cudaMemcpy", "cudaStreamCreate", "cudaStreamSynchronize"):
            getattr(lib, fn).restype = ctypes.c_int

    def check(self, code, what):
        if code != 0:
            msg = self.lib.cudaGetErrorString(code)
            raise BundleError("CUDA %s failed: %s" % (what, msg.decode() if msg else code))

    def malloc(self, nbytes):
        ptr = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(ptr), max(int(nbytes), 1)), "cudaMalloc")
        return ptr

    def free(self, ptr):
        self.lib.cudaFree(ptr)

    def to_device(self, ptr, array):
        self.check(self.lib.cudaMemcpy(ptr, array.ctypes.data, array.nbytes, self.H2D), "copy to GPU")

    def to_host(self, array, ptr):
        self.check(self.lib.cudaMemcpy(array.ctypes.data, ptr, array.nbytes, self.D2H), "copy from GPU")

    def stream(self):
        s = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return s

    def sync(self, stream):
        self.check(self.lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def device_name(self):
        """The current GPU's name (the first field of cudaDeviceProp), or None if the runtime will not say."""
        dev = ctypes.c_int()
        self.lib.cudaGetDevice.argtypes = [ctypes.POINTER(ctypes.c_int)]
        if self.lib.cudaGetDevice(ctypes.byref(dev)) != 0:
            return None
        fn = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or self.lib.cudaGetDeviceProperties
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
        buf = ctypes.create_string_buffer(1 << 14)  # larger than cudaDeviceProp in any CUDA version
        if fn(buf, dev.value) != 0:
            return None
        return buf.value.decode("utf-8", "replace") or None


def engine_path(bundle):
    """A device-built model.engine wins over an engine edgecnn built on the host (prebuilt/)."""
    for rel in (bundle["engine"], "prebuilt/" + bundle["engine"]):
        if os.path.isfile(path_in(*rel.split("/"))):
            return rel
    return None


class TrtModel(object):
    def __init__(self, bundle):
        import numpy as np

        try:
            import tensorrt as trt
        except ImportError:
            raise BundleError(
                "the tensorrt Python package is not importable; on Jetson: sudo apt install "
                "python3-libnvinfer (JetPack), elsewhere pip install tensorrt - or use --runtime onnxruntime"
            )
        rel = engine_path(bundle)
        if rel is None:
            raise BundleError(
                "no TensorRT engine yet: run ./build_engine.sh first "
                "(or check the ONNX model with: python3 run.py --verify --runtime onnxruntime)"
            )
        info_rel = os.path.join(os.path.dirname(rel), "engine.json")
        built = None
        if os.path.isfile(path_in(info_rel)):
            with open(path_in(info_rel)) as fh:
                built = json.load(fh).get("tensorrt")
        if built and not same_version(built, trt.__version__):
            raise BundleError(
                "%s was built with TensorRT %s but this Python has TensorRT %s; engines only load in the "
                "TensorRT version that built them - run ./build_engine.sh again" % (rel, built, trt.__version__)
            )
        self.np, self.trt, self.cuda = np, trt, CudaRT()
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        dla = bundle.get("dla_core")
        if dla is not None:
            self.runtime.DLA_core = int(dla)
        with open(path_in(*rel.split("/")), "rb") as fh:
            self.engine = self.runtime.deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise BundleError(
                "TensorRT %s could not load %s (built by another TensorRT version or GPU?); run "
                "./build_engine.sh again" % (trt.__version__, rel)
            )
        self.context = self.engine.create_execution_context()
        self.tensor_api = hasattr(self.engine, "num_io_tensors")  # TensorRT 8.5+
        self.stream = self.cuda.stream()
        self.name = "tensorrt %s (%s)" % (trt.__version__, rel)
        self.runtime, self.version = "tensorrt", trt.__version__
        eng = self.engine
        if self.tensor_api:
            names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
            self.inputs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.outputs = [n for n in names if n not in self.inputs]
        else:
            names = [eng.get_binding_name(i) for i in range(eng.num_bindings)]
            self.inputs = [n for i, n in enumerate(names) if eng.binding_is_input(i)]
            self.outputs = [n for i, n in enumerate(names) if not eng.binding_is_input(i)]

    def _dtype(self, name):
        eng = self.engine
        dt = eng.get_tensor_dtype(name) if self.tensor_api else eng.get_binding_dtype(eng.get_binding_index(name))
        return self.np.dtype(self.trt.nptype(dt))

    def infer(self, x):
        binding = TrtBinding(self, x)
        try:
            binding.copy_in()
            binding.compute()
            binding.copy_out()
            return binding.outs[0][0].astype("float32")
        finally:
            binding.free()

    def batch_range(self, fallback):
        """(smallest, largest) batch the engine takes: its fixed batch, else optimisation profile 0's range."""
        eng, name = self.engine, self.inputs[0]
        try:
            if self.tensor_api:
                dims = eng.get_tensor_shape(name)
                profile = lambda: eng.get_tensor_profile_shape(name, 0)  # noqa: E731
            else:
                idx = eng.get_binding_index(name)
                dims = eng.get_binding_shape(idx)
                profile = lambda: eng.get_profile_shape(0, idx)  # noqa: E731
            if int(dims[0]) > 0:
                return int(dims[0]), int(dims[0]), "the engine's batch dimension is fixed at %d" % int(dims[0])
            lo, _opt, hi = profile()
            return int(lo[0]), int(hi[0]), "the engine's optimisation profile 0"
        except Exception:  # noqa: BLE001 - an engine without a readable profile: bundle.json's max_batch
            return 1, int(fallback), "bundle.json max_batch %d" % int(fallback)

    def bench_calls(self, x):
        """([(what, call)], done): latency_ms is host input -> device, inference, device -> host outputs (what
        an application sees); compute_ms is enqueue + stream sync alone, the buffers already on the GPU."""
        binding = TrtBinding(self, x)  # binds the context to this batch's buffers until freed

        def end_to_end():
            binding.copy_in()
            binding.compute()
            binding.copy_out()

        return [("latency_ms", end_to_end), ("compute_ms", binding.compute)], binding.free

    def threads(self):
        return {"note": "TensorRT runs on the GPU; host threads do not apply"}

    def gpu_name(self):
        return self.cuda.device_name()


class TrtBinding(object):
    """Device buffers for one batch shape, allocated and bound to the execution context once."""

    def __init__(self, model, x):
        np, eng, ctx = model.np, model.engine, model.context
        self.model, self.ptrs, self.outs = model, [], []
        name = model.inputs[0]
        self.x = np.ascontiguousarray(x.astype(model._dtype(name)))
        try:
            self.dx = self._alloc(self.x.nbytes)
            if model.tensor_api:
                ctx.set_input_shape(name, tuple(self.x.shape))
                ctx.set_tensor_address(name, self.dx.value)
            else:
                self.bindings = [0] * eng.num_bindings
                idx = eng.get_binding_index(name)
                ctx.set_binding_shape(idx, tuple(self.x.shape))
                self.bindings[idx] = self.dx.value
            for out in model.outputs:
                j = None if model.tensor_api else eng.get_binding_index(out)
                shape = ctx.get_tensor_shape(out) if model.tensor_api else ctx.get_binding_shape(j)
                arr = np.empty(tuple(shape), dtype=model._dtype(out))
                d = self._alloc(arr.nbytes)
                if model.tensor_api:
                    ctx.set_tensor_address(out, d.value)
                else:
                    self.bindings[j] = d.value
                self.outs.append((arr, d))
        except BaseException:
            self.free()
            raise

    def _alloc(self, nbytes):
        ptr = self.model.cuda.malloc(nbytes)
        self.ptrs.append(ptr)
        return ptr

    def copy_in(self):
        self.model.cuda.to_device(self.dx, self.x)

    def compute(self):
        m = self.model
        if m.tensor_api:
            ok = m.context.execute_async_v3(m.stream.value or 0)
            m.cuda.sync(m.stream)
        else:
            ok = m.context.execute_v2(self.bindings)
        if not ok:
            raise BundleError("TensorRT inference failed (see the TensorRT messages above)")

    def copy_out(self):
        for arr, d in self.outs:
            self.model.cuda.to_host(arr, d)

    def free(self):
        for p in self.ptrs:
            self.model.cuda.free(p)
        self.ptrs = []


def same_version(a, b):
    """TensorRT plans load only in the version that built them: compare the components both strings have."""
    pa, pb = [p for p in str(a).split(".") if p.isdigit()], [p for p in str(b).split(".") if p.isdigit()]
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def open_model(bundle, runtime, threads=None):
    runtime = runtime or bundle["runtime"]
    if runtime == "tensorrt":
        return TrtModel(bundle)
    if runtime == "onnxruntime":
        return OrtModel(bundle, threads=threads)
    if runtime == "openvino":
        try:
            return OvModel(bundle, threads=threads)
        except MissingRuntime as exc:
            sys.stderr.write("note: %s; running with onnxruntime instead\n" % exc)
            return OrtModel(bundle, threads=threads)
    raise BundleError("unknown runtime %r; use tensorrt, onnxruntime or openvino" % runtime)


def run_batches(model, x, max_batch):
    import numpy as np

    outs = [model.infer(x[i : i + max_batch]) for i in range(0, len(x), max_batch)]
    return np.concatenate(outs, axis=0)


def softmax(z):
    import numpy as np

    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- verification ---------------------------------------------------------------------------------
def compare(actual, expected, tol):
    """Element-wise |a - e| <= atol + rtol * |e|, and top-1 agreement wherever the golden top-1 is unambiguous."""
    import numpy as np

    if actual.shape != expected.shape:
        return {
            "passed": False,
            "reason": "output shape %s, golden shape %s" % (actual.shape, expected.shape),
            "max_abs_error": float("nan"),
            "atol": tol["atol"],
            "rtol": tol["rtol"],
            "argmax_agree": 0,
            "argmax_checked": 0,
            "n": int(len(expected)),
            "within_tolerance": False,
        }
    err = np.abs(actual - expected)
    bound = tol["atol"] + tol["rtol"] * np.abs(expected)
    within = bool((err <= bound).all())
    top2 = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else np.concatenate([expected, expected], 1)
    margin = top2[:, 1] - top2[:, 0]
    clear = margin > 2 * (tol["atol"] + tol["rtol"] * np.abs(top2[:, 1]))
    agree = actual.argmax(1) == expected.argmax(1)
    needed = float(np.max(err - tol["rtol"] * np.abs(expected))) if err.size else 0.0
    result = {
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "atol": tol["atol"],
        "rtol": tol["rtol"],
        "within_tolerance": within,
        "argmax_agree": int(agree.sum()),
        "argmax_checked": int(clear.sum()),
        "n": int(len(expected)),
        "argmax_agree_all": int(agree.sum()) == len(agree),
        "atol_that_would_pass": max(needed, 0.0),
        "per_image": [
            {
                "index": i,
                "max_abs_error": float(err[i].max()),
                "within_tolerance": bool((err[i] <= bound[i]).all()),
                "top1": int(actual[i].argmax()),
                "golden_top1": int(expected[i].argmax()),
                "checked": bool(clear[i]),
                "agree": bool(agree[i]),
            }
            for i in range(len(expected))
        ],
    }
    result["passed"] = within and bool(agree[clear].all())
    if not result["passed"]:
        if not within:
            result["reason"] = "max |error| %.3g exceeds atol %.3g + rtol %.3g * |golden| (atol %.3g would pass)" % (
                result["max_abs_error"],
                tol["atol"],
                tol["rtol"],
                result["atol_that_would_pass"],
            )
        else:
            result["reason"] = "top-1 differs from the golden top-1 on an unambiguous input"
    return result


def verify(runtime=None, threads=None):
    n_files = check_files()
    import numpy as np

    bundle = load_json("bundle.json")
    runtime = runtime or bundle["runtime"]
    golden = bundle["golden"]
    inputs = np.load(path_in(*golden["inputs"].split("/")), allow_pickle=False)
    expected = np.load(path_in(*golden["expected"].split("/")), allow_pickle=False)
    report = {
        "bundle": bundle["name"],
        "device": bundle["device"]["name"],
        "runtime": runtime,
        "files_checked": n_files,
    }
    pre = None
    images = golden.get("images") or []
    if images:
        try:
            again = np.stack([preprocess(path_in(*p.split("/")), bundle["input"]) for p in images])
            pre = float(np.abs(again - inputs).max())
        except BundleError as exc:
            report["preprocess_note"] = str(exc)
    report["preprocess_max_abs_diff"] = pre
    model = open_model(bundle, runtime, threads)
    report["runner"] = model.name
    report["runtime"] = model.runtime  # the one that ran (openvino falls back to onnxruntime when missing)
    t0 = time.time()
    actual = run_batches(model, inputs, int(bundle["max_batch"]))
    report["seconds"] = round(time.time() - t0, 4)
    tol = bundle["tolerance"][model.runtime]
    report.update(compare(actual, expected, tol))
    for row in report.get("per_image", []):
        row["image"] = images[row["index"]] if row["index"] < len(images) else None
    report["tolerance_basis"] = tol.get("basis", "")
    one_level = 1.01 / 255.0 / float(min(bundle["input"]["std"]))  # one 8-bit grey level, normalised
    if pre is not None and pre > one_level:
        report["passed"] = False
        report["reason"] = (
            "this device's image preprocessing differs from edgecnn's by %.3g (more than one grey "
            "level; Pillow version?); outputs on real images would drift" % pre
        )
    return report


def print_verify(report):
    print("bundle      %s  (%s)" % (report["bundle"], report["device"]))
    print("files       %d checked against manifest.json sha256: ok" % report["files_checked"])
    if report.get("preprocess_max_abs_diff") is not None:
        print("preprocess  golden images re-preprocessed here: max |diff| %.2g" % report["preprocess_max_abs_diff"])
    print("runner      %s, %d golden inputs in %.3f s" % (report["runner"], report["n"], report["seconds"]))
    print(
        "outputs     max |err| %.3g (atol %.3g + rtol %.3g*|golden|), top-1 agree %d/%d (%d unambiguous checked)"
        % (
            report["max_abs_error"],
            report["atol"],
            report["rtol"],
            report["argmax_agree"],
            report["n"],
            report["argmax_checked"],
        )
    )
    for row in report.get("per_image", []):
        if not row["within_tolerance"] or (row["checked"] and not row["agree"]):
            print(
                "image       %s: max |err| %.3g, top-1 %d (golden %d%s)"
                % (row["image"], row["max_abs_error"], row["top1"], row["golden_top1"], ", checked" * row["checked"])
            )
    if report["passed"]:
        print("VERIFY PASSED")
    else:
        print("VERIFY FAILED: %s" % report.get("reason", "outputs differ"))


# -- benchmark ------------------------------------------------------------------------------------
BENCH_MAX_BATCH = 4096
BENCH_MAX_SIZES = 16
BENCH_MIN_CALLS = 10  # timed calls per batch and measure, however short --min-time is
BENCH_MAX_CALLS = 1000000
BENCH_ESTIMATOR = "sample percentiles of per-call wall time"
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "asimddp")
MEASURES = {
    "latency_ms": "per call, end to end: host inputs in, host outputs back (TensorRT: incl. H2D/D2H copies)",
    "compute_ms": "per call, TensorRT enqueue + stream sync only, buffers already on the GPU (no H2D/D2H copies)",
}


def bench_options(args):
    """Check --batch-sizes / --warmup / --min-time / --json; a bad value is a one-line UsageError (exit 2)."""
    if args.verify or args.check_files or args.images:
        raise UsageError("--bench runs alone; drop --verify / --check-files / the image paths")
    sizes = []
    for part in str(args.batch_sizes).split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= BENCH_MAX_BATCH:
            raise UsageError("--batch-sizes takes whole numbers 1..%d separated by commas, e.g. 1,8" % BENCH_MAX_BATCH)
        if int(part) not in sizes:
            sizes.append(int(part))
    if len(sizes) > BENCH_MAX_SIZES:
        raise UsageError("--batch-sizes takes at most %d sizes" % BENCH_MAX_SIZES)
    warmup = str(args.warmup).strip()
    if not warmup.isdigit() or int(warmup) > 10000:
        raise UsageError("--warmup takes a whole number of calls, 0..10000")
    try:
        min_time = float(args.min_time)
    except ValueError:
        min_time = float("nan")
    if not math.isfinite(min_time) or not 0.01 <= min_time <= 600:
        raise UsageError("--min-time takes seconds per batch size and measure, 0.01..600 (got %r)" % args.min_time)
    if args.json_path and not os.path.isdir(os.path.dirname(os.path.abspath(args.json_path))):
        raise UsageError("--json %s: its folder does not exist" % args.json_path)
    return sizes, int(warmup), min_time


def time_calls(call, warmup, min_time, min_calls=BENCH_MIN_CALLS):
    """Seconds per call: ``warmup`` untimed calls, then at least ``min_calls`` and at least ``min_time`` s."""
    for _ in range(warmup):
        call()
    times = []
    clock = time.perf_counter
    start = clock()
    while len(times) < min_calls or (clock() - start < min_time and len(times) < BENCH_MAX_CALLS):
        t0 = clock()
        call()
        times.append(clock() - t0)
    return times


def summarize(times, batch):
    import numpy as np

    ms = np.asarray(times, dtype=np.float64) * 1000.0
    p50, p90, p99 = [float(v) for v in np.percentile(ms, [50, 90, 99])]
    return {
        "n": int(ms.size),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "images_per_s": batch * 1000.0 / p50 if p50 > 0 else None,
    }


def host_info(model):
    """What ran it: CPU model and SIMD flags (from /proc/cpuinfo where it exists), board, GPU name."""
    info = {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version()}
    info["cpu_count"] = os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    fields = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    info["cpu_model"] = fields.get("model name") or fields.get("hardware") or platform.processor() or None
    flags = (fields.get("flags") or fields.get("features") or "").split()
    info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
    try:
        with open("/proc/device-tree/model", "rb") as fh:
            info["board"] = fh.read().decode("utf-8", "replace").strip("\x00 \n") or None
    except OSError:
        pass
    try:
        info["gpu"] = model.gpu_name()
    except Exception:  # noqa: BLE001 - the name is informative only
        info["gpu"] = None
    return info


def bench_inputs(golden, batch):
    import numpy as np

    reps = -(-batch // len(golden))
    return np.ascontiguousarray(np.concatenate([golden] * reps, axis=0)[:batch])


def bench(sizes, warmup, min_time, runtime=None, threads=None):
    n_files = check_files()
    import numpy as np

    bundle = load_json("bundle.json")
    golden = np.load(path_in(*bundle["golden"]["inputs"].split("/")), allow_pickle=False)
    model = open_model(bundle, runtime, threads)
    lo, hi, why = model.batch_range(bundle.get("max_batch") or 1)
    wrong = [b for b in sizes if not lo <= b <= hi]
    if wrong:
        takes = "batch %d" % lo if lo == hi else "batch %d..%d" % (lo, hi)
        raise UsageError(
            "--batch-sizes %s: this model takes %s (%s); use --batch-sizes %d" % (wrong[0], takes, why, lo)
        )
    results = []
    for b in sizes:
        x = bench_inputs(golden, b)
        calls, done = model.bench_calls(x)
        try:
            row = {"batch": b}
            for what, call in calls:
                row[what] = summarize(time_calls(call, warmup, min_time), b)
        finally:
            done()
        row["images_per_s"] = row["latency_ms"]["images_per_s"]
        results.append(row)
    return {
        "schema": "edgecnn-run-bench/1",
        "bundle": bundle["name"],
        "device_profile": bundle["device"]["name"],
        "files_checked": n_files,
        "runtime": model.runtime,
        "runtime_version": model.version,
        "runner": model.name,
        "batch_sizes": sizes,
        "batch_range": [lo, hi],
        "warmup": warmup,
        "min_time_s": min_time,
        "min_calls": BENCH_MIN_CALLS,
        "inputs": "golden inputs (%s, %d images) tiled to each batch" % (bundle["golden"]["inputs"], len(golden)),
        "estimator": BENCH_ESTIMATOR,
        "percentiles": "numpy.percentile, linear interpolation, over n timed calls (time.perf_counter)",
        "images_per_s_basis": "batch * 1000 / latency_ms.p50",
        "measures": {k: v for k, v in MEASURES.items() if any(k in r for r in results)},
        "threads": dict(model.threads(), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS")),
        "host": host_info(model),
        "results": results,
    }


def print_bench(report):
    host = report["host"]
    print("bench   %s (%s) with %s" % (report["bundle"], report["device_profile"], report["runner"]))
    print(
        "host    %s, %s CPUs%s"
        % (
            host.get("cpu_model") or host["machine"],
            host["cpu_count"],
            ", GPU %s" % host["gpu"] if host.get("gpu") else "",
        )
    )
    print(
        "method  %s; %d warm-up calls, then >= %d calls and >= %g s per batch and measure; %s"
        % (report["inputs"], report["warmup"], report["min_calls"], report["min_time_s"], report["estimator"])
    )
    print(
        "%6s  %-10s %8s %9s %9s %9s %9s %10s"
        % ("batch", "measure", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms", "images/s")
    )
    for row in report["results"]:
        for what in ("latency_ms", "compute_ms"):
            if what in row:
                s = row[what]
                print(
                    "%6d  %-10s %8d %9.3f %9.3f %9.3f %9.3f %10.1f"
                    % (row["batch"], what[:-3], s["n"], s["p50"], s["p90"], s["p99"], s["mean"], s["images_per_s"] or 0)
                )
    if any("compute_ms" in r for r in report["results"]):
        print("latency = with H2D/D2H copies (end to end); compute = enqueue + sync, no copies")


def write_json_atomic(path, obj):
    write_atomic(path, lambda fh: fh.write(json.dumps(obj, indent=2).encode("utf-8")))


def write_atomic(path, write):
    """Write ``path`` through a temporary file in the same folder and os.replace: never half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".run-py-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise BundleError("cannot write %s (%s)" % (path, exc))


# -- on-device gate: edgecnn eval / bench / check --host ------------------------------------------
SERVE_PREFIX = "edgecnn-serve: "


def serve_options(args):
    """Check --serve's options; a bad value is a one-line UsageError (exit 2)."""
    if args.verify or args.check_files or args.bench or args.images:
        raise UsageError("--serve runs alone; drop --verify / --check-files / --bench / the image paths")
    digest = str(args.inputs_sha256 or "")
    if not args.inputs or not args.logits or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise UsageError("--serve needs --inputs FILE.npy, --inputs-sha256 (64 hex digits) and --logits FILE.npy")
    if not str(args.batch_size).isdigit() or not 1 <= int(args.batch_size) <= BENCH_MAX_BATCH:
        raise UsageError("--batch-size takes a whole number 1..%d" % BENCH_MAX_BATCH)
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.logits))):
        raise UsageError("--logits %s: its folder does not exist" % args.logits)
    return int(args.batch_size)


def load_inputs(path, digest, spec):
    """The host's preprocessed inputs (float32 N,C,H,W), refused unless their sha256 is ``digest``."""
    import numpy as np

    if not os.path.isfile(path):
        raise BundleError("inputs %s are missing; run the edgecnn command on the host again" % path)
    if sha256_file(path) != digest:
        raise BundleError(
            "%s does not match its sha256 %s (modified or cut short on the device); delete it there and run the "
            "edgecnn command again" % (os.path.basename(path), digest[:16])
        )
    x = np.load(path, mmap_mode="r", allow_pickle=False)
    want = (int(spec["channels"]), int(spec["height"]), int(spec["width"]))
    if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != want or not len(x):
        raise BundleError("inputs %s are %s %s; this model takes float32 (N,)+%s" % (path, x.dtype, x.shape, want))
    return x


def run_all(model, x, batch, smallest):
    """Logits of every input, ``batch`` at a time (a fixed-batch model's last batch padded, the padding dropped)."""
    import numpy as np

    outs = []
    for i in range(0, len(x), batch):
        xb = np.ascontiguousarray(x[i : i + batch])
        n = len(xb)
        if n < smallest:
            xb = np.concatenate([xb, np.repeat(xb[:1], smallest - n, axis=0)])
        outs.append(model.infer(xb)[:n])
    return np.concatenate(outs, axis=0)


def serve(args, batch):
    """--serve: check the files and the inputs, write every input's logits to --logits, say so in one JSON line,
    then time latency on request: one JSON command per stdin line, one JSON reply per stdout line."""
    import numpy as np

    n_files = check_files()
    bundle = load_json("bundle.json")
    x = load_inputs(args.inputs, args.inputs_sha256, bundle["input"])
    model = open_model(bundle, args.runtime, args.threads)
    lo, hi, _ = model.batch_range(bundle.get("max_batch") or 1)
    batch = max(lo, min(batch, hi))
    t0 = time.perf_counter()
    logits = run_all(model, x, batch, lo)
    seconds = time.perf_counter() - t0
    write_atomic(args.logits, lambda fh: np.save(fh, logits.astype(np.float32), allow_pickle=False))
    reply(
        {
            "ready": True,
            "runner": model.name,
            "runtime": model.runtime,
            "runtime_version": model.version,
            "files_checked": n_files,
            "n": int(len(x)),
            "batch": batch,
            "batch_range": [lo, hi],
            "seconds": seconds,
            "logits_sha256": sha256_file(args.logits),
            "threads": model.threads(),
            "host": host_info(model),
        }
    )
    for line in iter(sys.stdin.readline, ""):
        try:
            req = json.loads(line)
            if req.get("cmd") == "quit":
                return
            reply({"times": serve_times(model, x, req, lo, hi)})
        except (ValueError, KeyError, TypeError, BundleError) as exc:
            reply({"error": str(exc)})


def serve_times(model, x, req, lo, hi):
    """Seconds per call of one request: {"cmd": "warm", "calls" | "seconds"} or {"cmd": "block", "seconds",
    "preroll"} (untimed calls first); the batch is the first inputs, cycled, as edgecnn bench feeds it."""
    import numpy as np

    b = int(req.get("batch", 1))
    if not lo <= b <= hi:
        raise BundleError("batch %d: this model takes batch %d..%d" % (b, lo, hi))
    calls, done = model.bench_calls(np.ascontiguousarray(x[np.resize(np.arange(len(x)), b)]))
    call = calls[0][1]  # latency_ms: end to end, what an application sees
    try:
        if req["cmd"] == "warm" and "calls" in req:
            return time_calls(call, 0, 0.0, max(1, int(req["calls"])))
        if req["cmd"] not in ("warm", "block"):
            raise BundleError("unknown command %r" % req["cmd"])
        end = time.perf_counter() + float(req.get("preroll") or 0)
        while time.perf_counter() < end:
            call()
        return time_calls(call, 0, float(req["seconds"]), 1)
    finally:
        done()


def reply(obj):
    sys.stdout.write(SERVE_PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- classification ------------------------------------------------------------------------------
def collect_images(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_SUFFIXES)]
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise BundleError("%s does not exist" % p)
    if not files:
        raise BundleError("no images found in %s" % ", ".join(paths))
    return sorted(files)


def classify(paths, runtime=None, top_k=5, threads=None, json_path=None):
    check_files()
    import numpy as np

    bundle = load_json("bundle.json")
    files = collect_images(paths)
    x = np.stack([preprocess(f, bundle["input"]) for f in files])
    model = open_model(bundle, runtime, threads)
    t0 = time.time()
    logits = run_batches(model, x, int(bundle["max_batch"]))
    seconds = time.time() - t0
    probs = softmax(logits)
    classes = bundle["classes"]
    k = max(1, min(int(top_k), len(classes)))
    rows = []
    for f, p in zip(files, probs):
        order = np.argsort(-p)[:k]
        rows.append({"file": f, "top": [{"class": classes[int(i)], "probability": float(p[int(i)])} for i in order]})
        print("%-40s %s" % (os.path.relpath(f), "  ".join("%s %.3f" % (classes[int(i)], p[int(i)]) for i in order)))
    print("%d image(s) with %s in %.3f s" % (len(files), model.name, seconds))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"runner": model.name, "results": rows}, fh, indent=2)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run or verify this edgecnn bundle.")
    ap.add_argument("images", nargs="*", help="image files or folders to classify")
    ap.add_argument("--verify", action="store_true", help="check hashes and outputs against the golden outputs")
    ap.add_argument("--check-files", action="store_true", help="only check the files against manifest.json")
    ap.add_argument(
        "--runtime", choices=("tensorrt", "onnxruntime", "openvino"), help="default: the bundle's (see bundle.json)"
    )
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--json", dest="json_path", help="also write the result as JSON to this file")
    ap.add_argument("--bench", action="store_true", help="check hashes, then time the model on golden inputs")
    ap.add_argument("--batch-sizes", default="1", help="--bench: comma-separated batch sizes (default 1)")
    ap.add_argument("--warmup", default="10", help="--bench: untimed calls per batch size first (default 10)")
    ap.add_argument("--min-time", default="2", help="--bench: seconds of timed calls per batch size (default 2)")
    ap.add_argument("--serve", action="store_true", help="for edgecnn --host: logits of --inputs, then timing")
    ap.add_argument("--inputs", help="--serve: preprocessed inputs (.npy, float32 N,C,H,W)")
    ap.add_argument("--inputs-sha256", help="--serve: the inputs' sha256 (refused if it differs)")
    ap.add_argument("--logits", help="--serve: where to write the logits (.npy)")
    ap.add_argument("--batch-size", default="64", help="--serve: batch of the logits pass (default 64)")
    args = ap.parse_args(argv)
    try:
        if args.serve:
            serve(args, serve_options(args))
            return 0
        if args.bench:
            sizes, warmup, min_time = bench_options(args)
            report = bench(sizes, warmup, min_time, args.runtime, args.threads)
            print_bench(report)
            if args.json_path:
                write_json_atomic(args.json_path, report)
            return 0
        if args.check_files:
            print("files ok: %d checked against manifest.json" % check_files())
            return 0
        if args.verify:
            report = verify(args.runtime, args.threads)
            print_verify(report)
            if args.json_path:
                with open(args.json_path, "w") as fh:
                    json.dump(report, fh, indent=2)
            print("edgecnn-verify-result: " + json.dumps(report, sort_keys=True))
            return 0 if report["passed"] else 1
        if not args.images:
            ap.error("give images to classify, or --verify / --check-files")
        classify(args.images, args.runtime, args.top_k, args.threads, args.json_path)
        return 0
    except BundleError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
