"""The teacher of a distillation, checked against the batches it will see.

Distillation (``distill``, ``prune --distill``, QAT) runs the teacher on the student's own augmented batch
(the KD loss receives the very tensor the student was fed). When the augmentation changes what an image
means - a mirrored digit, upside-down text - the teacher's answers on those batches are wrong, and the
student learns them. :func:`check_teacher` scores the teacher on augmented training images before training
and warns when that is far below its held-out accuracy.
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import Subset

from ..data.augment import AugmentationWarning, AugmentPolicy
from ..evaluation import evaluate_module

__all__ = ["TEACHER_GAP", "TEACHER_SAMPLE", "channels_of", "check_teacher"]

#: a teacher whose top-1 on augmented training images is more than this (a fraction) below its held-out
#: top-1 is warned about: the augmentation changes what the images mean, so it would teach wrong answers
TEACHER_GAP = 0.15
TEACHER_SAMPLE = 512  # augmented training images the teacher is scored on


class _Sample(Subset):
    """Some images of a dataset, with its class names (what :func:`evaluate_module` needs)."""

    def __init__(self, dataset, indices):
        super().__init__(dataset, indices)
        self.classes = dataset.classes


def check_teacher(teacher, train_set, val_top1: float | None, policy: AugmentPolicy, *, seed: int = 0):
    """The teacher's top-1 on up to 512 augmented training images (None without augmentation); warns
    (:class:`~edgecnn.data.augment.AugmentationWarning`) when it is far below its held-out ``val_top1``."""
    if not policy or val_top1 is None:
        return None
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train_set), generator=g)[:TEACHER_SAMPLE].tolist()
    top1 = evaluate_module(teacher, _Sample(train_set, idx), device="cpu", workers=0)["top1"]
    if top1 < val_top1 - TEACHER_GAP:
        warnings.warn(
            f"The teacher scores {100 * top1:.1f} % on augmented training images but {100 * val_top1:.1f} % "
            f"held out: augmentation '{policy}' ({', '.join(policy.steps(channels_of(train_set)))}) changes what "
            "the images mean, so distillation would teach wrong answers (and training accuracy will look low); "
            "pass --augment light or none, or a policy file without those steps.",
            AugmentationWarning,
            stacklevel=2,
        )
    return top1


def channels_of(dataset) -> int:
    x, _ = dataset[0]
    return int(x.shape[0])
