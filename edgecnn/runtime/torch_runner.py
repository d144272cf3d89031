"""Eager PyTorch runner for torch artifacts."""

from __future__ import annotations

import numpy as np
import torch

from ..models import load_torch_model
from .base import Runner


class TorchRunner(Runner):
    kind = "torch"

    def _load(self) -> None:
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.model = load_torch_model(self.artifact).to(self.device).eval()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()
