#!/usr/bin/env bash
# Trains every shipped 2-D checkpoint at once on a many-core machine (one torch thread per model, a wall-clock
# budget each), packs them, then measures training speed on cuda against the CPU. Used for the shipped set:
#   bash scripts/device_checkpoints.sh OUT_DIR SECONDS   ->  OUT_DIR/checkpoints.tgz, OUT_DIR/gpu_train_speed.md
set -u
out=${1:?out dir}; seconds=${2:-120}
work=$(mktemp -d)
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=.
mkdir -p "$out" "$work/checkpoints"
echo "cores: $(nproc)"; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
for family in ddpm realnvp nice; do
  for dataset in moons 8gaussians checkerboard swissroll 2spirals 25gaussians; do
    python3 -m genapp checkpoints --only "$family-$dataset" --out "$work/checkpoints" --seconds "$seconds" \
      > "$work/checkpoints/$family-$dataset.log" 2>&1 &
  done
done
wait
grep -H -E "finished after|stopped after|diverged|error|Error" "$work"/checkpoints/*.log
tar czf "$out/checkpoints.tgz" -C "$work" checkpoints
python3 benchmarks/gpu_train_speed.py --steps 300 > "$out/gpu_train_speed.md" 2>&1
cat "$out/gpu_train_speed.md"
