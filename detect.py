"""Train and evaluate the paper's COCO detectors (Faster R-CNN, Mask R-CNN, RetinaNet over
ECA-ResNet and its baselines) with MMDetection v1's 1x recipe.

    python detect.py -a maskrcnn_eca_resnet50_fpn --backbone-weights eca_resnet50_k3557.pth.tar /data/coco
    python detect.py --evaluate --resume maskrcnnecanet50k3377bs8_lr0.01.pth /data/coco

Runs like main.py: the CPU, one GPU, or DistributedDataParallel under torchrun /
--world-size (only rank 0 writes; the COCO evaluation gathers every rank's detections).
The run is main.py's (utils/training/run.py); detection's own parts are the task and the evaluation
pass in utils/detection/engine.py, the data in utils/detection/coco.py, pycocotools in
utils/detection/coco_eval.py, checkpoint files in utils/detection/checkpoint.py.
"""

import argparse
import os
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from models.detection import create_detector, detector_names
from utils.checkpoint import checkpoint_args
from utils.console import UsageError, parse_ksize, training_parser
from utils.data.datasets import DataError
from utils.detection.checkpoint import load_backbone_weights, load_detector
from utils.detection.coco import CocoDetection, build_coco_loader, coco_split_paths
from utils.detection.detector_settings import (
    constructor_settings,
    is_rcnn,
    object_classes,
    parse_detector_args,
    plain_values,
    predicts_masks,
)
from utils.detection.engine import DetectionTask
from utils.distributed import DistributedContext, add_distributed_arguments, describe_processes
from utils.longrun.resume import add_long_run_arguments, resolve_resume
from utils.longrun.run_dir import prepare_run_dir, run_directory
from utils.training.device import wrap_model
from utils.training.optim import LearningRateSchedule, Optimization, build_optimizer
from utils.training.run import TrainingPlan, add_process_arguments, run_command, run_start, start_process, train_and_evaluate

DEFAULT_ARCH = "maskrcnn_eca_resnet50_fpn"
REFERENCE_BATCH, REFERENCE_LR = 8, 0.01
"""The released detectors' recipe: 8 images per step at lr 0.01 (0.02 for 16: the lr scales with -b)."""


def get_args_parser() -> argparse.ArgumentParser:
    parser = training_parser("detect.py", "COCO detection training and evaluation (MMDetection v1's 1x recipe)")
    parser.add_argument("data", nargs="?", metavar="DIR",
                        help="COCO root: train2017/, val2017/, annotations/instances_{train,val}2017.json")
    parser.add_argument("--train-images", metavar="DIR", help="training image folder (default DIR/train2017)")
    parser.add_argument("--train-annotations", metavar="FILE",
                        help="training annotation file (default DIR/annotations/instances_train2017.json)")
    parser.add_argument("--val-images", metavar="DIR", help="validation image folder (default DIR/val2017)")
    parser.add_argument("--val-annotations", metavar="FILE",
                        help="validation annotation file (default DIR/annotations/instances_val2017.json)")
    parser.add_argument("-a", "--arch", metavar="ARCH", default=None,
                        help=f"detector: {' | '.join(detector_names)} (default: the checkpoint's with --resume, else {DEFAULT_ARCH})")
    parser.add_argument("--ksize", default=None, metavar="K",
                        help="ECA kernel size per backbone stage, e.g. 3377 (default: the detector's released k, or the checkpoint's)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier outputs, counting background for the R-CNNs (default: the checkpoint's, "
                        "else the data's categories, + 1 for the R-CNNs)")
    parser.add_argument("-j", "--workers", default=4, type=int, metavar="N", help="data-loading workers per process")
    parser.add_argument("--epochs", default=12, type=int, metavar="N", help="total epochs (default 12, the 1x schedule)")
    parser.add_argument("-b", "--batch-size", default=REFERENCE_BATCH, type=int, metavar="N",
                        help=f"total images per step over all processes (default {REFERENCE_BATCH}, the released detectors')")
    parser.add_argument("--lr", "--learning-rate", default=None, type=float, metavar="LR",
                        help=f"learning rate (default {REFERENCE_LR} x batch / {REFERENCE_BATCH}: 0.02 for 16 images)")
    parser.add_argument("--lr-steps", default=[8, 11], type=int, nargs="+", metavar="E",
                        help="divide the lr by 10 after these epochs (default 8 11)")
    parser.add_argument("--warmup-iters", default=500, type=int, metavar="N",
                        help="linear warm-up steps from 1/3 of the lr (default 500)")
    parser.add_argument("--momentum", default=0.9, type=float, metavar="M")
    parser.add_argument("--wd", "--weight-decay", default=1e-4, type=float, metavar="W", dest="weight_decay")
    parser.add_argument("--clip-grad", default=35.0, type=float, metavar="NORM",
                        help="clip the gradients' total norm (default 35; 0 turns it off)")
    parser.add_argument("--min-size", type=int, default=None, metavar="S",
                        help="resize images to this short side (default 800, as MMDetection v1)")
    parser.add_argument("--max-size", type=int, default=None, metavar="S",
                        help="... keeping the long side at most this (default 1333)")
    parser.add_argument("--detector-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="another setting of torchvision's detector constructor, e.g. box_batch_size_per_image=128 "
                        "(repeatable; numbers and true/false)")
    parser.add_argument("-p", "--print-freq", default=20, type=int, metavar="N", help="progress line every N steps")
    parser.add_argument("--eval-interval", default=1, type=int, metavar="N",
                        help="evaluate every N epochs, and after the last (default 1)")
    add_long_run_arguments(parser, resume_help="continue from a detect.py checkpoint; with --evaluate, evaluate any "
                           "detection checkpoint, a released MMDetection v1 file included; 'auto': the run directory's "
                           "latest checkpoint if it has one, else start fresh")
    parser.add_argument("-e", "--evaluate", action="store_true", help="evaluate on the validation set and exit")
    parser.add_argument("--backbone-weights", default="", metavar="PATH",
                        help="start the backbone from an ImageNet checkpoint (main.py's or a released one)")
    parser.add_argument("--bad-images", default="skip", choices=["skip", "error"],
                        help="an unreadable image file: skip it and count it, or stop with an error naming it")
    parser.add_argument("--output-dir", default=None, metavar="DIR",
                        help="run directory for checkpoints, logs and detections (default: runs/<arch>_<action>)")
    parser.add_argument("--action", default="", type=str, help="run name suffix")
    add_process_arguments(parser, gpu_help="use this one GPU (default: the current one)")
    add_distributed_arguments(parser)
    return parser


def detector_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """What goes to the detector's constructor besides k and classes: sizes and --detector-arg."""
    kwargs = parse_detector_args(args.detector_arg)
    for name in ("min_size", "max_size"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


def validate_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before any process group, dataset or model exists."""
    if args.arch is not None and args.arch not in detector_names:
        raise UsageError(f"unknown detector {args.arch!r}; choose one of: {', '.join(detector_names)}")
    if args.data is None and not (
        args.val_images and args.val_annotations and (args.evaluate or (args.train_images and args.train_annotations))
    ):
        raise UsageError("give the COCO root directory DIR, or --train-images/--train-annotations and --val-images/--val-annotations")
    for name in ("batch_size", "epochs", "print_freq", "num_classes", "min_size", "max_size", "eval_interval", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("workers", "warmup_iters", "clip_grad"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.lr is not None and args.lr <= 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.resume and args.backbone_weights:
        raise UsageError("give --resume (a detector) or --backbone-weights (an ImageNet backbone), not both")
    for flag, path in (("--resume", args.resume), ("--backbone-weights", args.backbone_weights)):
        if path and not (flag == "--resume" and path == "auto") and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: no such file")
    kwargs = detector_kwargs(args)
    if args.resume and args.resume != "auto":
        return
    arch = args.arch or DEFAULT_ARCH
    try:
        with torch.device("meta"):
            model = create_detector(arch, k_size=parse_ksize(args.ksize))
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    unknown = sorted(set(kwargs) - constructor_settings(type(model)))
    if unknown:
        raise UsageError(f"--detector-arg {unknown[0]}: {type(model).__name__} has no such setting")


def split_paths(args: argparse.Namespace, split: str) -> Tuple[str, str]:
    """(image folder, annotation file) of a split: the flags, else COCO's own layout under DIR."""
    images, annotations = getattr(args, f"{split}_images"), getattr(args, f"{split}_annotations")
    if images and annotations:
        return images, annotations
    default_images, default_annotations = coco_split_paths(args.data, split)
    return images or default_images, annotations or default_annotations


def build_model(args: argparse.Namespace, data_classes: int) -> Tuple[nn.Module, str, Dict[str, Any], Optional[Dict[str, Any]]]:
    """(detector, arch, its constructor kwargs, the checkpoint it continues or None)."""
    kwargs = detector_kwargs(args)
    if args.resume:
        model, info = load_detector(args.resume, arch=args.arch, k_size=parse_ksize(args.ksize), num_classes=args.num_classes, **kwargs)
        if info["format"] == "mmdet_v1" and not args.evaluate:
            raise UsageError(f"{args.resume} is a released MMDetection v1 detector: evaluate it with --evaluate --resume")
        return model, info["arch"], info["kwargs"], info["checkpoint"] if not args.evaluate else None
    arch = args.arch or DEFAULT_ARCH
    num_classes = args.num_classes or data_classes + int(is_rcnn(arch))
    kwargs = {**kwargs, "num_classes": num_classes}
    if args.ksize is not None:
        kwargs["k_size"] = parse_ksize(args.ksize)
    return create_detector(arch, **kwargs), arch, kwargs, None


def run(args: argparse.Namespace, context: DistributedContext) -> int:
    config, scaler = start_process(args, context)
    log, device = config.log, config.device
    args.resume = resolve_resume(args.resume, run_directory(args.output_dir, args.arch or DEFAULT_ARCH, args.action), args.evaluate)

    val_set = CocoDetection(*split_paths(args, "val"), train=False)
    model, arch, kwargs, checkpoint = build_model(args, val_set.num_classes)
    train_set = None
    if not args.evaluate:
        train_set = CocoDetection(*split_paths(args, "train"), train=True, with_masks=predicts_masks(model))
        if train_set.category_ids != val_set.category_ids:
            raise DataError(f"{train_set.annotation_file} and {val_set.annotation_file} have different categories")
    if val_set.num_classes > object_classes(arch, kwargs):
        raise UsageError(
            f"the data has {val_set.num_classes} categories but {arch} tells only {object_classes(arch, kwargs)} apart; "
            f"pass --num-classes {val_set.num_classes + int(is_rcnn(arch))}"
        )
    if args.backbone_weights:
        log(load_backbone_weights(model, args.backbone_weights))
    run_dir = run_directory(args.output_dir, arch, args.action)
    if context.is_main and args.evaluate:
        os.makedirs(run_dir, exist_ok=True)
    elif context.is_main:
        prepare_run_dir(run_dir, bool(args.resume), log)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"=> {arch} ({trainable:,} trainable parameters) on {device}" + describe_processes(context))

    # One device per process: torchvision's detectors take lists of images, which DataParallel cannot split.
    train_model, eval_model = wrap_model(model, device, context, one_gpu=True)
    if args.batch_size % context.world_size:
        raise UsageError(f"-b {args.batch_size} does not split evenly over {context.world_size} processes")
    per_process, data_seed, pin_memory = args.batch_size // context.world_size, args.seed or 0, device.type == "cuda"
    val_loader = build_coco_loader(val_set, False, per_process, args.workers, data_seed, context, pin_memory)
    iou_types = ("bbox", "segm") if predicts_masks(model) else ("bbox",)
    task = DetectionTask(val_loader, val_set, eval_model, iou_types, os.path.join(run_dir, "detections_val.json"))
    if args.evaluate:
        task.evaluate(config)
        return 0

    train_loader = build_coco_loader(train_set, True, per_process, args.workers, data_seed, context, pin_memory)
    lr = args.lr if args.lr is not None else REFERENCE_LR * args.batch_size / REFERENCE_BATCH
    trainable_parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer("sgd", trainable_parameters, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    schedule = LearningRateSchedule(
        optimizer, "warmup_multistep", len(train_loader), milestones=args.lr_steps, warmup_steps=args.warmup_iters
    )
    optimization = Optimization(optimizer, schedule, scaler, clip_grad_norm=args.clip_grad or None)
    start = run_start(checkpoint, optimization, task)
    if start.resumed:
        log(f"=> resumed {args.resume} at {start}")
    settings = plain_values({k: v for k, v in kwargs.items() if k not in ("k_size", "num_classes")})
    plan = TrainingPlan(
        run_dir, args.epochs, args.batch_size, arch, checkpoint_args(args), args.checkpoint_every, args.eval_interval,
        checkpoint_extras={"detector_kwargs": settings, "classes": list(train_set.classes)},
    )
    return train_and_evaluate(task, model, train_model, optimization, train_loader, config, plan, start)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(get_args_parser(), argv, validate_args, run)


if __name__ == "__main__":
    sys.exit(main())
