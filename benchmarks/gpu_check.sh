#!/usr/bin/env bash
# The device check, one prepared run (README "GPU check"): the CUDA tests, then the GPU
# benchmarks, each writing JSON under $OUT. Run through the device tool from the repo root:
#   bash benchmarks/gpu_check.sh            (carry .whl when packages are missing there)
# The machine's python3 has torch, timm, onnxruntime; kornia and smp travel as wheels in
# .whl/ (see .library/device/README.md for how to download them).
set -uo pipefail
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=.
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=.:/tmp/site
fi
python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' \
    | tee "$OUT/device.txt"

# 1. the tests that only run with CUDA, and every test parametrised over devices
timeout 240 python3 -m pytest -q -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml" \
    -k "cuda or DEVICES or device" tests/test_backbones.py tests/test_losses.py \
    tests/test_parsing_cli.py tests/test_train.py tests/test_fserasing.py 2>&1 \
    | tail -n 30 | tee "$OUT/cuda_tests.txt"

# 2. GPU benchmarks (short settings; each writes its JSON)
timeout 90 python3 -m benchmarks.bench_parsing --device cuda --amp bf16 --out "$OUT/parsing.json"
timeout 90 python3 -m benchmarks.bench_cam --device cuda --json "$OUT/cam.json"
timeout 120 python3 -m benchmarks.bench_train --device cuda --fp16 --channels-last \
    --network iresnet34 --batch-size 128 --out "$OUT/train.json" 2>&1 | tail -n 20
timeout 60 python3 -m benchmarks.bench_fserasing --device cuda --skip-step --per-image 50 \
    --json "$OUT/fserasing.json" 2>&1 | tail -n 20
ls -l "$OUT"
