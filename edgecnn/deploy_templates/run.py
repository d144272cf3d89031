#!/usr/bin/env python3
"""Run and verify an edgecnn deployment bundle on the device.

    python3 run.py IMAGE_OR_FOLDER [...]      classify images (top-k per image)
    python3 run.py --verify                   check file hashes, then outputs against the golden outputs
    python3 run.py --check-files              check file hashes only

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
import os  # noqa: E402
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

    def infer(self, x):
        return self.session.run(None, {self.input: x.astype(self.dtype)})[0].astype("float32")


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
        np, eng, ctx = self.np, self.engine, self.context
        name = self.inputs[0]
        x = np.ascontiguousarray(x.astype(self._dtype(name)))
        ptrs, outs = [], {}
        try:
            dx = self.cuda.malloc(x.nbytes)
            ptrs.append(dx)
            self.cuda.to_device(dx, x)
            if self.tensor_api:
                ctx.set_input_shape(name, tuple(x.shape))
                ctx.set_tensor_address(name, dx.value)
                for out in self.outputs:
                    arr = np.empty(tuple(ctx.get_tensor_shape(out)), dtype=self._dtype(out))
                    d = self.cuda.malloc(arr.nbytes)
                    ptrs.append(d)
                    ctx.set_tensor_address(out, d.value)
                    outs[out] = (arr, d)
                ok = ctx.execute_async_v3(self.stream.value or 0)
                self.cuda.sync(self.stream)
            else:
                bindings = [0] * eng.num_bindings
                idx = eng.get_binding_index(name)
                ctx.set_binding_shape(idx, tuple(x.shape))
                bindings[idx] = dx.value
                for out in self.outputs:
                    j = eng.get_binding_index(out)
                    arr = np.empty(tuple(ctx.get_binding_shape(j)), dtype=self._dtype(out))
                    d = self.cuda.malloc(arr.nbytes)
                    ptrs.append(d)
                    bindings[j] = d.value
                    outs[out] = (arr, d)
                ok = ctx.execute_v2(bindings)
            if not ok:
                raise BundleError("TensorRT inference failed (see the TensorRT messages above)")
            arr, d = outs[self.outputs[0]]
            self.cuda.to_host(arr, d)
            return arr.astype("float32")
        finally:
            for p in ptrs:
                self.cuda.free(p)


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
    raise BundleError("unknown runtime %r; use tensorrt or onnxruntime" % runtime)


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
    t0 = time.time()
    actual = run_batches(model, inputs, int(bundle["max_batch"]))
    report["seconds"] = round(time.time() - t0, 4)
    tol = bundle["tolerance"][runtime]
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
    ap.add_argument("--runtime", choices=("tensorrt", "onnxruntime"), help="default: the bundle's (see bundle.json)")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--json", dest="json_path", help="also write the result as JSON to this file")
    args = ap.parse_args(argv)
    try:
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
        return 1


if __name__ == "__main__":
    sys.exit(main())
