"""``digits``: scikit-learn's bundled 8x8 handwritten digits with a small CNN (9 quantizable layers).

Fixed split (75 % train / 25 % test, stratified, seed 0). The CNN is trained on first use
(a few seconds on 2 cores) and cached; test accuracy is ~98-99 %. Calibration takes the first 512
training images, evaluation the test images; the remaining 835 training images are the
workload's ``train`` split (:func:`training_batches`), what QAT fine-tunes on.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from autocomp.workload import Workload
from autocomp.workloads._cache import cached_state

ARCH_VERSION = 1


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def block(i: int, o: int, k: int = 3) -> list[nn.Module]:
            return [nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, 16), *block(16, 32), nn.MaxPool2d(2),          # 8x8 -> 4x4
            *block(32, 32), *block(32, 64), nn.MaxPool2d(2),         # 4x4 -> 2x2
            *block(64, 64), *block(64, 64, k=1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test); images as float tensors [N, 1, 8, 8] in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)
    return (torch.from_numpy(xtr), torch.from_numpy(ytr).long(),
            torch.from_numpy(xte), torch.from_numpy(yte).long())


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 40,
                     lr: float = 2e-3, batch: int = 64, seed: int = 0) -> nn.Module:
    """Plain Adam + cosine schedule; deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def _trained_cnn() -> nn.Module:
    xtr, ytr, _, _ = digits_data()

    def train() -> dict:
        torch.manual_seed(0)
        with torch.random.fork_rng():
            return train_classifier(DigitsCNN(), xtr, ytr).state_dict()

    model = DigitsCNN()
    model.load_state_dict(cached_state(f"digits-cnn-v{ARCH_VERSION}", train))
    return model.eval()


CALIB_IMAGES = 512   # the first training images calibrate; the rest are the ``train`` split


def training_batches(x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The training images not used for calibration, in batches (``calib`` and ``eval`` never see them).

    Example:
        >>> xtr, ytr, _, _ = digits_data()                     # doctest: +SKIP
        >>> sum(len(b[1]) for b in training_batches(xtr, ytr))  # doctest: +SKIP
        835
    """
    return [(x[i:i + batch], y[i:i + batch]) for i in range(CALIB_IMAGES, len(x), batch)]


def digits() -> Workload:
    """The built-in ``digits`` workload."""
    xtr, ytr, xte, yte = digits_data()
    calib = [(xtr[i:i + 128], ytr[i:i + 128]) for i in range(0, 512, 128)]
    train = training_batches(xtr, ytr)
    return Workload(name="digits", train=train, model_factory=_trained_cnn, calib=calib, eval=[(xte, yte)])
