"""Eager PyTorch runner for torch artifacts."""

from __future__ import annotations

import numpy as np

from .base import Runner


class TorchRunner(Runner):
    kind = "torch"

    def _load(self) -> None:
        import torch

        from ..models import load_torch_model

        if self.threads:
            torch.set_num_threads(int(self.threads))
        self._torch = torch
        self.model = load_torch_model(self.artifact).to(self.device).eval()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()
