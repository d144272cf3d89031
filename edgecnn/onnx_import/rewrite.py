"""Running an imported graph in ONNX Runtime, and the rewrites an import may make (opset, dynamic batch,
onnxslim), each proved on real images against the original's outputs."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxslim
from onnx import numpy_helper, version_converter

from ..errors import EdgeCnnError
from ..export.onnx import PARITY_ATOL_FP32, PARITY_MAX_REL, compare_outputs
from ..runtime.onnxrt import create_session, ort_version
from .graph import BATCH, MIN_OPSET, GraphIO, ImportOptions, ImportRefused, first_line, shape_text


# --------------------------------------------------------------------------------------------------
# Running: original and rewrites in ONNX Runtime
# --------------------------------------------------------------------------------------------------
def _session(model: onnx.ModelProto, path: Path, what: str):
    try:
        return create_session(model)
    except EdgeCnnError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises pybind classes (Fail, InvalidGraph, NotImplemented...)
        raise ImportRefused(
            f"ONNX Runtime {ort_version()} cannot load {what}'{path}' ({first_line(exc)}); re-export the model "
            "with ops ONNX Runtime supports."
        ) from exc


def run(session, images: np.ndarray, batch: int | None) -> np.ndarray:
    """Outputs of ``images`` through ``session``: in groups of the fixed ``batch`` (the last one padded), or as
    one batch and the first image alone (a dynamic batch, both sizes exercised)."""
    name = session.get_inputs()[0].name
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a graph that cannot run is said once, in our error, not in ORT's log too
    if batch:
        reps = -(-len(images) // batch) * batch
        order = np.resize(np.arange(len(images)), reps)
        outs = [session.run(None, {name: images[order[i : i + batch]]}, quiet)[0] for i in range(0, reps, batch)]
        return np.concatenate(outs)[: len(images)]
    whole = session.run(None, {name: images}, quiet)[0]
    single = session.run(None, {name: images[:1]}, quiet)[0]
    return np.concatenate([whole, single])


def run_original(model, io: GraphIO, images: np.ndarray, n_classes: int, path: Path) -> np.ndarray:
    """The original graph's outputs on ``images`` (per image, as the reference of every rewrite); the network
    must take the input spec and give N x n_classes."""
    session = _session(model, path, "")
    batch = io.batch
    try:
        out = run(session, images, batch)
    except Exception as exc:  # noqa: BLE001 - ORT's pybind errors: the network cannot take this input
        raise ImportRefused(
            f"'{path}' cannot take a {shape_text([batch or len(images), *images.shape[1:]])} input "
            f"(height x width {images.shape[2]}x{images.shape[3]}): ONNX Runtime says {first_line(exc, 160)}; "
            "pass the --input-size the network was made for."
        ) from exc
    out = out[: len(images)] if batch is None else out
    if out.ndim != 2 or out.shape[0] != len(images):
        raise ImportRefused(
            f"'{path}' output '{io.output_name}' is {shape_text(['N', *out.shape[1:]])} when run, not the N x C "
            "scores of a classifier; edgecnn imports image classifiers (one N x C output)."
        )
    if out.shape[1] != n_classes:
        raise ImportRefused(class_count_error(path, out.shape[1], n_classes))
    return out


def class_count_error(path: Path, outputs: int, n_classes: int) -> str:
    return (
        f"'{path}' gives {outputs} scores per image, one per class, and {n_classes} class name(s) were given; "
        f"pass a --classes file with {outputs} lines (one name per output, in order) or --num-classes {outputs}."
    )


def _free_reshape_batch(model: onnx.ModelProto, batch: int) -> int:
    """Reshapes of computed tensors whose constant target shape starts with the fixed ``batch``: that entry
    becomes -1 ("whatever the element count says"), or 0 ("the input's first dimension") when another entry
    is already -1, through a new constant (the old one may be shared). Returns how many were freed."""
    g = model.graph
    consts = {t.name: t for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    done = 0
    for node in g.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[0] in consts:
            continue
        target = consts.get(node.input[1])
        shape = numpy_helper.to_array(target) if target is not None else None
        if shape is None or shape.ndim != 1 or not shape.size or int(shape[0]) != batch:
            continue
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        if -1 in shape[1:] and allowzero:
            continue  # neither -1 nor 0 can stand for the batch here
        freed = shape.copy()
        freed[0] = 0 if -1 in shape[1:] else -1
        name = f"{node.input[1]}__edgecnn_batch{done}"
        g.initializer.append(numpy_helper.from_array(freed, name))
        node.input[1] = name
        done += 1
    return done


def make_dynamic(model, io: GraphIO, images, reference, path: Path) -> tuple[onnx.ModelProto | None, str]:
    """``model`` with its fixed batch made dynamic, proved on ``images`` (whole set, then one image) against
    ``reference``; (None, why) when it cannot be had."""
    why = "the graph does not run with another batch size"
    for free in (False, True):
        cand = copy.deepcopy(model)
        inits = {t.name for t in cand.graph.initializer}
        for vi in (next(i for i in cand.graph.input if i.name not in inits), cand.graph.output[0]):
            dims = vi.type.tensor_type.shape.dim
            if dims:
                dims[0].Clear()
                dims[0].dim_param = BATCH
        del cand.graph.value_info[:]  # shapes recorded at the fixed batch would contradict the new one
        freed = _free_reshape_batch(cand, io.batch) if free else 0
        if free and not freed:
            break
        try:
            out = run(_session(cand, path, "the dynamic-batch rewrite of "), images, None)
        except Exception as exc:  # noqa: BLE001 - ORT's errors: this candidate cannot run, try the next
            why = f"with a dynamic batch ONNX Runtime says {first_line(exc, 120)}"
            continue
        cmp = compare_outputs(np.concatenate([reference, reference[:1]]), out) if out.ndim == 2 else None
        if cmp is not None and out.shape == (len(images) + 1, reference.shape[1]) and cmp["max_rel"] <= PARITY_MAX_REL:
            how = f", {freed} reshape(s) that hard-coded batch {io.batch} freed" if freed else ""
            return cand, f"batch {io.batch} -> dynamic ('{BATCH}'){how}"
        why = "with a dynamic batch the graph computes other logits"
    return None, why


@dataclass
class Rewritten:
    """The graph to write (None: the original bytes, untouched), what was done to it and the parity proof."""

    model: onnx.ModelProto | None
    rewrites: list
    parity: dict | None
    batch: int | None  # the fixed batch left in the written graph (None: dynamic)
    batch_note: str | None


def rewrite(model, io: GraphIO, opts: ImportOptions, images, reference, path: Path) -> Rewritten:
    """Opset conversion (below 13, or --opset), a dynamic batch, onnxslim (--simplify): each only where needed,
    then the parity of the result against the original on the same images; ImportRefused when it differs."""
    work, rewrites, batch, note = model, [], io.batch, None
    target = opts.opset or max(io.opset, MIN_OPSET)
    if target != io.opset:
        try:
            work = version_converter.convert_version(work, target)
        except Exception as exc:  # noqa: BLE001 - the converter raises plain RuntimeErrors from C++
            raise ImportRefused(
                f"'{path}' cannot be converted from opset {io.opset} to {target} ({first_line(exc)}); re-export "
                f"the model at opset {target} or newer."
            ) from exc
        rewrites.append(f"opset {io.opset} -> {target} (onnx.version_converter)")
    if batch is not None and opts.dynamic_batch:
        dynamic, how = make_dynamic(work, io, images, reference, path)
        if dynamic is not None:
            work, batch = dynamic, None
            rewrites.append(how)
        else:
            note = f"batch kept fixed at {batch}: {how}"
            warnings.warn(f"'{path}': {note}; every run feeds batches of {batch}.", stacklevel=3)
    if opts.simplify:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                slim = onnxslim.slim(work)
            except Exception as exc:  # noqa: BLE001 - onnxslim's failures are its own: keep the graph, say so
                slim, note = None, f"onnxslim failed ({first_line(exc)}); graph kept unsimplified"
        if slim is not None:
            work = slim
            rewrites.append(
                f"onnxslim {onnxslim.__version__} ({len(model.graph.node)} -> {len(slim.graph.node)} nodes)"
            )
    if not rewrites:
        return Rewritten(None, [], None, batch, note)
    parity = measure(work, io, images, reference, batch, path)
    return Rewritten(work, rewrites, parity, batch, note)


def measure(work, io: GraphIO, images, reference, batch: int | None, path: Path) -> dict:
    """Parity of the rewritten graph against the original's outputs; ImportRefused when it computes other logits."""
    try:
        onnx.checker.check_model(work)
        out = run(_session(work, path, "the rewritten "), images, batch)
    except onnx.checker.ValidationError as exc:
        raise ImportRefused(f"the rewritten graph of '{path}' fails onnx.checker ({first_line(exc)}).") from exc
    except EdgeCnnError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT's errors
        raise ImportRefused(
            f"the rewritten graph of '{path}' does not run in ONNX Runtime ({first_line(exc)}); import it with "
            "--no-simplify / --static-batch / another --opset to find the rewrite that breaks it."
        ) from exc
    ref = reference if batch else np.concatenate([reference, reference[:1]])
    parity = compare_outputs(ref, out)
    parity.update(runs=int(len(out)), atol=PARITY_ATOL_FP32, within_atol=parity["max_abs"] <= PARITY_ATOL_FP32)
    if parity["max_rel"] > PARITY_MAX_REL:
        raise ImportRefused(
            f"the rewritten graph of '{path}' disagrees with the original on {len(images)} real images: max abs "
            f"{parity['max_abs']:.3g} = {100 * parity['max_rel']:.2g}% of the largest logit, top-1 agreement "
            f"{100 * parity['top1_agreement']:.0f}%; import it with --no-simplify / --static-batch / another --opset."
        )
    return parity
