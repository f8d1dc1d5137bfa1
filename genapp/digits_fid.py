"""A Frechet distance for digits (8x8, or MNIST's 28x28), in the feature space of a small digit classifier trained
on the same data.

FID (Heusel et al. 2017) with Inception features makes no sense at 8x8 (nor on 28x28 grey digits, far from
ImageNet), so the features are the penultimate layer (64 units) of a tiny CNN trained in seconds on the digits
themselves. The number means little alone; it is read against its floor, the same distance between two random
halves of the real data (finite-sample noise and the spread of real digits):

    fid = DigitsFID()                 # sklearn's 8x8 digits; trains the classifier (CPU, a few seconds, seeded)
    fid.floor                         # FD(half A, half B)
    fid.score(samples)                # {"fd": ..., "floor": ..., "ratio": fd / floor, "confident": ..., ...}
    DigitsFID(load_mnist(), num_samples=500, epochs=4)   # MNIST: two disjoint random sets of 500 real digits

`score` takes as many samples as a half holds (899 for the 8x8 digits, `num_samples` when given), rounds them to the
grey levels the data has (17, or 256), and averages their distance to each half, so model and floor are measured at
the same sample sizes (FD grows as n shrinks: a ratio is only meaningful at equal n).

At a few hundred samples FD is mostly estimation noise in 64 dimensions, and a model whose samples are less varied
than the data can score *below* its floor (ratio < 1) while half of them are squiggles. So `score` also reports
the share of samples the classifier reads as one digit with probability >= CONFIDENT (0.9), beside the same share
of the floor's real digits (`confident_real`): a direct "does it look like a digit" that FD cannot give.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genapp.data.images import ImageDataset, load_digits, quantize

FEATURE_DIM = 64
CONFIDENT = 0.9  # a sample "reads as a digit" when the classifier gives one class at least this probability


class DigitClassifier(nn.Module):
    """(n, 1, H, W) -> 10 logits; `features` gives the 64 penultimate activations. Two 3x3 convs and a 2x2 max-pool,
    then an average pool to 4x4 (the identity on 8x8 digits; 14x14 -> 4x4 on MNIST), so one design serves both."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 4 * 4, FEATURE_DIM), nn.ReLU(),
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


def share_stderr(share: float, n: int) -> float:
    """The binomial standard error sqrt(p (1 - p) / n) of a share p of n images."""
    return math.sqrt(share * (1 - share) / n)


class DigitsFID:
    """Frechet distance of generated digits to the real ones, and its floor (two halves of the real data)."""

    def __init__(self, data: ImageDataset | None = None, seed: int = 0, epochs: int = 40,
                 num_samples: int | None = None) -> None:
        """`data` (default: sklearn's 8x8 digits) with labels; the classifier trains on all of it for `epochs`. The
        floor compares the two halves of a random split (`num_samples=None`), or two disjoint random sets of
        `num_samples` images each (when sampling a whole half from the model would cost too much, e.g. MNIST)."""
        self.data = load_digits() if data is None else data
        self.classifier = train_classifier(self.data, epochs=epochs, seed=seed)
        if num_samples is None:
            half_a, half_b = (half.images for half in self.data.split(seed))
        else:
            if not 2 <= num_samples <= len(self.data) // 2:
                raise ValueError(f"num_samples must be in [2, {len(self.data) // 2}] for {len(self.data)} images, "
                                 f"got {num_samples}")
            perm = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(seed))
            half_a, half_b = self.data.images[perm[:num_samples]], self.data.images[perm[num_samples:2 * num_samples]]
        self.halves = (self.features(half_a), self.features(half_b))
        self.floor = frechet_distance(*self.halves)
        self.num_samples = len(half_a)
        self.confident_real = self.confident(half_a)

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.classifier.features(x.detach().float().cpu())

    @torch.no_grad()
    def accuracy(self, data: ImageDataset | None = None) -> float:
        data = self.data if data is None else data
        return float((self.classifier(data.images).argmax(1) == data.labels).float().mean())

    @torch.no_grad()
    def confident(self, images: Tensor) -> float:
        """Share of `images` (n, 1, H, W) on the data's grey levels that the classifier assigns to one digit with
        probability >= CONFIDENT."""
        probs = self.classifier(images.detach().float().cpu()).softmax(1)
        return float((probs.max(1).values >= CONFIDENT).float().mean())

    def score(self, samples: Tensor) -> dict[str, float]:
        """FD of `samples` (n, 1, H, W) in [-1, 1], rounded to the data's grey levels, averaged over both halves;
        the share of them read confidently as a digit, beside that of the floor's first set of real digits."""
        if samples.shape[1:] != self.data.images.shape[1:]:
            raise ValueError(f"samples must have shape (n, {tuple(self.data.images.shape[1:])}), got {samples.shape}")
        images = quantize(samples.cpu(), self.data.levels)
        feats = self.features(images)
        fd = sum(frechet_distance(feats, half) for half in self.halves) / 2
        confident = self.confident(images)
        return {"fd": fd, "floor": self.floor, "ratio": fd / self.floor, "confident": confident,
                "confident_stderr": share_stderr(confident, len(images)), "confident_real": self.confident_real,
                "confident_real_stderr": share_stderr(self.confident_real, self.num_samples)}
