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
the path of the artifact to deploy). A run owns its folder while it works (:mod:`edgecnn.runfolder`): a
second run on it is refused, and until the report is written the folder holds ``compress.running``
instead of ``compress.json`` / ``final``, so ``deploy`` never picks a run that did not finish.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from ..artifact import Artifact, atomic_write_json, check_out
from ..bench import measure_latency, ratio_between
from ..data.calibration import CalibrationSet, load_calibration
from ..data.source import DataSource
from ..estimator import RATIO_ESTIMATOR
from ..evaluation import run_over
from ..layouts import model_file_for
from ..runfolder import REPORT, new_run_dir, own_run
from ..runtime.onnxrt import create_session, run_batches
from .chain import COMPRESS_LAYOUT, run_chain
from .recipe import CompressRecipe, RecipeError
from .source import load_original

RUNS_ROOT = Path("runs") / "compress"
#: images compared when neither --data nor real calibration images are given (held-out digits)
FALLBACK_IMAGES = 32
CALIB_COMPARE_IMAGES = 64
#: the torch original in the latency run (timed beside the ONNX columns, not a column itself)
TORCH_LABEL = "torch original"


def compress(
    model: str | os.PathLike | None = None,
    *,
    recipe: str | os.PathLike | CompressRecipe | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Run the compression chain; return the report (also written to ``<run>/compress.json``).

    ``model`` is a zoo name or an artifact directory; ``options`` are the fields of
    :class:`~edgecnn.compress.recipe.CompressRecipe` (``weights``, ``prune``, ``distill``, ``int8``,
    ``calib``, ``fp16``, ``data``, ``out``, ...). ``recipe`` (a YAML path or a CompressRecipe) supplies
    defaults that ``model`` / ``options`` override. The options are checked once, here.
    """
    base = (
        recipe if isinstance(recipe, CompressRecipe) else (CompressRecipe.load(recipe) if recipe else CompressRecipe())
    )
    rec = base.merged({"model": str(model) if model is not None else None, **options})
    rec.validate()
    recipe_path = str(recipe) if recipe and not isinstance(recipe, CompressRecipe) else None
    t_start = time.perf_counter()
    _check_inputs(rec)
    name = Path(rec.model).name if os.sep in str(rec.model) or Path(str(rec.model)).exists() else str(rec.model)
    run, created = _run_dir(rec, name)
    # the run owns its folder: a second run on it is refused, a failure removes only a folder it made, and
    # the folder is marked unfinished (deploy skips it) until the report is written
    with own_run(run, created=created):
        return _chain(rec, run, t_start, progress=progress, recipe_path=recipe_path)


# --------------------------------------------------------------------------------------------------
def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _run_dir(rec: CompressRecipe, name: str) -> tuple[Path, bool]:
    """(run folder, whether this run created it); an --out that cannot be written, or that is or holds the
    source, fails here - before any work."""
    sources = (rec.model, rec.weights)
    if rec.out:
        check_out(rec.out, *sources, artifact=False)
        return Path(rec.out), False
    check_out(RUNS_ROOT / f"{name}-{_timestamp()}", *sources, artifact=False)
    return new_run_dir(RUNS_ROOT, name, _timestamp()), True


def _check_inputs(rec: CompressRecipe) -> None:
    """Fail in a second on inputs that would otherwise fail after minutes of work."""
    if rec.int8 and rec.calib is not None:
        rec.calib.require_folder("Calibration")
    if rec.data is not None:
        rec.data.require_folder("Data")


def _calibration(rec: CompressRecipe, input_spec: dict, progress: bool) -> CalibrationSet | None:
    """The calibration images, read once: the INT8 step and the comparison both use them."""
    if not rec.int8:
        return None
    return load_calibration(rec.calib, input_spec, subset_size=rec.subset_size, seed=rec.seed, progress=progress)


def _chain(rec: CompressRecipe, run: Path, t_start: float, *, progress: bool, recipe_path: str | None) -> dict:
    t = time.perf_counter()
    original, source = load_original(
        rec.model,
        run / "original",
        weights=rec.weights,
        num_classes=rec.num_classes,
        in_channels=rec.in_channels,
        input_size=rec.input_size,
    )
    if original.format == "onnx" and (rec.prune is not None or rec.qat):
        raise RecipeError(
            f"'{original.path}' is an onnx artifact; pruning and QAT change the torch network - pass "
            "the torch artifact it was exported from."
        )
    source_step = {
        "step": "source",
        "artifact": str(original.path),
        "id": original.id,
        "format": original.format,
        "precision": original.precision,
        "seconds": round(time.perf_counter() - t, 2),
        **source,
    }
    calib_set = _calibration(rec, original.input, progress)
    result = run_chain(
        original, rec.plan(), lambda step: run / COMPRESS_LAYOUT[step], calib_set=calib_set, progress=progress
    )
    t = time.perf_counter()
    table = compare(result.columns(), rec, original=original, calib_set=calib_set)
    _link_final(run, result.final)
    report = {
        "schema": "edgecnn.compress/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": str(run),
        "model": original.model,
        "recipe": rec.as_dict(),
        "recipe_file": recipe_path,
        "original": str(original.path),
        "final": str(result.final.path),
        "final_id": result.final.id,
        "final_precision": result.final.precision,
        "steps": [source_step, *result.steps],
        "table": table,
        "warnings": slower_than_float(table),
        "seconds": {"total": round(time.perf_counter() - t_start, 2), "compare": round(time.perf_counter() - t, 2)},
    }
    atomic_write_json(run / REPORT, report)
    return report


def _link_final(run: Path, final: Artifact) -> None:
    link = run / "final"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(final.path).resolve().relative_to(run.resolve()), target_is_directory=True)
    except (OSError, ValueError):  # no symlinks here (or final outside the run): compress.json still says
        pass


# --------------------------------------------------------------------------------------------------
# original vs compressed
# --------------------------------------------------------------------------------------------------
def comparison_images(rec: CompressRecipe, input_spec: dict, num_classes: int, calib_set: CalibrationSet | None = None):
    """(dataset to stream, whether it has real labels, description) for top-1 / agreement: the held-out split
    of --data, else the calibration images already read, else evenly spaced held-out digits."""
    if rec.data is not None:
        dataset = rec.data.dataset(input_spec, "val", num_classes=num_classes)
        rec.data.check_classes(dataset.classes, num_classes, fix="compare on data with the model's classes")
        return dataset, True, f"{len(dataset)} held-out images of '{rec.data}'"
    if calib_set is not None and rec.calib is not None and rec.calib.is_real:
        images = np.concatenate(calib_set.batches)[:CALIB_COMPARE_IMAGES]
        dataset = [(x, -1) for x in images]
        return dataset, False, f"{len(images)} calibration images ({rec.calib})"
    digits = DataSource.parse("digits")
    held_out = digits.dataset(input_spec, "val")
    idx = np.unique(np.linspace(0, len(held_out) - 1, num=FALLBACK_IMAGES).round().astype(int)).tolist()
    return Subset(held_out, idx), False, f"{len(idx)} held-out digits (no --data given)"


def slower_than_float(table: dict) -> list[str]:
    """An INT8 / FP16 column that ran slower than the floating-point column before it: said, not hidden.
    (Measured: every DenseNet is 0.57-0.75x in INT8 in ONNX Runtime on an AVX2 CPU, LeNet-5 0.65x -
    benchmarks/results/int8_zoo_all64.md.) The chain still ends with that artifact; the user decides."""
    rows = [r for r in table["rows"] if r.get("speedup")]
    out = []
    for prev, row in zip(rows, rows[1:]):
        if row["precision"] in ("int8", "fp16") and prev["precision"] == "fp32" and row["speedup"] < prev["speedup"]:
            out.append(
                f"{row['label']} ran {prev['speedup'] / row['speedup']:.2f}x slower than {prev['label']} "
                f"({row['latency_ms']:.2f} vs {prev['latency_ms']:.2f} ms) in ONNX Runtime here; for CPU "
                f"deployment keep '{prev['artifact']}' (it is {row['size_ratio'] / prev['size_ratio']:.1f}x "
                "bigger), or deploy this one to TensorRT, which fuses the Q/DQ pairs."
            )
    return out


def _fp16_io(art: Artifact) -> bool:
    return art.manifest.get("fp16", {}).get("io_dtype") == "float16"


def _logits_fn(art: Artifact, threads: int | None):
    session = create_session(model_file_for(art, "cpu"), threads=threads)  # the table is ONNX Runtime on this CPU
    half = _fp16_io(art)
    return lambda x: run_batches(session, x.astype(np.float16) if half else x).astype(np.float32)


def compare(
    columns: list[tuple[str, Artifact]], rec: CompressRecipe, *, original=None, calib_set: CalibrationSet | None = None
) -> dict:
    """Measure every artifact in ``columns`` (label, onnx artifact) on the same images, streamed once for all
    columns, and their latency in one interleaved run, the torch ``original`` timed beside them. Speed-ups
    (:data:`~edgecnn.estimator.RATIO_ESTIMATOR`) are against the first column - the original's FP32 ONNX, the
    same runtime, so they are the compression's gain alone - and, labelled apart, against the torch original."""
    first = columns[0][1]
    dataset, labelled, image_desc = comparison_images(rec, first.input, first.num_classes, calib_set)
    logits, labels, _ = run_over([_logits_fn(art, rec.threads) for _, art in columns], dataset, batch_size=64)
    outs = {label: out for (label, _), out in zip(columns, logits)}
    latency = None
    torch_ref = [original] if original is not None and original.format != "onnx" else []
    if rec.bench and not any(_fp16_io(a) for _, a in columns):
        latency = measure_latency(
            [a for _, a in columns] + torch_ref,
            labels=[lab for lab, _ in columns] + [TORCH_LABEL] * len(torch_ref),
            batch_sizes=(1,),
            warmup=0.5,
            min_time_s=rec.bench_seconds,
            min_repeats=10,
            threads=rec.threads,
            progress=False,
        )
    rows = [
        _row(i, label, art, outs, labels if labelled else None, latency, first)
        for i, (label, art) in enumerate(columns)
    ]
    for row in rows:  # the original's own drop is 0.0
        if "top1" in row:
            row["top1_drop_pt"] = 100 * (rows[0]["top1"] - row["top1"])
    return {
        "images": image_desc,
        "rows": rows,
        "original_torch_file_bytes": original.model_file.stat().st_size if original is not None else None,
        "latency": {
            "threads": latency["settings"]["threads"],
            "environment": latency["environment"].get("cpu"),
            "seconds": latency["seconds"],
            "estimator": RATIO_ESTIMATOR,
            "reference": f"{columns[0][0]} (FP32 ONNX, same runtime)",
            "torch_p50_ms": latency["results"][-1]["latency_ms"]["p50"] if torch_ref else None,
            "notes": latency["notes"],
        }
        if latency
        else None,
    }


def _row(i: int, label: str, art: Artifact, outs: dict, labels, latency, first: Artifact) -> dict:
    m = art.manifest.get("metrics", {})
    size = model_file_for(art, "cpu").stat().st_size
    ref = next(iter(outs.values()))
    row = {
        "label": label,
        "artifact": str(art.path),
        "precision": art.precision,
        "file_bytes": size,
        "size_ratio": model_file_for(first, "cpu").stat().st_size / size,
        "params": m.get("params"),
        "macs": m.get("macs"),
        "agreement": float((outs[label].argmax(1) == ref.argmax(1)).mean()),
    }
    if labels is not None:
        row["top1"] = float((outs[label].argmax(1) == labels).mean())
    if latency is not None:
        row.update(_latency_row(latency["results"], i))
    return row


def _latency_row(results: list[dict], i: int) -> dict:
    """Latency of column ``i``: its p50, and its speed-up against the first column (same runtime) and, when
    the torch original was timed, against it - each by the one estimator, with interval and flags."""
    r = results[i]
    out = {
        "latency_ms": r["latency_ms"]["p50"],
        "latency_ratio": {"point": r["ratio"], "low": r["ratio_ci"][0], "high": r["ratio_ci"][1]},
        "speedup": r["speedup"],
        "speedup_ci": r["speedup_ci"],
        "latency_flags": r["flags"],
    }
    if results[-1]["label"] == TORCH_LABEL:
        sp = ratio_between(r, results[-1]).speedup()
        out.update(speedup_vs_torch=sp.point, speedup_vs_torch_ci=[sp.low, sp.high])
    return out
