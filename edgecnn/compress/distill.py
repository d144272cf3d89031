"""Knowledge distillation: train a student on a teacher's softened outputs (Hinton, Vinyals, Dean 2015),
optionally also matching intermediate feature maps (FitNets, Romero et al. 2015).

Loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)
      [+ feature_weight * sum over pairs of MSE(adapter(student_feature), teacher_feature)].

The T^2 factor keeps the gradient scale of the soft term independent of the temperature. The loop is
``edgecnn.train.fit`` with this loss plugged in, so distillation, plain training and fine-tuning after
pruning share one implementation (schedule, AMP, progress, history).

The student is either a zoo model name (trained from ``student_weights``, by default from scratch) or
a torch artifact - e.g. the pruned version of the teacher, which is how ``prune --distill`` uses this.
The stage is ``distill(student, teacher, out, DistillOptions(...))``; the rules on the options live in
:meth:`DistillOptions.validate` (and :func:`check_kd`, shared with ``prune --distill``).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..artifact import Artifact, check_out, is_artifact
from ..errors import ArtifactError, InvalidInput, OptionError
from ..evaluation import evaluate_module
from ..limits import MAX_EPOCHS
from ..models import build_model, load_torch_model, save_torch_artifact, spec_for, torch_artifact, unknown_layer
from ..options import bounded
from ..train import FitOptions, TrainConfig, fit
from .teacher import check_teacher

log = logging.getLogger("edgecnn")

__all__ = ["distill", "DistillOptions", "kd_loss", "KnowledgeDistillationLoss", "check_compatible", "check_kd"]


def kd_loss(
    student_logits,
    teacher_logits,
    targets,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
):
    """Hinton KD loss: alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, targets)."""
    t = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    if alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student_logits.float(), targets, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


def check_kd(temperature: float, alpha: float, feature_weight: float = 1.0) -> None:
    """The rules on the distillation loss's settings (``distill`` and ``prune --distill``)."""
    if not temperature > 0:
        raise OptionError(f"temperature must be > 0, got {temperature}; 4 is a common choice (1 = no softening).")
    if not 0.0 <= alpha <= 1.0:
        raise OptionError(f"alpha must be in [0, 1] (weight of the distillation term), got {alpha}.")
    if feature_weight < 0:
        raise OptionError(f"feature weight must be >= 0, got {feature_weight}.")


class KnowledgeDistillationLoss:
    """``fit``'s loss_fn: runs the frozen teacher on the same (augmented) batch and returns the KD loss.

    The teacher is held outside the trained module (so its parameters are neither optimised nor switched
    to train mode). ``input_affine`` (scale, shift per channel) re-normalises the student's input for a
    teacher trained with another mean/std. Feature pairs are captured with forward hooks; a student
    feature with a different channel count goes through a trainable 1x1 convolution (in ``adapters``, which
    the caller must train together with the student - see :class:`StudentWithAdapters`).
    """

    def __init__(
        self,
        teacher,
        *,
        temperature: float = 4.0,
        alpha: float = 0.9,
        label_smoothing: float = 0.0,
        feature_pairs: Sequence[tuple[str, str]] = (),
        feature_weight: float = 1.0,
        adapters=None,
        student=None,
        input_affine=None,
    ):
        check_kd(temperature, alpha, feature_weight)
        self._teacher = [teacher.eval()]  # a list: never registered as a submodule anywhere
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.label_smoothing = float(label_smoothing)
        self.feature_pairs = list(feature_pairs)
        self.feature_weight = float(feature_weight)
        self.adapters = adapters
        self.input_affine = input_affine
        self._student_feats: dict[str, object] = {}
        self._teacher_feats: dict[str, object] = {}
        self._hooks = []
        if self.feature_pairs:
            if student is None:
                raise ValueError("feature pairs need the student module")
            s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
            for s_name, t_name in self.feature_pairs:
                self._hooks.append(s_mods[s_name].register_forward_hook(_store(self._student_feats, s_name)))
                self._hooks.append(t_mods[t_name].register_forward_hook(_store(self._teacher_feats, t_name)))

    @property
    def teacher(self):
        return self._teacher[0]

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def teacher_logits(self, x):
        teacher = self.teacher
        p = next(teacher.parameters())
        if p.device != x.device:
            teacher.to(x.device)
        if self.input_affine is not None:
            scale, shift = (t.to(x.device) for t in self.input_affine)
            x = x * scale + shift
        with torch.no_grad():
            return teacher(x)

    def __call__(self, logits, targets, inputs):
        t_logits = self.teacher_logits(inputs)
        loss = kd_loss(
            logits,
            t_logits,
            targets,
            temperature=self.temperature,
            alpha=self.alpha,
            label_smoothing=self.label_smoothing,
        )
        if self.feature_pairs and self.feature_weight > 0:
            feat = 0.0
            for s_name, t_name in self.feature_pairs:
                s = self._student_feats.pop(s_name)
                t = self._teacher_feats.pop(t_name).detach()
                if self.adapters is not None and _key(s_name, t_name) in self.adapters:
                    s = self.adapters[_key(s_name, t_name)](s)
                if s.shape[-2:] != t.shape[-2:]:
                    s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
                feat = feat + F.mse_loss(s.float(), t.float())
            loss = loss + self.feature_weight * feat
        return loss


def _store(bucket: dict, name: str):
    def hook(module, inputs, output):
        bucket[name] = output

    return hook


def _key(s_name: str, t_name: str) -> str:
    # ModuleDict keys may not contain dots
    return f"{s_name}__{t_name}".replace(".", "_")


class StudentWithAdapters(nn.Module):
    """Trains a student and the 1x1 feature adapters together; its forward is the student's."""

    def __init__(self, student: nn.Module, adapters: nn.ModuleDict):
        super().__init__()
        self.student = student
        self.adapters = adapters

    def forward(self, x):
        return self.student(x)


class Renormalised(nn.Module):
    """A teacher fed the student's input: ``x * scale + shift`` per channel re-normalises it first."""

    def __init__(self, inner: nn.Module, affine):
        super().__init__()
        self.inner = inner
        self.scale, self.shift = affine

    def forward(self, x):
        return self.inner(x * self.scale + self.shift)


def check_compatible(
    student_input: dict,
    teacher_input: dict,
    student_classes: int,
    teacher_classes: int,
    *,
    student_name: str = "student",
    teacher_name: str = "teacher",
) -> None:
    """Raise InvalidInput when the two networks cannot see the same batch or predict different label sets."""
    if student_classes != teacher_classes:
        raise InvalidInput(
            f"The teacher predicts {teacher_classes} classes and the {student_name} {student_classes}; distillation "
            "matches the two output distributions class by class - use a teacher trained on the same classes."
        )
    s = (int(student_input["channels"]), int(student_input["height"]), int(student_input["width"]))
    t = (int(teacher_input["channels"]), int(teacher_input["height"]), int(teacher_input["width"]))
    if s != t:
        raise InvalidInput(
            f"The {student_name} takes {s[0]}x{s[1]}x{s[2]} inputs but the teacher ({teacher_name}) takes "
            f"{t[0]}x{t[1]}x{t[2]}; both must see the same images - use a student with the teacher's input size "
            f"(build it with --input-size {t[1]}x{t[2]} --in-channels {t[0]}) or a teacher trained at "
            f"{s[1]}x{s[2]}."
        )


def _input_affine(student_input: dict, teacher_input: dict):
    """Per-channel (scale, shift) turning the student's normalised input into the teacher's, or None."""
    ms, ss = student_input["mean"], student_input["std"]
    mt, st = teacher_input["mean"], teacher_input["std"]
    if list(ms) == list(mt) and list(ss) == list(st):
        return None
    ms, ss, mt, st = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (ms, ss, mt, st))
    # x_s = (p - ms) / ss  ->  p = x_s * ss + ms  ->  x_t = (p - mt) / st
    return ss / st, (ms - mt) / st


def _resolve_layers(model, names: Sequence[str], who: str) -> None:
    missing = unknown_layer(model, names)
    if missing:
        raise InvalidInput(
            f"The {who} has no layer '{missing[0]}'.{missing[1]} "
            "Name layers by their module path (e.g. layer3 or features.10)."
        )


def _feature_channels(student, teacher, pairs, input_shape) -> list[tuple[int, int]]:
    s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
    got_s, got_t, hooks = {}, {}, []
    for s_name, t_name in pairs:
        hooks.append(s_mods[s_name].register_forward_hook(_store(got_s, s_name)))
        hooks.append(t_mods[t_name].register_forward_hook(_store(got_t, t_name)))
    try:
        was_s, was_t = student.training, teacher.training
        student.eval(), teacher.eval()
        with torch.no_grad():
            x = torch.zeros(1, *input_shape)
            student(x), teacher(x)
        student.train(was_s), teacher.train(was_t)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for s_name, t_name in pairs:
        s, t = got_s.get(s_name), got_t.get(t_name)
        for name, f, who in ((s_name, s, "student"), (t_name, t, "teacher")):
            if not isinstance(f, torch.Tensor) or f.dim() != 4:
                shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise InvalidInput(
                    f"The {who} layer '{name}' outputs {shape}, not a feature map (N,C,H,W); "
                    "pick a convolutional block (e.g. layer3 of a ResNet)."
                )
        out.append((int(s.shape[1]), int(t.shape[1])))
    return out


def build_kd(
    student,
    teacher,
    *,
    input_shape,
    temperature=4.0,
    alpha=0.9,
    label_smoothing=0.0,
    feature_layers: Sequence[tuple[str, str]] | None = None,
    feature_weight: float = 1.0,
    input_affine=None,
):
    """(module to train, loss_fn) for ``fit``: the student alone, or the student plus 1x1 adapters."""
    check_kd(temperature, alpha, feature_weight)
    pairs = [tuple(p) for p in (feature_layers or [])]
    adapters = None
    trained = student
    if pairs:
        _resolve_layers(student, [s for s, _ in pairs], "student")
        _resolve_layers(teacher, [t for _, t in pairs], "teacher")
        adapters = nn.ModuleDict()
        for (s_name, t_name), (cs, ct) in zip(pairs, _feature_channels(student, teacher, pairs, input_shape)):
            if cs != ct:
                adapters[_key(s_name, t_name)] = nn.Conv2d(cs, ct, kernel_size=1, bias=False)
        trained = StudentWithAdapters(student, adapters)
    loss = KnowledgeDistillationLoss(
        teacher,
        temperature=temperature,
        alpha=alpha,
        label_smoothing=label_smoothing,
        feature_pairs=pairs,
        feature_weight=feature_weight,
        adapters=adapters,
        student=student,
        input_affine=input_affine,
    )
    return trained, loss


def parse_feature_pair(text: str) -> tuple[str, str]:
    """'layer3:layer3' -> ('layer3', 'layer3'); a lone name means the same layer in both networks."""
    parts = text.split(":")
    if len(parts) == 1 and parts[0]:
        return parts[0], parts[0]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise OptionError(f"'{text}' is not a feature pair; write STUDENT_LAYER:TEACHER_LAYER (e.g. layer3:layer3).")
    return parts[0], parts[1]


# -- options ---------------------------------------------------------------------------------------
@dataclass
class DistillOptions(FitOptions):
    """How to distil: ``epochs`` on ``data`` (required) at ``temperature`` with ``alpha`` on the soft term;
    ``feature_layers`` pairs (student layer, teacher layer) - or 'S:T' / 'S' texts - matched with
    ``feature_weight``; ``student_weights`` initialises a student given by name. Learning rate, batch
    size, seed, device and a TrainConfig for the optimiser: :class:`~edgecnn.train.FitOptions` (the
    default lr is 0.05 from scratch, 0.01 for a student artifact)."""

    epochs: int = bounded(10, 0, MAX_EPOCHS)
    temperature: float = bounded(4.0, 0, 100, lo_open=True)
    alpha: float = bounded(0.9, 0, 1)
    feature_layers: tuple[tuple[str, str], ...] = ()
    feature_weight: float = bounded(1.0, 0, 1000)
    student_weights: str = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.feature_layers = tuple(
            parse_feature_pair(p) if isinstance(p, str) else tuple(p) for p in (self.feature_layers or ())
        )

    def validate(self) -> None:
        if self.data is None:
            raise OptionError("Distillation trains on data: pass --data digits or a folder of class sub-folders.")
        if self.epochs < 1:
            raise OptionError(f"epochs must be >= 1 to distil anything, got {self.epochs}.")
        check_kd(self.temperature, self.alpha, self.feature_weight)
        for pair in self.feature_layers:
            if len(pair) != 2 or not all(isinstance(n, str) and n for n in pair):
                raise OptionError(f"{pair!r} is not a feature pair; give (STUDENT_LAYER, TEACHER_LAYER) names.")
        super().validate()


# -- the stage -------------------------------------------------------------------------------------
@dataclass
class _Student:
    """The network being distilled and what its artifact records."""

    model: nn.Module
    name: str
    input_spec: dict
    classes: list[str]
    structure: dict | None
    weights_info: dict
    artifact: Artifact | None = None  # the student artifact, or the artifact its weights came from


def _student(student, teacher: Artifact, student_weights: str) -> _Student:
    """A student artifact (its input must be the teacher's), or a zoo model built for the teacher's input."""
    if isinstance(student, Artifact) or (isinstance(student, (str, os.PathLike)) and is_artifact(student)):
        art = student if isinstance(student, Artifact) else Artifact.load(student, formats=("torch",))
        if art.format != "torch":
            raise ArtifactError(
                f"The student '{art.path}' is a {art.format} artifact; pass a torch artifact or a model name."
            )
        check_compatible(
            art.input,
            teacher.input,
            art.num_classes,
            teacher.num_classes,
            student_name=f"student ({art.model})",
            teacher_name=teacher.model,
        )
        return _Student(
            model=load_torch_model(art),
            name=art.model,
            input_spec=dict(art.input),
            classes=art.classes,
            structure=(art.manifest.get("architecture") or {}).get("structure"),
            weights_info={"source": f"artifact {art.path}"},
            artifact=art,
        )
    if isinstance(student, (str, os.PathLike)) and Path(str(student)).exists():
        raise ArtifactError(
            f"Student '{student}' is a path but not an edgecnn artifact (no manifest.json); "
            "pass a model name (e.g. resnet18) or a torch artifact directory."
        )
    spec = spec_for(student)  # a zoo name, torchvision:/timm:NAME, FILE.py:fn or module:fn
    name = spec.name
    c, h, w = teacher.input_shape
    if min(h, w) < spec.min_input:
        raise InvalidInput(
            f"The student {name} needs inputs of at least {spec.min_input}x{spec.min_input} "
            f"but the teacher ({teacher.model}) takes {c}x{h}x{w}; pick a student that accepts "
            "the teacher's input size, or a teacher trained on larger images."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = build_model(
            spec,
            weights=student_weights,
            num_classes=teacher.num_classes,
            in_channels=c,
            input_size=(h, w),
            warn_random=False,
        )
    pupil = _Student(
        model=model,
        name=name,
        input_spec=dict(teacher.input),
        classes=teacher.classes,
        structure=None,
        weights_info={"source": student_weights, **({"report": info["report"]} if info.get("report") else {})},
    )
    if info.get("parent") is not None:  # --student-weights pointed at an artifact
        pupil.artifact = info["parent"]
        check_compatible(
            pupil.artifact.input,
            teacher.input,
            pupil.artifact.num_classes,
            teacher.num_classes,
            student_name=f"student weights ({pupil.artifact.path})",
            teacher_name=teacher.model,
        )
        pupil.input_spec = dict(pupil.artifact.input)
    return pupil


def distill(student, teacher, out: str | os.PathLike, options: DistillOptions, *, progress: bool = True) -> Artifact:
    """The distill stage: train ``student`` against ``teacher`` on ``options.data``; write a torch artifact.

    ``student`` is a zoo model name (built with the teacher's input record - size, channels and
    normalisation - and initialised from ``options.student_weights``) or a torch artifact / its path
    (e.g. the pruned teacher), whose input must have the teacher's shape; a different mean/std is
    bridged by re-normalising the teacher's input. ``options.config`` (a TrainConfig) sets the
    optimiser; its epochs are ``options.epochs``.
    """
    options.validate()
    check_out(out, student, teacher)
    teacher = torch_artifact(
        teacher,
        who="The teacher ",
        why="distillation needs the torch artifact it was made from (the one written by 'edgecnn train')",
    )
    teacher_model = load_torch_model(teacher)
    pupil = _student(student, teacher, options.student_weights)
    n = teacher.num_classes
    train_set = options.dataset(pupil.input_spec, "train", num_classes=n, augment=True)
    options.data.check_classes(
        train_set.classes, n, who="the teacher", fix="distil on the data the teacher was trained on"
    )
    val_set = options.dataset(pupil.input_spec, "val", num_classes=n)
    affine = _input_affine(pupil.input_spec, teacher.input)
    teacher_eval = teacher_model if affine is None else Renormalised(teacher_model, affine)
    scores = {
        "teacher_top1": evaluate_module(teacher_eval, val_set, device="cpu")["top1"],
        "top1_before": (
            evaluate_module(pupil.model, val_set, device="cpu")["top1"] if pupil.artifact is not None else None
        ),
    }
    scores["teacher_top1_augmented"] = check_teacher(
        teacher_eval, train_set, scores["teacher_top1"], options.policy, seed=options.seed
    )
    config = options.train_config(options.epochs, default_lr=0.01 if pupil.artifact is not None else None)
    trained, loss_fn = build_kd(
        pupil.model,
        copy.deepcopy(teacher_model),
        input_shape=teacher.input_shape,
        temperature=options.temperature,
        alpha=options.alpha,
        label_smoothing=config.label_smoothing,
        feature_layers=options.feature_layers,
        feature_weight=options.feature_weight,
        input_affine=affine,
    )
    try:
        result = fit(trained, train_set, val_set, config, loss_fn=loss_fn, progress=progress)
    finally:
        loss_fn.close()
    pupil.model.to("cpu").eval()
    final = evaluate_module(pupil.model, val_set, device="cpu")
    scores.update(
        top1=final["top1"],
        top5=final["top5"],
        train_seconds=round(result["seconds"], 2),
        adapters=sorted(loss_fn.adapters.keys()) if loss_fn.adapters is not None else [],
        renormalised=affine is not None,
    )
    return _record(out, pupil, teacher, options, config, scores, result["history"])


def _record(
    out,
    pupil: _Student,
    teacher: Artifact,
    options: DistillOptions,
    config: TrainConfig,
    scores: dict,
    history: list[dict],
) -> Artifact:
    """The distillation report, the stage parameters and metrics, and the student's artifact."""
    pairs = [list(p) for p in options.feature_layers]
    params = {
        "student": pupil.name if pupil.artifact is None else str(pupil.artifact.path),
        "teacher": str(teacher.path),
        "data": options.data.describe("train"),
        "epochs": options.epochs,
        "temperature": options.temperature,
        "alpha": options.alpha,
        "feature_layers": pairs,
        "feature_weight": options.feature_weight,
        "student_weights": options.student_weights if pupil.artifact is None else None,
        **{k: v for k, v in config.as_dict().items() if k != "epochs"},
        "lr": config.resolved_lr(),
        "augment": config.augment.record(pupil.input_spec["channels"], options.data),
    }
    metrics = {
        "top1": scores["top1"],
        "top5": scores["top5"],
        "eval_data": options.data.describe("val"),
        "teacher_top1": scores["teacher_top1"],
        "train_seconds": scores["train_seconds"],
    }
    if scores["top1_before"] is not None:
        metrics["top1_before"] = scores["top1_before"]
    report = {
        "teacher": teacher.ref(),
        "teacher_model": teacher.model,
        "student_model": pupil.name,
        "student_init": pupil.weights_info,
        "temperature": options.temperature,
        "alpha": options.alpha,
        "feature_layers": pairs,
        "adapters": scores["adapters"],
        "input_renormalised": scores["renormalised"],
        "top1": scores["top1"],
        "teacher_top1": scores["teacher_top1"],
        "teacher_top1_augmented": scores["teacher_top1_augmented"],
        "top1_before": scores["top1_before"],
    }
    parent = pupil.artifact if pupil.artifact is not None else teacher
    return save_torch_artifact(
        pupil.model,
        out,
        name=pupil.name,
        input_spec=pupil.input_spec,
        classes=pupil.classes,
        stage="distill",
        params=params,
        parent=parent,
        metrics=metrics,
        structure=pupil.structure,
        extra={"distillation": report, "history": history},
    )
