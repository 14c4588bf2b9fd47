#!/usr/bin/env bash
# The README's first command: set up the environment, render a small shapes dataset, train
# ECA-ResNet-18 on it on the CPU, and evaluate the best checkpoint on the held-out split.
# Under 10 minutes on 2 CPU cores once the environment is installed.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"

DATA="${DEMO_DATA:-demo_data/shapes}"
RUN="${DEMO_RUN:-runs/demo}"
SIZE=48

if [ ! -d "$DATA/val" ]; then
    python scripts/make_demo_data.py "$DATA" --size "$SIZE" --train-per-class 300 --val-per-class 100 --seed 0
fi
rm -rf "$RUN"
python main.py "$DATA" -a eca_resnet18 --image-size "$SIZE" --min-scale 0.5 \
    -b 32 --lr 0.05 --epochs 8 --lr-step 6 -j 1 -p 50 --seed 0 --output-dir "$RUN"
python main.py "$DATA" --evaluate --resume "$RUN/model_best.pth.tar" --image-size "$SIZE" -b 100 -j 1
