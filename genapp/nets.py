"""Networks: eps_theta for DDPMs (an MLP for 2-D data, a small UNet for images) and a plain MLP conditioner.

The networks know nothing of the lecture's math; `diffusion.py` and `flows.py` give their outputs meaning.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(k: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style embedding of the step index k (Vaswani et al. 2017; Ho et al. 2020, sec. 4).

    k: (n,) integer or float tensor -> (n, dim) with [sin(k w_j), cos(k w_j)], w_j log-spaced in [1/max_period, 1].
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=k.device, dtype=torch.float32) / half)
    angles = k.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FourierFeatures(nn.Module):
    """x -> [sin(2 pi f_j x), cos(2 pi f_j x)] at log-spaced frequencies f_j (Tancik et al. 2020).

    A plain MLP is biased towards smooth functions; these features let eps_theta draw the sharp edges of
    checkerboard squares and thin spiral arms (without them those come out as round blobs).
    """

    def __init__(self, in_dim: int, num_freqs: int, min_freq: float = 0.1, max_freq: float = 8.0) -> None:
        super().__init__()
        freqs = torch.logspace(math.log10(min_freq), math.log10(max_freq), num_freqs) if num_freqs else torch.zeros(0)
        self.register_buffer("freqs", freqs, persistent=False)
        self.out_dim = 2 * in_dim * num_freqs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * x[:, :, None] * self.freqs[None, None, :]  # (n, d, F)
        return torch.cat([angles.sin(), angles.cos()], dim=2).flatten(1)


class MLP(nn.Sequential):
    """in_dim -> hidden x depth -> out_dim with the given activation between layers."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, depth: int, activation: type[nn.Module] = nn.SiLU):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)


class EpsMLP(nn.Module):
    """eps_theta(x_k, k) for vector data: an MLP on [x_k, Fourier features of x_k, embedding of k].

    Input (n, d) and (n,) step indices; output (n, d), the predicted noise eps of (1.21).
    """

    def __init__(self, data_dim: int, hidden: int = 128, depth: int = 3, fourier_freqs: int = 16, time_dim: int = 64):
        super().__init__()
        self.time_dim = time_dim
        self.fourier = FourierFeatures(data_dim, fourier_freqs)
        self.net = MLP(data_dim + self.fourier.out_dim + time_dim, data_dim, hidden, depth)

    def forward(self, x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # The first layer acting on the concatenation [x features, embedding of k] is split into its two blocks of
        # columns, so that when every row has the same k (the reverse chain) the embedding's contribution is
        # computed once and broadcast: ~15% fewer operations per chain step, the same function and weights.
        first = self.net[0]
        x_features = torch.cat([x_k, self.fourier(x_k)], dim=1)
        w_x, w_k = first.weight.split([x_features.shape[1], self.time_dim], dim=1)
        same_k = k.numel() > 0 and not k.is_cuda and bool((k == k[0]).all())
        emb = sinusoidal_embedding(k[:1] if same_k else k, self.time_dim).to(x_k.dtype)
        h = nn.functional.linear(x_features, w_x, first.bias) + nn.functional.linear(emb, w_k)
        for layer in list(self.net)[1:]:
            h = layer(h)
        return h


class EpsMLPChain:
    """eps_theta of an EpsMLP on the reverse chain (1.24): n points per call, every row at the same step k.

    The same function as `EpsMLP.forward` (to float rounding; tested), with fewer passes over memory per step:
    - the embedding of k is the same for every point, so its product with the first layer's k-columns, plus that
      layer's bias, is one (hidden,) row per k, computed for all the chain's k at once when the runner is built;
    - the features are written into one preallocated (d + 2 d F, n) buffer, one feature per row: [x, all sines,
      all cosines], so that the sines and the cosines each fill one contiguous block (into the rows of an
      (n, d + 2 d F) buffer, d F floats at a time, sin ran ~1.7x slower at d F = 32); the first layer reads it
      transposed, and its x-columns are permuted once to that order;
    - each linear layer is one `torch.addmm` into a preallocated (n, hidden) buffer, SiLU applied in place.
    Only the returned (n, d) prediction is a fresh tensor: callers may keep it. The first layer (k-table and
    permuted columns) is a snapshot taken when the runner is built (build one per chain); the others are views.
    """

    @staticmethod
    def fits(net: nn.Module) -> bool:
        """Whether `net` is an EpsMLP as built (Linear layers with SiLU between them), which this runner computes."""
        if type(net) is not EpsMLP:
            return False
        linears, activations = list(net.net)[0::2], list(net.net)[1::2]
        return all(type(a) is nn.SiLU for a in activations) and all(type(m) is nn.Linear for m in linears)

    def __init__(self, net: EpsMLP, n: int, ks: list[int], dtype: torch.dtype, device: torch.device | str) -> None:
        if not self.fits(net):
            raise TypeError("EpsMLPChain runs an EpsMLP of Linear layers with SiLU between them")
        linears = list(net.net)[0::2]
        first, x_cols = linears[0], linears[0].in_features - net.time_dim
        self.freqs = net.fourier.freqs.to(dtype)
        d, F = x_cols // (1 + 2 * self.freqs.numel()), self.freqs.numel()  # data dim, frequencies
        self.d, self.dF = d, d * F
        # EpsMLP's columns: x_0..x_{d-1}, then per dim j: sin(j, f) for f < F, cos(j, f) for f < F
        order = list(range(d)) + [d + j * 2 * F + f for j in range(d) for f in range(F)]
        order += [d + j * 2 * F + F + f for j in range(d) for f in range(F)]
        self.row = {k: j for j, k in enumerate(ks)}
        with torch.inference_mode():
            self.w_x_t = first.weight[:, order].t()  # (d + 2dF, hidden), read by addmm as transposed
            w_k = first.weight[:, x_cols:]
            emb = sinusoidal_embedding(torch.tensor(ks, device=device), net.time_dim).to(dtype)
            self.k_table = torch.addmm(first.bias, emb, w_k.t())  # (len(ks), hidden): bias + W_k emb(k)
            self.features = torch.empty(x_cols, n, dtype=dtype, device=device)  # (features, points): see above
            self.angles = torch.empty(d, F, n, dtype=dtype, device=device)
            self.freqs = self.freqs[:, None]  # (F, 1): one frequency per row of a dimension's angles
            self.h = [torch.empty(n, first.out_features, dtype=dtype, device=device) for _ in range(2)]
        self.layers = [(layer.weight.t(), layer.bias) for layer in linears[1:]]  # views: the live weights

    def __call__(self, x_k: torch.Tensor, k: int) -> torch.Tensor:
        """eps_theta(x_k, k) for an int k the runner was built for; a fresh (n, d) tensor."""
        features, h, d, dF = self.features, self.h, self.d, self.dF
        x_t = x_k.t()  # (d, n)
        features[:d].copy_(x_t)
        if dF:
            torch.mul((x_t * (2 * math.pi))[:, None, :], self.freqs, out=self.angles)  # FourierFeatures' angles
            angles = self.angles.view(dF, -1)
            torch.sin(angles, out=features[d : d + dF])
            torch.cos(angles, out=features[d + dF :])
        torch.addmm(self.k_table[self.row[k]], features.t(), self.w_x_t, out=h[0])
        nn.functional.silu(h[0], inplace=True)
        for j, (w_t, b) in enumerate(self.layers[:-1]):
            torch.addmm(b, h[j % 2], w_t, out=h[1 - j % 2])
            nn.functional.silu(h[1 - j % 2], inplace=True)
        w_t, b = self.layers[-1]
        return torch.addmm(b, h[(len(self.layers) - 1) % 2], w_t)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, plus a projection of the step embedding, twice; a residual connection."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2, self.conv2 = nn.GroupNorm(groups, out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """eps_theta(x_k, k) for images (n, C, H, W), H and W even: a two-resolution UNet (Ronneberger et al. 2015)
    as in Ho et al. (2020, appendix B), cut down to 8x8 digits: H x W -> H/2 x W/2 -> H x W with skip connections,
    GroupNorm + SiLU residual blocks that all see the sinusoidal embedding of k. The output conv starts at zero,
    so an untrained model predicts eps = 0 (loss = d) instead of noise.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32) -> None:
        super().__init__()
        c, c2, emb = channels, 2 * channels, 4 * channels
        self.channels = channels
        self.time = nn.Sequential(nn.Linear(c, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down1 = ResBlock(c, c, emb)  # H x W
        self.downsample = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.down2 = ResBlock(c, c2, emb)  # H/2 x W/2
        self.mid = ResBlock(c2, c2, emb)
        self.up2 = ResBlock(c2 + c2, c2, emb)  # skip from down2
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c, 3, padding=1))
        self.up1 = ResBlock(c + c, c, emb)  # skip from down1
        self.norm_out = nn.GroupNorm(8, c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        emb = self.time(sinusoidal_embedding(k, self.channels).to(x_k.dtype))
        h1 = self.down1(self.conv_in(x_k), emb)
        h2 = self.down2(self.downsample(h1), emb)
        h = self.up2(torch.cat([self.mid(h2, emb), h2], dim=1), emb)
        h = self.up1(torch.cat([self.upsample(h), h1], dim=1), emb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


class UNetChain:
    """eps_theta of a UNet on the reverse chain (1.24) or DDIM: n images per call, every image at the same step k.

    The same function as `UNet.forward` (to float rounding; tested, also in float64), with the per-step work that
    does not depend on x_k done once per chain:
    - the time path (sinusoidal embedding -> Linear -> SiLU -> Linear) and every ResBlock's projection of it are
      functions of k alone: for all the chain's k at once they become one (len(ks), out_ch) table per block, added
      to conv1's bias, so conv1 + emb(k) is one convolution with a per-k bias (the conv bias is per channel and
      every image shares k);
    - GroupNorm is followed by an in-place SiLU, and the residual sums of `mid` and the up path are written straight
      into the buffers `torch.cat` would build (no cat copies);
    - nearest 2x upsampling followed by a 3x3 conv is computed as four 2x2 convs on the low-resolution map (the
      "sub-pixel" identity: each output phase sees only two distinct rows and columns, whose taps are summed
      beforehand), 4/9 of the multiply-adds and no upsampled copy.
    The 3x3 convolutions themselves (~80% of a step at 8x8) are unchanged. The per-k biases and the upsample's
    phase kernels are a snapshot taken when the runner is built (build one per chain); the other layers are read live.
    """

    @staticmethod
    def fits(net: nn.Module) -> bool:
        """Whether `net` is a UNet as built (the layers this runner computes, nearest 2x upsampling)."""
        if type(net) is not UNet:
            return False
        blocks = [net.down1, net.down2, net.mid, net.up2, net.up1]
        time = [type(m) for m in net.time]
        up, conv = net.upsample
        return (all(type(b) is ResBlock for b in blocks) and time == [nn.Linear, nn.SiLU, nn.Linear]
                and type(up) is nn.Upsample and up.mode == "nearest" and up.scale_factor in (2, 2.0)
                and type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
                and conv.stride == (1, 1))

    def __init__(self, net: UNet, n: int, ks: list[int], dtype: torch.dtype, device: torch.device | str) -> None:
        if not self.fits(net):
            raise TypeError("UNetChain runs a UNet as built (Linear-SiLU-Linear time path, nearest 2x upsampling)")
        self.net, self.row = net, {k: j for j, k in enumerate(ks)}
        blocks = (net.down1, net.down2, net.mid, net.up2, net.up1)
        with torch.inference_mode():
            emb = net.time(sinusoidal_embedding(torch.tensor(ks, device=device), net.channels).to(dtype))
            # conv1's bias + the block's projection of the embedding of k: (len(ks), out_ch) per block
            self.bias1 = {id(b): (b.conv1.bias.to(dtype) + b.emb(emb)) for b in blocks}
            self.phases = _subpixel_kernels(net.upsample[1].weight.to(dtype))  # (4 * out, in, 2, 2)

    def _block(self, b: ResBlock, x: torch.Tensor, k_row: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """ResBlock.forward with conv1's bias replaced by its per-k row (bias + emb(k)); the sum into `out`."""
        f = nn.functional
        h = f.silu(f.group_norm(x, b.norm1.num_groups, b.norm1.weight, b.norm1.bias, b.norm1.eps), inplace=True)
        h = f.conv2d(h, b.conv1.weight, self.bias1[id(b)][k_row], padding=1)
        h = f.silu(f.group_norm(h, b.norm2.num_groups, b.norm2.weight, b.norm2.bias, b.norm2.eps), inplace=True)
        h = f.conv2d(h, b.conv2.weight, b.conv2.bias, padding=1)
        return torch.add(b.skip(x), h, out=out) if out is not None else h.add_(b.skip(x))

    def __call__(self, x_k: torch.Tensor, k: int) -> torch.Tensor:
        """eps_theta(x_k, k) for an int k the runner was built for; a fresh (n, C, H, W) tensor."""
        net, j, f = self.net, self.row[k], nn.functional
        h1 = self._block(net.down1, net.conv_in(x_k), j)
        h2 = self._block(net.down2, net.downsample(h1), j)
        n, c2, hh, wh = h2.shape
        cat2 = torch.empty(n, 2 * c2, hh, wh, dtype=h2.dtype, device=h2.device)
        self._block(net.mid, h2, j, out=cat2[:, :c2])
        cat2[:, c2:].copy_(h2)
        h = self._block(net.up2, cat2, j)
        c = h1.shape[1]
        cat1 = torch.empty(n, 2 * c, 2 * hh, 2 * wh, dtype=h.dtype, device=h.device)
        _subpixel_conv(h, self.phases, net.upsample[1].bias, out=cat1[:, :c])  # Upsample + Conv2d
        cat1[:, c:].copy_(h1)
        h = self._block(net.up1, cat1, j)
        norm = net.norm_out
        h = f.silu(f.group_norm(h, norm.num_groups, norm.weight, norm.bias, norm.eps), inplace=True)
        return net.conv_out(h)


def _subpixel_kernels(w: torch.Tensor) -> torch.Tensor:
    """The 3x3 kernel w (out, in, 3, 3) applied after nearest 2x upsampling, as four 2x2 kernels on the input.

    Output row 2i + a reads upsampled rows 2i + a - 1 .. 2i + a + 1, i.e. input rows i - 1, i, i (a = 0: taps
    w[0] and w[1] + w[2]) or i, i, i + 1 (a = 1: taps w[0] + w[1] and w[2]); likewise for columns. Zero padding
    agrees: an upsampled row is outside iff its input row is. Returns (4 * out, in, 2, 2), phases (a, b) in the
    order (0, 0), (0, 1), (1, 0), (1, 1)."""
    def taps(v: torch.Tensor, dim: int, a: int) -> torch.Tensor:  # the 3 taps along dim folded to phase a's 2
        t0, t1, t2 = v.unbind(dim)
        return torch.stack([t0, t1 + t2] if a == 0 else [t0 + t1, t2], dim)

    return torch.cat([taps(taps(w, 2, a), 3, b) for a in (0, 1) for b in (0, 1)])


def _subpixel_conv(x: torch.Tensor, phases: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    """conv3x3(upsample_nearest_2x(x)) with `_subpixel_kernels`, written into out (n, out_ch, 2H, 2W)."""
    c, (h, w) = out.shape[1], x.shape[2:]
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    for p, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        part = padded[:, :, a : a + h + 1, b : b + w + 1]
        out[:, :, a::2, b::2] = nn.functional.conv2d(part, phases[p * c : (p + 1) * c], bias)
