#!/usr/bin/env bash
# nestc's CUDA paths on an NVIDIA GPU in a few minutes (growth and pruning in float32 and bf16, train, resume across devices, torchrun); non-zero exit on failure
set -euo pipefail
amp=$(python -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"; print("bf16" if torch.cuda.get_device_capability() >= (8, 0) else "off")')
cd "$(mktemp -d)"; g="--device cuda --quiet --limit 2000"; ok() { [ "$1" -eq 3 ]; }  # exit 3: budget missed, not a failure
nestc seed lenet-5 -o seed.onnx --width-ratio 0.5 --density 0.3
nestc compress seed.onnx -o grown.onnx $g --amp off --grow on --max-epochs 4 --epochs 0.5 --unit-prune-fraction 0.1 --partial-area-gamma 0.02 --regrow-fraction 0.1 || ok $?
nestc train seed.onnx -o trained.onnx --device cuda --quiet --amp "$amp" --epochs 3
nestc compress trained.onnx -o pruned.onnx $g --amp "$amp" --grow on --max-epochs 2 --distill --validation train || ok $?
python - <<'EOF'
import nestc; from nestc.schedule.config import NestConfig; from nestc.training import TrainConfig
def stop(line):  # after train's first epoch or compress's first growth step, whose checkpoints are written
    if line.startswith(("[epoch 1/", "[grow   1]")): raise KeyboardInterrupt
for a, b in (("cuda", "cpu"), ("cpu", "cuda")):  # interrupted on a, resumed on b: train, then compress
    for run in (lambda d, **k: nestc.train("seed.onnx", f"t-{a}.onnx", config=TrainConfig(device=d, epochs=2, quiet=True), checkpoint=f"t-{a}.ckpt", **k), lambda d, **k: nestc.compress("seed.onnx", f"c-{a}.onnx", config=NestConfig(max_epochs=2, grow_epochs=0.5), train_config=TrainConfig(device=d, quiet=True), limit=2000, **k)):
        try: run(a, log=stop); raise SystemExit(f"{a}: not interrupted, so nothing was resumed")
        except KeyboardInterrupt: run(b, resume=True); print(f"resumed {a} -> {b}: ok")
EOF
if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then torchrun --standalone --nproc-per-node 2 -m nestc compress seed.onnx -o ddp.onnx $g --max-epochs 2 || ok $?; fi
echo "gpu_check: every CUDA path ran"
