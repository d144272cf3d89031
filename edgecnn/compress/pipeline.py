"""``edgecnn compress``: the chain from given weights (or an artifact) to a compressed, deployable ONNX
artifact, ending in an original-vs-compressed comparison measured in one run.

    source (zoo name + weights, or an artifact)
      -> [prune (+ fine-tune, optionally distilled from the original)]   torch
      -> export FP32 ONNX (BatchNorm folded)                              onnx fp32
      -> [INT8: NNCF PTQ (+ accuracy-aware / QAT)]  or  [FP16]            onnx int8 / fp16
      -> table: top-1 (with --data), agreement with the original, file size, params, MACs and
         ONNX Runtime latency of every step, measured interleaved in one run (edgecnn.bench)

No training from scratch: the chain starts from weights you have. Everything lands in one run folder
(``runs/compress/<model>-<timestamp>/`` unless ``out`` is given): one artifact per step, ``final`` (a
symlink to the last step's artifact) and ``compress.json`` (options, steps, the table, and ``final``:
the path of the artifact to deploy).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, WeightsError
from .recipe import CompressRecipe, RecipeError

log = logging.getLogger("edgecnn")

RUNS_ROOT = Path("runs") / "compress"
REPORT = "compress.json"


def compress(model: str | os.PathLike | None = None, *, recipe: str | os.PathLike | CompressRecipe | None = None,
             progress: bool = True, **options) -> dict:
    """Run the compression chain; return the report (also written to ``<run>/compress.json``).

    ``model`` is a zoo name or an artifact directory; ``options`` are the fields of
    :class:`~edgecnn.compress.recipe.CompressRecipe` (``weights``, ``prune``, ``distill``, ``int8``,
    ``calib``, ``fp16``, ``data``, ``out``, ...). ``recipe`` (a YAML path or a CompressRecipe) supplies
    defaults that ``model`` / ``options`` override.
    """
    base = recipe if isinstance(recipe, CompressRecipe) else (CompressRecipe.load(recipe) if recipe else CompressRecipe())
    rec = base.merged({"model": str(model) if model is not None else None, **options})
    rec.validate()
    return _run(rec, progress=progress, recipe_path=str(recipe) if recipe and not isinstance(recipe, CompressRecipe) else None)


# --------------------------------------------------------------------------------------------------
def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _run_dir(rec: CompressRecipe, name: str) -> Path:
    if rec.out:
        run = Path(rec.out)
        if run.exists() and (run.is_file() or (any(run.iterdir()) and not (run / REPORT).is_file())):
            raise InvalidInput(f"Output '{run}' exists and is not an edgecnn compress run; choose another --out or "
                               "remove it.")
        return run
    run = RUNS_ROOT / f"{name}-{_timestamp()}"
    k = 1
    while run.exists():
        run = RUNS_ROOT / f"{name}-{_timestamp()}-{k}"
        k += 1
    return run


def cached_imagenet_file(spec) -> Path | None:
    """The torch-hub cache file of ``spec``'s torchvision ImageNet weights, if it is there (no download)."""
    if spec.torchvision is None:
        return None
    import torch
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(spec.torchvision).DEFAULT
    except Exception:  # noqa: BLE001 - a builder without registered weights
        return None
    f = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    return f if f.is_file() else None


def _load_source(rec: CompressRecipe, run: Path, progress: bool):
    """The original artifact: the given one, or the zoo model with its weights saved as a torch artifact."""
    from ..artifact import Artifact, is_artifact
    from ..models import build_model, get_spec, save_torch_artifact

    if is_artifact(rec.model):
        if rec.weights:
            raise RecipeError("--weights is for a model name; an artifact already carries its weights - drop --weights.")
        art = Artifact.load(rec.model, formats=("torch", "onnx"))
        if art.format == "onnx" and (rec.prune is not None or rec.qat):
            raise RecipeError(f"'{art.path}' is an onnx artifact; pruning and QAT change the torch network - pass the "
                              "torch artifact it was exported from.")
        if art.precision != "fp32":
            raise RecipeError(f"'{art.path}' is already {art.precision}; compress its FP32 original.")
        return art, {"source": "artifact", "path": str(art.path)}
    if Path(str(rec.model)).exists():
        raise RecipeError(f"'{rec.model}' is neither a zoo model name nor an edgecnn artifact (no manifest.json); pass "
                          "a model name with --weights FILE, or an artifact directory.")
    spec = get_spec(rec.model)
    weights = rec.weights
    if weights is None:
        cached = cached_imagenet_file(spec)
        if cached is None:
            where = ""
            if spec.torchvision:
                import torch
                import torchvision

                url = torchvision.models.get_model_weights(spec.torchvision).DEFAULT.url
                where = (f"ImageNet weights are not in the torch cache ({Path(torch.hub.get_dir()) / 'checkpoints' / url.rsplit('/', 1)[-1]}"
                         f", from {url}); ")
            raise WeightsError(f"{spec.name} needs weights: {where}pass --weights FILE (a state_dict .pth/.safetensors), "
                               f"--weights ARTIFACT (from 'edgecnn train'), --weights imagenet (download), or --weights "
                               "random (size/speed only, accuracy means nothing).")
        weights = "imagenet"
    input_spec = spec.input_spec(in_channels=rec.in_channels, input_size=rec.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, info = build_model(spec.name, weights=weights, num_classes=rec.num_classes,
                                in_channels=input_spec["channels"],
                                input_size=(input_spec["height"], input_spec["width"]), warn_random=False)
    if weights == "random":
        log.warning("%s: random weights - accuracy numbers mean nothing; size and speed do.", spec.name)
    classes = info.get("classes")
    if classes is None:
        n = _out_features(net, spec)
        classes = _imagenet_categories(spec) if weights == "imagenet" and n == 1000 else [str(i) for i in range(n)]
    art = save_torch_artifact(net, run / "original", name=spec.name, input_spec=input_spec, classes=classes,
                              stage="load", params={"weights": weights}, parent=info.get("parent"),
                              extra={"weights_report": info.get("report")})
    return art, {"source": "zoo", "model": spec.name, "weights": weights}


def _out_features(net, spec) -> int:
    from ..models.zoo import _get

    head = _get(net, spec.classifier)
    return int(getattr(head, "out_features", getattr(head, "out_channels", 0)))


def _imagenet_categories(spec) -> list[str]:
    try:
        import torchvision

        return list(torchvision.models.get_model_weights(spec.torchvision).DEFAULT.meta["categories"])
    except Exception:  # noqa: BLE001
        return [str(i) for i in range(1000)]


def _step(stages: list, name: str, art, t0: float, **extra) -> None:
    stages.append({"step": name, "artifact": str(art.path), "id": art.id, "format": art.format,
                   "precision": art.precision, "seconds": round(time.perf_counter() - t0, 2), **extra})


def _run(rec: CompressRecipe, *, progress: bool, recipe_path: str | None) -> dict:
    t_start = time.perf_counter()
    _check_inputs(rec)
    name = Path(rec.model).name if os.sep in str(rec.model) or Path(str(rec.model)).exists() else str(rec.model)
    run = _run_dir(rec, name)
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    try:
        return _chain(rec, run, t_start, progress=progress, recipe_path=recipe_path)
    except BaseException:
        if created:   # nothing half-written: a failed run leaves no folder behind
            import shutil

            shutil.rmtree(run, ignore_errors=True)
        raise


def _check_inputs(rec: CompressRecipe) -> None:
    """Fail in a second on inputs that would otherwise fail after minutes of work."""
    from ..data.calibration import find_images
    from ..errors import DataError

    if rec.int8 and rec.calib not in ("digits",) and not str(rec.calib).startswith("synthetic"):
        find_images(rec.calib)
    if rec.data and rec.data != "digits" and not rec.data.startswith("synthetic") and not Path(rec.data).is_dir():
        raise DataError(f"Data folder '{rec.data}' does not exist; pass 'digits' or a folder of class sub-folders.")


def _chain(rec: CompressRecipe, run: Path, t_start: float, *, progress: bool, recipe_path: str | None) -> dict:
    from ..artifact import atomic_write_json
    from ..export.onnx import export_onnx

    stages: list[dict] = []
    t = time.perf_counter()
    original, source = _load_source(rec, run, progress)
    _step(stages, "source", original, t, **source)
    current = original
    if rec.prune is not None:
        from .prune import prune

        t = time.perf_counter()
        ft = rec.finetune_epochs if rec.finetune_epochs is not None else (3 if rec.data else 0)
        current = prune(original, run / "pruned", ratio=rec.prune, importance=rec.importance, finetune_epochs=ft,
                        data=rec.data if ft else None, distill=rec.distill, temperature=rec.temperature,
                        seed=rec.seed, progress=progress)
        _step(stages, "prune", current, t, ratio=rec.prune, finetune_epochs=ft, distill=rec.distill)
    t = time.perf_counter()
    if original.format == "onnx":
        original_onnx = original
    else:
        original_onnx = export_onnx(original, run / "original-onnx", progress=False)
        _step(stages, "export original", original_onnx, t)
    current_onnx = original_onnx
    if current is not original:
        t = time.perf_counter()
        current_onnx = export_onnx(current, run / "pruned-onnx", progress=False)
        _step(stages, "export pruned", current_onnx, t)
    final = current_onnx
    if rec.int8:
        from .quantize import quantize

        t = time.perf_counter()
        final = quantize(current if rec.qat else current_onnx, run / "int8", calib=rec.calib,
                         subset_size=rec.subset_size, target=rec.target, preset=rec.preset,
                         range_estimator=rec.range_estimator, max_drop=rec.max_drop, data=rec.data, qat=rec.qat,
                         epochs=rec.qat_epochs, threads=rec.threads, seed=rec.seed, progress=progress,
                         compact_names=rec.compact_names)
        _step(stages, "int8", final, t, target=final.manifest["quantization"]["target"],
              route=final.manifest["quantization"]["route"])
    elif rec.fp16:
        from .fp16 import convert_fp16

        t = time.perf_counter()
        final = convert_fp16(current_onnx, run / "fp16", fp16_io=rec.fp16_io, data=rec.data, progress=progress)
        _step(stages, "fp16", final, t)
    t = time.perf_counter()
    columns = [("original", original_onnx)]
    if current_onnx is not original_onnx:
        columns.append(("pruned", current_onnx))
    if final is not current_onnx:
        columns.append((final.precision, final))
    table = compare(columns, rec, original=original)
    warnings_out = slower_than_float(table)
    bench_seconds = round(time.perf_counter() - t, 2)
    link = run / "final"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(final.path).resolve().relative_to(run.resolve()), target_is_directory=True)
    except (OSError, ValueError):  # no symlinks here (or final outside the run): compress.json still says
        pass
    report = {
        "schema": "edgecnn.compress/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": str(run),
        "model": original.model,
        "recipe": rec.as_dict(),
        "recipe_file": recipe_path,
        "original": str(original.path),
        "final": str(final.path),
        "final_id": final.id,
        "final_precision": final.precision,
        "steps": stages,
        "table": table,
        "warnings": warnings_out,
        "seconds": {"total": round(time.perf_counter() - t_start, 2), "compare": bench_seconds},
    }
    atomic_write_json(run / REPORT, report)
    return report


# --------------------------------------------------------------------------------------------------
# original vs compressed
# --------------------------------------------------------------------------------------------------
def _eval_images(rec: CompressRecipe, input_spec: dict, num_classes: int):
    """Images (and labels) for top-1 / agreement: the held-out split of --data, else calibration images,
    else held-out digits resized to the model's input."""
    from .quantize import load_eval_set

    if rec.data:
        images, labels, _ = load_eval_set(rec.data, input_spec, num_classes=num_classes)
        return images, labels, f"{len(images)} held-out images of '{rec.data}'"
    if rec.calib and not str(rec.calib).startswith("synthetic"):
        from ..data.calibration import load_calibration

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cal = load_calibration(rec.calib, input_spec, subset_size=64, batch_size=1, seed=rec.seed + 1)
        return cal.images(), None, f"{cal.num_images} calibration images ({rec.calib})"
    from ..export.onnx import parity_images

    images, _ = parity_images(input_spec, "digits", 32)
    return np.asarray(images, np.float32), None, "32 held-out digits (no --data given)"


def slower_than_float(table: dict) -> list[str]:
    """An INT8 / FP16 column that ran slower than the floating-point column before it: said, not hidden.
    (Measured: every DenseNet is 0.57-0.75x in INT8 in ONNX Runtime on an AVX2 CPU, LeNet-5 0.65x -
    benchmarks/results/int8_zoo_all64.md.) The chain still ends with that artifact; the user decides."""
    rows = [r for r in table["rows"] if r.get("speedup")]
    out = []
    for prev, row in zip(rows, rows[1:]):
        if row["precision"] in ("int8", "fp16") and prev["precision"] == "fp32" and row["speedup"] < prev["speedup"]:
            out.append(f"{row['label']} ran {prev['speedup'] / row['speedup']:.2f}x slower than {prev['label']} "
                       f"({row['latency_ms']:.2f} vs {prev['latency_ms']:.2f} ms) in ONNX Runtime here; for CPU "
                       f"deployment keep '{prev['artifact']}' (it is {row['size_ratio'] / prev['size_ratio']:.1f}x "
                       "bigger), or deploy this one to TensorRT, which fuses the Q/DQ pairs.")
    return out


def compare(columns: list[tuple[str, object]], rec: CompressRecipe, *, original=None) -> dict:
    """Measure every artifact in ``columns`` (label, onnx artifact) on the same images and latency in one
    interleaved run; ratios are against the first column (the original)."""
    from ..runtime.onnxrt import create_session, run_batches

    first = columns[0][1]
    images, labels, image_desc = _eval_images(rec, first.input, first.num_classes)
    threads = rec.threads
    outs = {}
    for label, art in columns:
        feed = images.astype(np.float16) if art.manifest.get("fp16", {}).get("io_dtype") == "float16" else images
        outs[label] = run_batches(create_session(art.model_file, threads=threads), feed).astype(np.float32)
    ref = outs[columns[0][0]]
    latency = None
    if rec.bench and all(a.manifest.get("fp16", {}).get("io_dtype") != "float16" for _, a in columns):
        from ..bench import measure_latency

        latency = measure_latency([a for _, a in columns], labels=[lab for lab, _ in columns], batch_sizes=(1,),
                                  warmup=0.5, min_time_s=rec.bench_seconds, min_repeats=10, threads=threads,
                                  progress=False)
    rows = []
    orig_torch_size = original.model_file.stat().st_size if original is not None else None
    base_size = first.model_file.stat().st_size
    for i, (label, art) in enumerate(columns):
        m = art.manifest.get("metrics", {})
        size = art.model_file.stat().st_size
        row = {"label": label, "artifact": str(art.path), "precision": art.precision, "file_bytes": size,
               "size_ratio": base_size / size, "params": m.get("params"), "macs": m.get("macs"),
               "agreement": float((outs[label].argmax(1) == ref.argmax(1)).mean())}
        if labels is not None:
            row["top1"] = float((outs[label].argmax(1) == labels).mean())
            row["top1_drop_pt"] = 100 * (rows[0]["top1"] - row["top1"]) if rows else 0.0
        if latency is not None:
            r = latency["results"][i]
            rr = r.get("ratio_rounds") or {}
            # per-round latency ratios -> speed-ups (the quartiles swap sides under 1/x)
            iqr = {"q25": 1 / rr["q75"], "median": 1 / rr["median"], "q75": 1 / rr["q25"]} \
                if rr and min(rr["q25"], rr["q75"], rr["median"]) > 0 else {}
            row.update(latency_ms=r["latency_ms"]["p50"], speedup=r["speedup"], speedup_iqr=iqr)
        rows.append(row)
    return {"images": image_desc, "rows": rows, "original_torch_file_bytes": orig_torch_size,
            "latency": {"threads": latency["settings"]["threads"], "environment": latency["environment"].get("cpu"),
                        "seconds": latency["seconds"]} if latency else None}
