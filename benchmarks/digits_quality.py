"""Sample quality of a digits DDPM: Frechet distance in a digit classifier's feature space, against its floor.

    python benchmarks/digits_quality.py checkpoints/ddpm-digits [--ddim-steps 100] [--grid samples.png]

Prints FD (samples vs. each half of the real digits, averaged), the floor (half vs. half) and their ratio;
issue 8's target is a ratio within 3. Also the share of samples that are exact copies of a training image
(after rounding to the 17 grey levels), which FD cannot see. Samples on cuda when present.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from genapp.data.images import image_grid, quantize
from genapp.digits_fid import DigitsFID
from genapp.io.hub import load_dir
from genapp.train import pick_device


def copies(samples: torch.Tensor, images: torch.Tensor, levels: int) -> float:
    """Share of samples equal, pixel for pixel after rounding to the grey levels, to some training image."""
    s, t = quantize(samples.cpu(), levels).flatten(1), images.flatten(1)
    return float((torch.cdist(s, t).min(1).values < 1e-6).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, the classifier and the split")
    p.add_argument("--ddim-steps", type=int, default=None, help="DDIM with this many steps (default: Algorithm 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--grid", help="save the first 100 samples as a PNG grid here")
    p.add_argument("--json", help="write the figures as JSON here")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the classifier trains on the CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    fid = DigitsFID(seed=args.seed)
    fit_s = time.perf_counter() - start
    model = load_dir(args.checkpoint, map_location=pick_device(args.device))
    start = time.perf_counter()
    generator = torch.Generator(model.device).manual_seed(args.seed)
    samples = model.sample(fid.num_samples, generator=generator, ddim_steps=args.ddim_steps).cpu()
    sample_s = time.perf_counter() - start
    result = fid.score(samples) | {
        "copies": copies(samples, fid.data.images, fid.data.levels),
        "classifier_accuracy": fid.accuracy(),
        "num_samples": fid.num_samples,
        "sampler": f"ddim-{args.ddim_steps}" if args.ddim_steps else f"ancestral-{model.num_steps}",
        "sample_seconds": round(sample_s, 1),
        "classifier_seconds": round(fit_s, 1),
        "device": str(model.device),
    }
    print(
        f"FD {result['fd']:.2f}  floor {result['floor']:.2f}  ratio {result['ratio']:.2f}  "
        f"(target <= 3)  copies {result['copies']:.1%}  [{result['sampler']}, {sample_s:.0f} s on {model.device}]"
    )
    if args.grid:
        from PIL import Image

        Image.fromarray(image_grid(samples[:100], nrow=10)).save(args.grid)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
