#!/usr/bin/env bash
# The README's detection demo, the paper's pipeline in miniature: set up the environment, train
# ECA-ResNet-18 for six epochs on the classification demo's shapes (the "ImageNet" backbone), render a
# small COCO-format instance set, train a Mask R-CNN on it from that backbone on the CPU, evaluate
# it with pycocotools and draw its predictions on a held-out image.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"

SHAPES="${DEMO_DATA:-demo_data/shapes}"
COCO="${DEMO_COCO:-demo_data/coco_shapes}"
RUN="${DEMO_RUN:-runs/demo_detection}"
SIZE=128

if [ ! -d "$SHAPES/val" ]; then
    python scripts/make_demo_data.py "$SHAPES" --size 48 --train-per-class 300 --val-per-class 100 --seed 0
fi
if [ ! -f "$COCO/annotations/instances_val2017.json" ]; then
    python scripts/make_demo_coco.py "$COCO" --train-images 300 --val-images 100 --min-size "$SIZE" --max-size "$SIZE" --seed 0
fi
rm -rf "$RUN"
mkdir -p "$RUN"
python main.py "$SHAPES" -a eca_resnet18 --image-size 48 --min-scale 0.5 \
    -b 32 --lr 0.05 --epochs 6 --lr-step 5 -j 1 -p 50 --seed 0 --output-dir "$RUN/backbone"
python detect.py "$COCO" -a maskrcnn_eca_resnet18_fpn --backbone-weights "$RUN/backbone/model_best.pth.tar" \
    --min-size "$SIZE" --max-size "$SIZE" -b 2 --lr 0.01 --warmup-iters 50 --epochs 3 --lr-steps 2 -j 1 -p 50 --seed 0 \
    --detector-arg box_batch_size_per_image=16 \
    --detector-arg rpn_pre_nms_top_n_train=600 --detector-arg rpn_post_nms_top_n_train=300 \
    --detector-arg rpn_pre_nms_top_n_test=300 --detector-arg rpn_post_nms_top_n_test=100 \
    --detector-arg box_detections_per_img=20 \
    --eval-interval 3 --output-dir "$RUN" | tee "$RUN/train.log"
python predict.py --weights "$RUN/checkpoint.pth.tar" "$COCO/val2017/$(ls "$COCO/val2017" | head -n 1)" --out-dir "$RUN"
grep '^ \* ' "$RUN/train.log"
