"""The train stage and the options every training stage shares.

``train`` is the stage: build or load a zoo model, fit it, write a torch artifact (the loop, ``fit``:
:mod:`edgecnn.fitting`, re-exported here; scoring: :mod:`edgecnn.evaluation`; processes and devices:
:mod:`edgecnn.distributed`). ``fit`` is shared by ``train``, fine-tuning after pruning / sparsity,
distillation and QAT.

Options: :class:`TrainConfig` (the loop's settings) and :class:`FitOptions` (what every stage that trains
on ``--data`` shares) are :class:`~edgecnn.options.Options` whose ``validate()`` holds their rules, once.
Recipes: :func:`recipe` returns the settings we measured per model on the bundled digits; ``train`` uses
them for anything left unset, so ``edgecnn train lenet5 --data digits --out runs/lenet5`` reproduces the README.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .artifact import Artifact, check_out, is_artifact
from .checkpoint import check_resume_settings, checkpoint_path, read_checkpoint
from .data.augment import AugmentPolicy
from .data.shape import FolderInput, input_from_folder
from .data.source import DataSource
from .distributed import close_distributed, init_distributed, is_main_process, seed_everything
from .errors import DataError, InvalidInput, OptionError, WeightsError
from .evaluation import evaluate_module
from .fitting import LossFn, TrainConfig, TrainingDiverged, fit, lr_factor, make_optimizer
from .limits import MAX_BATCH, MAX_SEED
from .models import architecture_of, build_model, save_torch_artifact, spec_for
from .models.sources import check_input
from .options import Options, bounded, check_range

# re-exported: the loop lives in edgecnn.fitting, callers import it from here
__all__ = [
    "DIGITS_RECIPES",
    "MEASURED",
    "FitOptions",
    "LossFn",
    "TrainConfig",
    "TrainingDiverged",
    "checkpoint_path",
    "configure",
    "fit",
    "lr_factor",
    "make_optimizer",
    "read_checkpoint",
    "recipe",
    "train",
]


@dataclass
class FitOptions(Options):
    """What every stage that trains on ``data`` shares (prune / sparsify fine-tuning, distillation).

    ``config`` (a TrainConfig, or a mapping of its fields) sets the optimiser beyond ``lr`` and
    ``batch_size``; the stage's own epochs (and ``lr`` when given) replace its values."""

    data: DataSource | None = None
    lr: float | None = bounded(None, 0, 1e6, lo_open=True)  # default: the stage's (0.01 SGD for fine-tuning)
    batch_size: int = bounded(64, 1, MAX_BATCH)
    config: TrainConfig | None = None
    seed: int = bounded(0, 0, MAX_SEED)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    val_split: float = bounded(0.2, 0, 1, lo_open=True, hi_open=True)  # held-out fraction of a class-folder set
    skip_corrupt: bool = False
    augment: AugmentPolicy | None = None  # none | light | default | FILE; None: the config's, else 'default'

    def __post_init__(self) -> None:
        self.data = DataSource.optional(self.data)
        if isinstance(self.config, dict):
            self.config = TrainConfig.from_mapping(self.config, where="config")
        if self.augment is not None:
            self.augment = AugmentPolicy.parse(self.augment)

    @property
    def policy(self) -> AugmentPolicy:
        """The augmentation of the stage's training images: ``augment``, else the config's, else 'default'."""
        if self.augment is not None:
            return self.augment
        return self.config.augment if self.config is not None else AugmentPolicy.preset("default")

    def validate(self) -> None:
        if self.lr is not None and not self.lr > 0:
            raise OptionError(f"learning rate must be > 0, got {self.lr}.")
        if self.batch_size < 1:
            raise OptionError(f"batch size must be >= 1, got {self.batch_size}.")
        check_range("--val-split", self.val_split, 0, 1, True, True)
        if self.config is not None:
            self.config.validate()
        self.policy.validate()

    def as_dict(self) -> dict:
        out = super().as_dict()
        if self.config is not None:
            out["config"] = self.config.as_dict()
        return out

    def check_finetune(self, epochs: int) -> None:
        """The rules on ``--finetune-epochs``: >= 0, and training needs data."""
        check_range("--finetune-epochs", epochs, 0, None)
        if epochs == 0 and self.augment is not None:
            raise OptionError(
                f"--augment {self.augment} sets the fine-tuning images; add --finetune-epochs N (and --data)."
            )
        if epochs > 0 and self.data is None:
            raise OptionError(
                "--finetune-epochs needs training data: pass --data digits or a folder of class sub-folders."
            )

    def train_config(self, epochs: int, default_lr: float | None = 0.01) -> TrainConfig:
        """The TrainConfig of the stage's training run: ``epochs``, and ``lr`` (else ``default_lr``)."""
        if self.config is None:
            return TrainConfig(
                epochs=epochs,
                batch_size=self.batch_size,
                seed=self.seed,
                device=self.device,
                lr=self.lr if self.lr is not None else default_lr,
                augment=self.policy,
            )
        lr = {"lr": self.lr} if self.lr is not None else {}
        return dataclasses.replace(self.config, epochs=epochs, augment=self.policy, **lr)

    def training_record(self, config: TrainConfig | None, channels: int) -> dict | None:
        """What a manifest records about a stage's training run (None when there is none): the TrainConfig,
        its resolved lr and its augmentation as applied to input with ``channels`` channels."""
        if config is None or config.epochs == 0:
            return None
        fields = {k: v for k, v in config.as_dict().items() if k != "extra"}
        return fields | {"lr": config.resolved_lr(), "augment": config.augment.record(channels, self.data)}

    def dataset(self, input_spec: dict, split: str, *, num_classes: int, augment: bool = False):
        """The ``split`` ('train' | 'val') of ``data`` for a model with ``input_spec``; ``augment``: with the
        stage's augmentation :attr:`policy` (the training images of fine-tuning)."""
        return self.data.dataset(
            input_spec,
            split,
            val_split=self.val_split,
            seed=self.seed,
            augment=self.policy if augment else False,
            skip_corrupt=self.skip_corrupt,
            num_classes=num_classes,
        )


# -- recipes -----------------------------------------------------------------------------------------
# Measured on the bundled digits, held-out split (360 images), 2 CPU cores; see README "overview".
# Keys: in_channels / input_size (the model input) + TrainConfig fields.
DIGITS_RECIPES: dict[str, dict] = {
    # 61,706 params; ~15 s on 2 idle cores; >= 98.6 % top-1 over seeds 0-2.
    "lenet5": {
        "in_channels": 1,
        "input_size": 32,
        "epochs": 30,
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 0.1,
        "label_smoothing": 0.1,
        "weight_decay": 5e-4,
    },
    "resnet18": {
        "in_channels": 1,
        "input_size": 32,
        "epochs": 12,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "label_smoothing": 0.1,
        "weight_decay": 5e-4,
    },
}
# Any other zoo model on the digits: gray input at the smallest size >= 32 its architecture accepts.
_DIGITS_GENERIC = {
    "in_channels": 1,
    "epochs": 15,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.05,
    "label_smoothing": 0.1,
    "weight_decay": 5e-4,
}
#: measured recipes per kind of data source: (per model, any other model)
MEASURED = {"digits": (DIGITS_RECIPES, _DIGITS_GENERIC)}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def recipe(model_name, data) -> dict:
    """The recommended settings for ``model_name`` on ``data`` (a DataSource or its text): {"name",
    "in_channels", "input_size", "config": TrainConfig kwargs}. Only the bundled digits have a measured
    recipe; other data get TrainConfig's defaults at the model's own input."""
    spec = spec_for(model_name)
    model_name = spec.name
    source = DataSource.parse(data)
    if source.kind not in MEASURED:
        return {"name": "default", "in_channels": None, "input_size": None, "config": {}}
    per_model, generic = MEASURED[source.kind]
    settings = dict(per_model.get(model_name) or generic)
    size = settings.pop("input_size", None) or max(32, 8 * math.ceil(spec.min_input / 8))
    channels = settings.pop("in_channels")
    name = f"{source.kind}/{model_name if model_name in per_model else 'generic'}"
    return {"name": name, "in_channels": channels, "input_size": size, "config": settings}


def configure(model_name, data, *, resume: dict | None = None, **overrides) -> TrainConfig:
    """A TrainConfig: explicit ``overrides`` (None = unset) > the resumed checkpoint's config > the recipe."""
    unknown = set(overrides) - _CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
    base = dict(recipe(model_name, data)["config"])
    if resume is not None:
        base.update({k: v for k, v in (resume.get("config") or {}).items() if k in _CONFIG_FIELDS})
    base.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**base)
    config.validate()
    return config


# -- the stage --------------------------------------------------------------------------------------------
@dataclass
class _TrainRun:
    """What the train stage resolved before fitting, and records afterwards."""

    model_name: str
    source: DataSource
    out: Path
    weights: str
    recipe_name: str
    input_spec: dict
    classes: list[str]
    train_set: object
    val_set: object
    state: dict | None = None
    resume: str | os.PathLike | None = None
    checkpoint: Path | None = None
    input_from: FolderInput | None = None  # what the data suggested for the unset input size / channels
    input_why: str = ""  # where the input size / channels came from, in words
    model_source: dict | None = None  # how to rebuild a network that is not a zoo name (models.sources)


def _resume_state(resume, model_name: str) -> dict | None:
    """The checkpoint to continue from (None without ``resume``), checked against the model."""
    if resume is None:
        return None
    state = read_checkpoint(resume)
    if state.get("model_name") != model_name:
        raise WeightsError(
            f"Checkpoint '{resume}' is for {state.get('model_name')}, not {model_name}; resume it "
            f"with MODEL {state.get('model_name')}."
        )
    return state


def _input_spec(run: _TrainRun, spec, plan: dict, in_channels, input_size, stats: tuple = (None, None)) -> dict:
    """The model input: explicit > the resumed checkpoint's > a weights artifact's > the recipe's > what a
    folder of images suggests (:func:`~edgecnn.data.shape.input_from_folder`, kept in ``run.input_from``)."""
    state, weights, resume = run.state, run.weights, run.resume
    source_art = (
        Artifact.load(weights, formats=("torch",))
        if weights not in ("random", "imagenet") and is_artifact(weights)
        else None
    )
    if state is not None:
        arch = state["architecture"]
        defaults = (arch["in_channels"], tuple(arch["input_size"]))
    elif source_art is not None:
        defaults = (source_art.input_shape[0], source_art.input_shape[1:])
    else:
        defaults = (plan["in_channels"], plan["input_size"])
        if run.source.is_folder and defaults == (None, None) and (in_channels is None or input_size is None):
            run.input_from = input_from_folder(run.source.path, spec.min_input, min(spec.default_input[1:]))
            if run.input_from is not None:
                defaults = (run.input_from.channels, run.input_from.side)
    run.input_why = (
        "as given"
        if in_channels is not None and input_size is not None
        else "the checkpoint's"
        if state is not None
        else "the weights artifact's"
        if source_art is not None
        else run.input_from.describe()
        if run.input_from is not None
        else f"the {run.recipe_name} recipe's"
        if defaults[0] is not None
        else "the model's default"
    )
    in_channels = defaults[0] if in_channels is None else in_channels
    input_size = defaults[1] if input_size is None else input_size
    if state is not None:
        arch = state["architecture"]
        want = architecture_of(
            spec.name, num_classes=arch["num_classes"], in_channels=in_channels, input_size=input_size
        )
        if [want["in_channels"], want["input_size"]] != [arch["in_channels"], arch["input_size"]]:
            raise InvalidInput(
                f"Checkpoint '{resume}' was trained at {arch['in_channels']}x{arch['input_size'][0]}x"
                f"{arch['input_size'][1]}; drop --in-channels/--input-size when resuming."
            )
    input_spec = spec.input_spec(in_channels=in_channels, input_size=input_size, mean=stats[0], std=stats[1])
    if min(input_spec["height"], input_spec["width"]) < spec.min_input:  # raises the clear message
        spec.build(
            num_classes=1, in_channels=input_spec["channels"], input_size=(input_spec["height"], input_spec["width"])
        )
    return input_spec


def _announce(run: _TrainRun, config: TrainConfig) -> None:
    """Say, before minutes of training, which input and augmentation were chosen and why."""
    c, h, w = run.input_spec["channels"], run.input_spec["height"], run.input_spec["width"]
    why = run.input_why
    steps = config.augment.record(c, run.source)["steps"]
    tqdm.write(f"input {c}x{h}x{w} ({why})")
    tqdm.write(f"augment '{config.augment}': {', '.join(steps) if steps else 'none'}")


def _datasets(run: _TrainRun, config: TrainConfig, *, num_classes, val_split: float, skip_corrupt: bool) -> None:
    """Read the train / val splits into ``run`` and check them against the request and the checkpoint."""
    source = run.source
    kw = {"val_split": val_split, "skip_corrupt": skip_corrupt, "seed": config.seed, "num_classes": num_classes or 10}
    run.train_set = source.dataset(run.input_spec, "train", augment=config.augment, **kw)
    run.val_set = source.dataset(run.input_spec, "val", **kw)
    run.classes = list(run.train_set.classes)
    if num_classes is not None and num_classes != len(run.classes):
        raise InvalidInput(
            f"--num-classes {num_classes} but data '{source}' has {len(run.classes)} classes; drop --num-classes."
        )
    if len(run.val_set) == 0:
        raise DataError(f"Data '{source}' has no validation images; add a val/ folder or raise --val-split.")
    if run.state is not None:
        source.check_classes(
            run.classes,
            run.state["architecture"]["num_classes"],
            who=f"checkpoint '{run.resume}'",
            fix="resume on the data it was trained on",
        )


def _initial_model(spec, run: _TrainRun):
    """(model, weights info): the checkpoint's architecture, or the weights loaded into a fresh build."""
    c, h, w = run.input_spec["channels"], run.input_spec["height"], run.input_spec["width"]
    if run.state is not None:
        return spec.build(num_classes=len(run.classes), in_channels=c, input_size=(h, w)), {"weights": run.weights}
    with warnings.catch_warnings():
        if run.weights == "random":
            warnings.simplefilter("ignore")
        return build_model(
            spec, weights=run.weights, num_classes=len(run.classes), in_channels=c, input_size=(h, w), warn_random=False
        )


def train(
    model_name: str,
    *,
    data,
    out: str | Path,
    weights: str = "random",
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size=None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    config: TrainConfig | None = None,
    overrides: dict | None = None,
    val_split: float = 0.2,
    skip_corrupt: bool = False,
    progress: bool = True,
    resume: str | os.PathLike | None = None,
    checkpoint: bool = True,
    on_epoch_end: Callable | None = None,
):
    """The train stage: build/load ``model_name``, fit it on ``data``, write a torch artifact to ``out``.

    ``data`` is a DataSource or its text ('digits', 'synthetic[:N]', a folder). ``config`` is used as
    given; without it the config is :func:`configure`'s from ``overrides`` (TrainConfig fields, None =
    unset), the resumed checkpoint and :func:`recipe` for ``data``. Unset input size / channels come
    from the resumed checkpoint, a weights artifact, then the recipe. A checkpoint (``OUT.ckpt.pt``) is
    rewritten after every epoch; ``resume`` continues from one. Under torchrun only rank 0 writes; other
    ranks return None.
    """
    if config is not None and overrides:
        raise TypeError("pass a TrainConfig or overrides of the recipe's, not both")
    if resume is not None and weights != "random":
        raise OptionError("--resume restores the weights from the checkpoint; drop --weights.")
    spec = spec_for(model_name)  # a zoo name, torchvision:/timm:NAME, FILE.py:fn or module:fn
    model_name = spec.name
    source = DataSource.parse(data)
    out = Path(out)
    check_out(out, weights)
    state = _resume_state(resume, model_name)
    plan = recipe(spec, source)
    config = config or configure(spec, source, resume=state, **(overrides or {}))
    config.validate()
    check_resume_settings(state, config, resume)  # a resumed run keeps its checkpoint's settings
    run = _TrainRun(
        model_name=model_name,
        source=source,
        out=out,
        weights=weights,
        recipe_name=plan["name"],
        input_spec={},
        classes=[],
        train_set=None,
        val_set=None,
        state=state,
        resume=resume,
        checkpoint=checkpoint_path(out) if checkpoint else None,
        model_source=spec.source,
    )
    run.input_spec = _input_spec(run, spec, plan, in_channels, input_size, (mean, std))
    if progress and is_main_process():
        _announce(run, config)
    _datasets(run, config, num_classes=num_classes, val_split=val_split, skip_corrupt=skip_corrupt)
    check_input(spec, run.input_spec["channels"], (run.input_spec["height"], run.input_spec["width"]), len(run.classes))
    seed_everything(config.seed)  # the initial weights too: the same seed gives the same run
    model, info = _initial_model(spec, run)
    c, h, w = run.input_spec["channels"], run.input_spec["height"], run.input_spec["width"]
    meta = {
        "model_name": model_name,
        "classes": run.classes,
        "input": run.input_spec,
        "architecture": architecture_of(
            model_name, num_classes=len(run.classes), in_channels=c, input_size=(h, w), source=spec.source
        ),
    }
    owns_group = init_distributed(config.device)
    try:
        result = fit(
            model,
            run.train_set,
            run.val_set,
            config,
            progress=progress,
            checkpoint=run.checkpoint,
            checkpoint_meta=meta,
            resume=state,
            on_epoch_end=on_epoch_end,
        )
        if not is_main_process():
            return None
        return _record(run, model, config, result, info)
    finally:
        if owns_group:
            close_distributed()


def _record(run: _TrainRun, model, config: TrainConfig, result: dict, info: dict) -> Artifact:
    """Score the trained model on the held-out split and write the artifact (rank 0 only)."""
    final = evaluate_module(model, run.val_set, device=result["device"])
    model.to("cpu")
    skipped = len(getattr(run.train_set, "skipped", []) or []) + len(getattr(run.val_set, "skipped", []) or [])
    params = {
        "data": run.source.describe("train"),
        "weights": run.weights,
        "recipe": run.recipe_name,
        **asdict(config),
        "augment": config.augment.record(run.input_spec["channels"], run.source),
        "input_from": run.input_from.record() if run.input_from is not None else None,
        "lr": config.resolved_lr(),
        "world_size": result["world_size"],
        "resumed_from": str(run.resume) if run.resume is not None else None,
        "resumed_at_epoch": int(run.state["epoch"]) if run.state is not None else None,
        "skipped_images": skipped,
    }
    metrics = {
        "top1": final["top1"],
        "top5": final["top5"],
        "eval_data": run.source.describe("val"),
        "train_seconds": round(result["seconds"], 2),
        "train_cpu_seconds": round(result["cpu_seconds"], 2),
    }
    return save_torch_artifact(
        model,
        run.out,
        name=run.model_name,
        source=run.model_source,
        input_spec=run.input_spec,
        classes=run.classes,
        stage="train",
        params=params,
        parent=info.get("parent"),
        metrics=metrics,
        extra={
            "history": result["history"],
            "weights_report": info.get("report"),
            "checkpoint": str(run.checkpoint) if run.checkpoint is not None else None,
        },
    )
