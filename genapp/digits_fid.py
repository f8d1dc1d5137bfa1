"""A Frechet distance for 8x8 digits, in the feature space of a small digit classifier trained on the same data.

FID (Heusel et al. 2017) with Inception features makes no sense at 8x8, so the features are the penultimate layer
(64 units) of a tiny CNN trained in seconds on scikit-learn's digits. The number means little alone; it is read
against its floor, the same distance between two random halves of the real data (finite-sample noise and the
spread of real digits):

    fid = DigitsFID()                 # trains the classifier (CPU, a few seconds, seeded)
    fid.floor                         # FD(half A, half B)
    fid.score(samples)                # {"fd": ..., "floor": ..., "ratio": fd / floor}

`score` takes as many samples as a half holds (899), rounds them to the 17 grey levels the data has, and averages
their distance to each half, so model and floor are measured at the same sample sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genapp.data.images import ImageDataset, load_digits, quantize

FEATURE_DIM = 64


class DigitClassifier(nn.Module):
    """(n, 1, 8, 8) -> 10 logits; `features` gives the 64 penultimate activations."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, FEATURE_DIM), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def train_classifier(data: ImageDataset, epochs: int = 40, seed: int = 0) -> DigitClassifier:
    """Adam on cross-entropy over `data` (with labels), on the CPU so that the features do not depend on the device."""
    if data.labels is None:
        raise ValueError("the classifier needs labelled images")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=gen).split(128):
            loss = nn.functional.cross_entropy(model(data.images[idx]), data.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) between Gaussians fitted to features a (n, d) and b (m, d).

    tr (S_a S_b)^{1/2} = sum of sqrt(eigenvalues of S_a^{1/2} S_b S_a^{1/2}) (a symmetric PSD matrix), in float64.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(cov_a)
    sqrt_a = (v * w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


class DigitsFID:
    """Frechet distance of generated digits to the real ones, and its floor (two halves of the real data)."""

    def __init__(self, data: ImageDataset | None = None, seed: int = 0, epochs: int = 40) -> None:
        self.data = load_digits() if data is None else data
        self.classifier = train_classifier(self.data, epochs=epochs, seed=seed)
        half_a, half_b = self.data.split(seed)
        self.halves = (self.features(half_a.images), self.features(half_b.images))
        self.floor = frechet_distance(*self.halves)
        self.num_samples = len(half_a.images)

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.classifier.features(x.detach().float().cpu())

    @torch.no_grad()
    def accuracy(self, data: ImageDataset | None = None) -> float:
        data = self.data if data is None else data
        return float((self.classifier(data.images).argmax(1) == data.labels).float().mean())

    def score(self, samples: Tensor) -> dict[str, float]:
        """FD of `samples` (n, 1, 8, 8) in [-1, 1], rounded to the data's grey levels, averaged over both halves."""
        if samples.shape[1:] != self.data.images.shape[1:]:
            raise ValueError(f"samples must have shape (n, {tuple(self.data.images.shape[1:])}), got {samples.shape}")
        feats = self.features(quantize(samples.cpu(), self.data.levels))
        fd = sum(frechet_distance(feats, half) for half in self.halves) / 2
        return {"fd": fd, "floor": self.floor, "ratio": fd / self.floor}
