"""Running models over data: the one place that does it.

Every stage that scores a model (``eval``, ``check``, the ``compress`` comparison, accuracy-aware INT8,
``sweep``, pruning / distillation / training validation) streams batches from a ``DataLoader`` through
:func:`batches`. Folder datasets decode in worker processes, so peak memory is bounded by the batch,
not by the dataset; several models compared on the same images share one pass over the data
(:func:`predict` with a list of runners), so the data is read once.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .artifact import Artifact
from .data.source import DataSource
from .errors import DataError, EdgeCnnError, InvalidInput
from .runtime_choice import open_in, resolve

#: decode workers are processes: bound what a user can ask for
MAX_WORKERS = 32


def default_workers(dataset) -> int:
    """Decode workers for ``dataset``: none for in-memory sets, up to 4 (one per core) for image folders."""
    if not getattr(dataset, "decodes", False):
        return 0
    return max(0, min(4, (os.cpu_count() or 1)))


def named_errors(iterable):
    """Re-raise an EdgeCnnError from a DataLoader worker as the original one-line error (workers wrap it
    in 'Caught DataError in DataLoader worker process 0. Original Traceback ...')."""
    it = iter(iterable)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except EdgeCnnError as exc:
            text = str(exc)
            if "Original Traceback" in text:
                last = text.strip().splitlines()[-1]
                raise type(exc)(last.split(": ", 1)[1] if ": " in last else last) from None
            raise
        yield item


def batches(dataset, batch_size: int = 64, *, workers: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(float32 NCHW, int64 labels) batches of ``dataset`` in order, decoded by ``workers`` processes."""
    if batch_size < 1:
        raise InvalidInput(f"batch size must be >= 1, got {batch_size}.")
    workers = default_workers(dataset) if workers is None else int(workers)
    if not 0 <= workers <= MAX_WORKERS:
        raise InvalidInput(f"workers must be between 0 and {MAX_WORKERS}, got {workers}.")
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, prefetch_factor=2 if workers else None
    )
    for x, y in named_errors(loader):
        yield x.numpy().astype(np.float32, copy=False), y.numpy()


def scores(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """top-1, top-5 and per-class accuracy from logits and labels (``per_class_n``: images per class)."""
    n = len(targets)
    pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1)[:, :k]
    per_class, per_class_n = {}, {}
    for c, name in enumerate(classes):
        mask = targets == c
        if mask.any():
            per_class[name] = float((pred[mask] == c).mean())
            per_class_n[name] = int(mask.sum())
    return {
        "top1": float((pred == targets).mean()) if n else 0.0,
        "top5": float((topk == targets[:, None]).any(1).mean()) if n else 0.0,
        "per_class": per_class,
        "per_class_n": per_class_n,
        "n": int(n),
    }


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean()) if len(labels) else 0.0


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 0.0


def run_over(
    fns: Sequence[Callable[[np.ndarray], np.ndarray]],
    dataset,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
    desc: str = "eval",
):
    """Feed every batch of ``dataset`` to each of ``fns`` (batch -> logits) in one pass over the data.

    Returns ([logits per fn], labels, [seconds inside each fn])."""
    outs: list[list[np.ndarray]] = [[] for _ in fns]
    spent = [0.0 for _ in fns]
    ys = []
    total = math.ceil(len(dataset) / batch_size) if batch_size > 0 else None
    for x, y in tqdm(
        batches(dataset, batch_size, workers=workers),
        total=total,
        desc=desc,
        leave=False,
        disable=None if progress else True,
    ):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            outs[i].append(np.asarray(fn(x), dtype=np.float32))
            spent[i] += time.perf_counter() - t
        ys.append(y)
    if not ys:
        raise DataError("The evaluation set is empty; check the data folder.")
    return [np.concatenate(o) for o in outs], np.concatenate(ys), spent


def predict(runner, dataset, *, batch_size: int = 64, workers: int | None = None, progress: bool = False):
    """Run ``dataset`` through ``runner`` (or a list of runners, in one pass over the data).

    One runner: (logits, labels, seconds inside infer); a list: ([logits], labels, [seconds])."""
    many = isinstance(runner, (list, tuple))
    runners = list(runner) if many else [runner]
    logits, labels, spent = run_over(
        [r.infer for r in runners], dataset, batch_size=batch_size, workers=workers, progress=progress
    )
    return (logits, labels, spent) if many else (logits[0], labels, spent[0])


def evaluate_module(
    model, dataset, *, batch_size: int = 256, device: str | None = None, workers: int | None = None
) -> dict:
    """Score an in-memory torch module on ``dataset`` (device: where the model is, unless given)."""
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
    model.eval()

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    (logits,), labels, _ = run_over([infer], dataset, batch_size=batch_size, workers=workers)
    return scores(logits, labels, list(dataset.classes))


def evaluate(
    artifact,
    data=None,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = False,
    skip_corrupt: bool = False,
    val_split: float = 0.2,
    workers: int | None = None,
    runtime: str | None = None,
) -> dict:
    """Score an artifact of any runnable format on the held-out split of ``data``.

    ``runtime`` ('onnxruntime' | 'openvino' | 'auto'; None: the format's runner) runs an onnx artifact in
    that runtime; ``auto`` first measures both here and uses the faster (``runtime_choice`` records it).

    Returns top1 / top5 (fractions), per_class accuracy, n, images_per_second (time inside the
    runner only, batch ``batch_size``) and what was measured (artifact, runner, data). ``data`` None: the
    data the artifact was trained on, from its manifest (``data["chosen"]`` says so)."""
    if batch_size < 1:
        raise InvalidInput(f"batch size must be >= 1, got {batch_size}.")
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    source, chosen = DataSource.for_model(data, artifact)
    dataset = source.dataset(
        artifact.input, "val", skip_corrupt=skip_corrupt, val_split=val_split, num_classes=artifact.num_classes
    )
    source.check_classes(dataset.classes, artifact.num_classes, fix="evaluate on data with the model's classes")
    t0 = time.perf_counter()
    runtime, choice = resolve(artifact, runtime, threads=threads)
    with open_in(artifact, runtime, device=device, threads=threads) as runner:
        logits, labels, spent = predict(runner, dataset, batch_size=batch_size, workers=workers, progress=progress)
        kind = runner.description
        layout = getattr(runner, "layout", None)  # which file of the artifact ran (edgecnn.layouts.Choice)
    result = scores(logits, labels, artifact.classes)
    result.update(
        {
            "artifact": str(artifact.path),
            "model": artifact.model,
            "format": artifact.format,
            "precision": artifact.precision,
            "runner": kind,
            **({"int8_layout": layout.record()} if layout is not None and layout.layout is not None else {}),
            "runtime": runner.kind,
            **({"runtime_choice": choice} if choice else {}),
            "data": {**source.describe("val"), **({"chosen": chosen} if chosen else {})},
            "batch_size": batch_size,
            "images_per_second": len(labels) / spent if spent > 0 else None,
            "infer_seconds": spent,
            "seconds": time.perf_counter() - t0,
            "skipped": len(getattr(dataset, "skipped", []) or []),
        }
    )
    return result
