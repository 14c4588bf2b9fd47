#!/usr/bin/env bash
# Redraws the pictures README.md and docs/ show, docs/images/*.png, from the README's Table 2 run
# (ten attention variants of ResNet-18, 4 epochs each on the demo's shapes): its table's chart, the
# gates its ECA run learned, and the training curves of three of its rows. The run's command is the
# README's; runs/table_variants keeps what it trained, so only missing runs train (all ten: about
# 12 minutes on 2 idle cores) and a second call only redraws.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"

DATA="${DEMO_DATA:-demo_data/shapes}"
TABLE=runs/table_variants
IMAGES=docs/images
DRAWN="$(mktemp -d)"
trap 'rm -rf "$DRAWN"' EXIT

if [ ! -d "$DATA/val" ]; then
    python scripts/make_demo_data.py "$DATA" --size 48 --train-per-class 300 --val-per-class 100 --seed 0
fi
python scripts/run_table.py variants "$DATA" --depth 18 --epochs 4 -- \
    --image-size 48 --min-scale 0.5 -b 32 --lr 0.05 --lr-step 3 -j 1 -p 100
python scripts/plot_attention.py --weights "$TABLE/runs/eca/seed0/model_best.pth.tar" "$DATA" --classes 4 -j 1 \
    --out "$DRAWN/gates.png"
python scripts/plot_runs.py "$TABLE/runs/vanilla/seed0" "$TABLE/runs/se/seed0" "$TABLE/runs/eca/seed0" --labels Vanilla SE ECA \
    --out "$DRAWN/curves.png"
mkdir -p "$IMAGES"
cp "$TABLE/table.png" "$IMAGES/table2_variants_resnet18_shapes.png"
cp "$DRAWN/gates.png" "$IMAGES/gates_eca_resnet18_shapes.png"
cp "$DRAWN/curves.png" "$IMAGES/curves_vanilla_se_eca_resnet18_shapes.png"
echo "=> $(ls "$IMAGES"/*.png | tr '\n' ' ')"
