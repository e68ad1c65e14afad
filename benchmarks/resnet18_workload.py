"""A benchmark-only workload: torchvision resnet18 with random weights on random 64x64 images."""
from __future__ import annotations

import torch

from autocomp.workload import Workload


def make() -> Workload:
    import torchvision

    def model():
        torch.manual_seed(0)
        return torchvision.models.resnet18(num_classes=10).eval()

    g = torch.Generator().manual_seed(0)
    calib = [(torch.randn(16, 3, 64, 64, generator=g), torch.randint(0, 10, (16,), generator=g))]
    return Workload(name="resnet18-random", model_factory=model, calib=calib, eval=calib)
