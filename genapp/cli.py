"""Command line: python -m genapp train|sample|eval|push|checkpoints ... (see --help of each)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes at most 64 bits
MAX_THREADS = 256
SHIPPED_DATASETS = ("moons", "8gaussians", "checkerboard", "swissroll", "2spirals", "25gaussians")
# On CUDA, with no --batch-size given: the recipe's batch x GPU_BATCH_FACTOR, its lr x sqrt(GPU_BATCH_FACTOR) (Adam's
# square-root rule, docs/scaling.md). The 2-D steps are launch-bound on a GPU: 4x the points cost about the same time.
GPU_BATCH_FACTOR = 4
COMPILE_CHOICES = {"auto": "auto", "on": True, "off": False}


def resolve_settings(recipe: Mapping[str, Any], given: Mapping[str, Any], device_type: str,
                     ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run's settings: what the user gave (None = not given) over the recipe. On CUDA, when no batch size was
    given, the recipe's batch times GPU_BATCH_FACTOR and, unless the user gave lr, the recipe's lr times
    sqrt(GPU_BATCH_FACTOR); then also (second value) the record of that scaling for the card, else None."""
    settings = {key: given[key] if given.get(key) is not None else value for key, value in recipe.items()}
    settings |= {key: value for key, value in given.items() if key not in recipe}
    if device_type != "cuda" or given.get("batch_size") is not None or "batch_size" not in recipe:
        return settings, None
    settings["batch_size"] = recipe["batch_size"] * GPU_BATCH_FACTOR
    lr_factor = math.sqrt(GPU_BATCH_FACTOR) if given.get("lr") is None and "lr" in recipe else 1.0
    if lr_factor != 1.0:
        settings["lr"] = recipe["lr"] * lr_factor
    return settings, dict(batch_factor=GPU_BATCH_FACTOR, lr_factor=lr_factor, recipe_batch_size=recipe["batch_size"],
                          recipe_lr=recipe.get("lr"))


def _device_type(device: str) -> str:
    """Where `train` will run: "cpu" under ACCELERATE_USE_CPU, else `pick_device(device)`'s type (ValueError for a
    device that is not there)."""
    from genapp.train import pick_device

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return "cpu"
    return pick_device(device).type


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number in [0, 2**63 - 1], got {text:.40}")
    return value


def _threads(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be a whole number in [1, {MAX_THREADS}], got {text:.40}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _checkpoint_folder(text: str) -> Path:
    """`train --out`: a folder that exists or can be made, and takes files; checked before training starts."""
    import tempfile

    out = Path(text)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {text[:200]} is a file; give a folder for the checkpoint")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise ValueError(f"--out {text[:200]}: cannot write a checkpoint there ({error.strerror or error})") from None
    return out


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from genapp import data, families
    from genapp.train import end_processes, train

    out = _checkpoint_folder(args.out)
    dataset = data.get(args.dataset)
    images = len(dataset.data_shape) > 1
    family = families.get(args.family)
    recipe = family.recipe_for(args.dataset)
    settings, scaled = resolve_settings(recipe, {key: getattr(args, key, None) for key in recipe},
                                        _device_type(args.device))
    for key, value in settings.items():
        setattr(args, key, value)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = family.build(args.dataset, hidden=args.hidden, depth=args.depth, num_steps=args.num_steps,
                         schedule=args.schedule, channels=args.channels, couplings=args.couplings,
                         nice_scaling=not args.no_nice_scaling, affine=args.affine)
    # The card names the shipped location, wherever this run wrote to.
    argv = [f"checkpoints/{out.name}" if a == args.out else a for a in args.argv if a not in ("--quiet", "--resume")]
    if "--save-every" in argv:  # how often a resume state is written does not change the model
        del argv[argv.index("--save-every"):argv.index("--save-every") + 2]
    # ... with every recipe value spelled out, so the command still reproduces the model if the recipe changes.
    resolved = {"--steps": args.steps, "--lr": args.lr, "--batch-size": args.batch_size, "--ema": args.ema}
    if not family.is_flow:
        resolved |= {"--num-steps": args.num_steps, "--schedule": args.schedule}
        resolved |= {"--channels": args.channels} if images else {"--hidden": args.hidden, "--depth": args.depth}
    else:
        resolved |= {"--couplings": args.couplings, "--hidden": args.hidden, "--depth": args.depth}
    argv += [str(v) for flag, v in resolved.items() if flag not in argv for v in (flag, v)]
    command = "python -m genapp " + " ".join(shlex.quote(a) for a in argv)
    main_process = os.environ.get("RANK", "0") == "0"  # under `accelerate launch` / torchrun only rank 0 speaks
    if main_process:
        print(f"training {args.family} on {args.dataset}: {args.steps} steps, lr {args.lr:g}, batch {args.batch_size}"
              + (f" (the recipe's batch x{scaled['batch_factor']} and lr x{scaled['lr_factor']:g} on the GPU; "
                 "--batch-size keeps the recipe's)" if scaled else ""))
    state = out / "resume" if args.resume or args.save_every else None  # optimiser, EMA, step, RNG (genapp.train)
    if args.resume and not (out / "resume" / "state.json").is_file():
        raise ValueError(f"--resume: no resume state in {out / 'resume'} (start the run with --save-every N)")
    result = train(model, dataset, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                   ema_decay=args.ema or None, device=args.device, seed=args.seed, progress=not args.quiet,
                   time_limit=args.seconds, precision=args.precision, resume=out / "resume" if args.resume else None,
                   save_state=state, save_every=args.save_every, compile=COMPILE_CHOICES[args.compile])
    code = 0 if result.status != "diverged" else 1
    try:
        if result.process_index == 0:  # the other processes hold the same weights; only the main process writes
            _write_run(args, out, model, result, command, scaled, images, dataset)
    finally:
        end_processes(code)
    return code


def _write_run(args, out, model, result, command, scaled, images, dataset) -> None:
    """The main process's output: the summary line, the checkpoint with its card, training.json."""
    import torch

    from genapp.io import hub
    from genapp.io.cards import model_card
    from genapp.train import training_record

    print(f"{result.status} after {result.steps} steps in {result.seconds:.1f} s on {result.device}"
          f"{f' x {result.num_processes} processes' if result.num_processes > 1 else ''}; "
          f"final loss (mean of last 100) {sum(result.losses[-100:]) / len(result.losses[-100:]):.4f}")
    model.cpu()
    training = training_record(result, command)
    if scaled:
        training["gpu_defaults"] = scaled
    metrics = None
    if args.eval and images:
        print("--eval measures 2-D models; for images run benchmarks/digits_quality.py on the checkpoint")
    elif args.eval:
        from genapp.evaluate import evaluate

        print("evaluating ...")
        metrics = evaluate(model, dataset, generator=torch.Generator().manual_seed(1234))
        print(json.dumps(metrics, indent=2))
    hub.save(model, out, card=model_card(out.name, model, training, metrics))
    (out / "training.json").write_text(json.dumps(dict(training=training, metrics=metrics), indent=2) + "\n")
    print(f"saved {out}")


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from genapp.io import hub

    torch.set_num_threads(args.threads)
    model = hub.load_dir(args.checkpoint) if Path(args.checkpoint).is_dir() else hub.load(args.checkpoint)
    generator = torch.Generator().manual_seed(args.seed)
    if hasattr(model, "reverse_chain"):
        x = model.sample(args.n, generator=generator, variance=args.variance, ddim_steps=args.ddim_steps)
    else:
        x = model.sample(args.n, generator=generator)
    x = x.detach().cpu().numpy().reshape(args.n, -1)
    out = Path(args.out)
    if out.suffix == ".csv":
        np.savetxt(out, x, delimiter=",", header=",".join(f"x{i}" for i in range(x.shape[1])), comments="")
    elif out.suffix == ".npy":
        np.save(out, x)
    else:
        raise SystemExit(f"error: --out must end in .npy or .csv, got {out}")
    print(f"wrote {args.n} samples to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from genapp import data
    from genapp.evaluate import evaluate
    from genapp.io import hub

    torch.set_num_threads(args.threads)
    model = hub.load_dir(args.checkpoint) if Path(args.checkpoint).is_dir() else hub.load(args.checkpoint)
    dataset = data.get(args.dataset or model.config.dataset)
    metrics = evaluate(model, dataset, generator=torch.Generator().manual_seed(args.seed))
    print(json.dumps(metrics, indent=2))
    if args.write_card:
        folder = Path(args.checkpoint)
        if not folder.is_dir() or args.dataset not in (None, model.config.dataset):
            raise SystemExit("error: --write-card needs a checkpoint folder evaluated on its own dataset")
        from genapp.io.cards import model_card

        record_path = folder / "training.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {"training": None}
        record["metrics"] = metrics
        (folder / "README.md").write_text(model_card(folder.name, model, record["training"], metrics))
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"updated {folder / 'README.md'} and {record_path}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from genapp.io import hub

    url = hub.push(args.checkpoint, args.repo_id, private=args.private)
    print(f"pushed {args.checkpoint} to {url}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Push every shipped checkpoint to NS/genapp-NAME (unchanged repos skipped); print each repo's revision."""
    from genapp.io.publish import publish

    for done in publish(args.namespace, args.only, private=args.private):
        print(f"{done.repo_id} @ {done.revision} ({'pushed' if done.pushed else 'unchanged'})", flush=True)
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """Train every shipped checkpoint with its recipe, one after the other (or the ones named)."""
    from genapp import families

    names = args.only or [f"{f}-{d}" for f in families.names() for d in families.SHIPPED_DATASETS]
    for name in names:
        family, _, dataset = name.partition("-")
        if family not in families.names() or not dataset:
            raise ValueError(f"--only takes names <family>-<dataset> with family in {', '.join(families.names())}, "
                             f"e.g. ddpm-moons; got {name!r:.60}")
        argv = ["train", family, "--dataset", dataset, "--out", str(Path(args.out) / name), "--eval", "--quiet"]
        if args.seconds:
            argv += ["--steps", "1000000", "--seconds", str(args.seconds)]
        else:
            argv += families.RECIPE_OVERRIDES.get(name, [])
        print(f"== {name}: python -m genapp {' '.join(argv)}", flush=True)
        code = main(argv)
        if code:
            return code
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m genapp", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on a 2-D dataset and save a checkpoint folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a DDPM, RealNVP or NICE model, e.g. "
                                   "`python -m genapp train ddpm --dataset moons --steps 5000 --out runs/ddpm-moons`. "
                                   "Options left unset take the shipped checkpoints' recipe for the family.")
    from genapp import families

    p.add_argument("family", choices=families.names())
    p.add_argument("--dataset", required=True, help="a name from genapp.data.names(), e.g. moons")
    p.add_argument("--out", required=True, help="checkpoint folder to write (config.json, model.safetensors, card)")
    p.add_argument("--steps", type=_positive_int, help="optimizer steps")
    p.add_argument("--seconds", type=_positive_float,
                   help="wall-clock budget: training ends at whichever of --steps and --seconds comes first")
    p.add_argument("--lr", type=_positive_float, help="Adam learning rate (cosine-decayed to 0)")
    p.add_argument("--batch-size", type=_positive_int, help="global batch; default: the recipe's, x"
                   f"{GPU_BATCH_FACTOR} on CUDA (with the lr x{math.sqrt(GPU_BATCH_FACTOR):g} unless --lr is given)")
    p.add_argument("--hidden", type=_positive_int, help="width of the network(s)")
    p.add_argument("--depth", type=_positive_int, help="hidden layers of the network(s)")
    p.add_argument("--ema", type=float, help="EMA decay of the weights (0: none)")
    p.add_argument("--num-steps", type=_positive_int, default=1000, help="DDPM: diffusion steps N")
    p.add_argument("--schedule", choices=("linear", "cosine"), default="linear", help="DDPM: beta schedule")
    p.add_argument("--channels", type=_positive_int, help="image DDPM: UNet base channels (a multiple of 8)")
    p.add_argument("--couplings", type=_positive_int, help="flows: number of coupling layers")
    p.add_argument("--no-nice-scaling", action="store_true", help="NICE: leave out the diagonal scaling layer")
    p.add_argument("--affine", choices=("lecture", "latent"), default="lecture",  # genapp.flows.AFFINE_FORMS
                   help="RealNVP: (1.36) as in the lecture, or 'latent': the shift on the latent side with a soft "
                   "bound (beyond the lecture; genapp.flows.AffineCoupling)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda; under `accelerate "
                   "launch` each process takes the device the launcher gives it")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="bf16 autocast: auto = on CUDA for DDPM, float32 on the CPU and for flows")
    p.add_argument("--compile", choices=tuple(COMPILE_CHOICES), default="auto",
                   help="torch.compile the loss: auto = on CUDA only (on the CPU compiling costs more than it saves, "
                        "docs/scaling.md); falls back to eager with a warning if compiling fails")
    p.add_argument("--save-every", type=_positive_int,
                   help="write a resume state (optimiser, EMA, step, RNG) to OUT/resume every N steps and at the end")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose resume state is in OUT/resume (same settings; --steps is the total)")
    p.add_argument("--threads", type=_threads, default=1, help="torch CPU threads")
    p.add_argument("--eval", action="store_true", help="measure quality afterwards and put it in the card")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a checkpoint into .npy or .csv",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint folder or a pretrained name such as ddpm-moons")
    p.add_argument("-n", type=_positive_int, default=1000, help="number of samples")
    p.add_argument("--out", required=True, help="samples.npy or samples.csv")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--variance", choices=("beta", "beta_tilde"), default="beta_tilde", help="DDPM: sigma_k^2 (1.18)")
    p.add_argument("--ddim-steps", type=_positive_int, help="DDPM: sample with DDIM in this many steps")
    p.add_argument("--threads", type=_threads, default=2)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="measure a checkpoint against its dataset (KL, bound, distances)")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", help="defaults to the dataset the model was trained on")
    p.add_argument("--seed", type=_seed, default=1234)
    p.add_argument("--threads", type=_threads, default=2)
    p.add_argument("--write-card", action="store_true",
                   help="write the measurements into the folder's model card (README.md) and training.json")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("push", help="upload a checkpoint folder (with its card) to the Hugging Face Hub")
    p.add_argument("checkpoint", help="a checkpoint folder or a shipped name")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub; token from the usual huggingface_hub places")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("publish", help="push every shipped checkpoint to NS/genapp-NAME, skipping unchanged ones")
    p.add_argument("--namespace", required=True, help="Hub user or organisation; token from the usual places")
    p.add_argument("--only", nargs="+", help="names such as ddpm-moons; default: every checkpoint")
    p.add_argument("--private", action="store_true", help="create missing repos as private")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("checkpoints", help="retrain the shipped checkpoints with their recipes (make checkpoints)")
    p.add_argument("--out", default="checkpoints")
    p.add_argument("--only", nargs="*", help="names such as ddpm-moons; default: all")
    p.add_argument("--seconds", type=_positive_float, help="train each for this wall-clock budget instead of the "
                   "recipe's step count")
    p.set_defaults(func=cmd_checkpoints)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError, NotImplementedError) as err:  # OSError: files, and the Hub (HubError)
        print("error: " + " ".join(str(err).split())[:2000], file=sys.stderr)  # one line
        return 2

