"""Train and evaluate ECA-Net models on ImageNet-style data, as the original main.py did.

Single process (CPU, one GPU, DataParallel over all visible GPUs) or DistributedDataParallel
under torchrun / --world-size. Every flag of the original keeps its name and meaning.
"""

import argparse
import os
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

import models
from utils.checkpoint import checkpoint_args, load_model
from utils.console import UsageError, parse_ksize, training_parser
from utils.data.datasets import IMAGENET_TRAIN_SIZE, IMAGENET_VAL_SIZE, DataError, SyntheticImages, build_dataset
from utils.data.loaders import build_loader
from utils.data.transforms import PIPELINES
from utils.distributed import DistributedContext, add_distributed_arguments, describe_processes
from utils.longrun.resume import add_long_run_arguments, resolve_resume
from utils.longrun.run_dir import prepare_run_dir, run_directory
from utils.training.classification import ClassificationTask
from utils.training.device import wrap_model
from utils.training.optim import LearningRateSchedule, Optimization, build_optimizer
from utils.training.run import TrainingPlan, add_process_arguments, run_command, run_start, start_process, train_and_evaluate

DEFAULT_ARCH = "eca_resnet50"

RECIPES: Dict[str, Dict[str, float]] = {
    # The paper's ResNet recipe: SGD, batch 256, lr 0.1 divided by 10 every 30 of 100 epochs.
    "resnet": {"lr": 0.1, "weight_decay": 1e-4, "batch_size": 256, "epochs": 100, "lr_step": 30, "lr_gamma": 0.1},
    # MobileNetV2's: batch 96, lr 0.045 decayed by 0.98 every epoch for 400 epochs, wd 4e-5.
    "mobilenet": {"lr": 0.045, "weight_decay": 4e-5, "batch_size": 96, "epochs": 400, "lr_step": 1, "lr_gamma": 0.98},
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = training_parser("main.py", "ECA-Net ImageNet training and evaluation")
    parser.add_argument("data", nargs="?", metavar="DIR", help="dataset root with train/ and val/ ImageFolders")
    parser.add_argument("-a", "--arch", metavar="ARCH", default=None,
                        help=f"model: {' | '.join(models.model_names)} (default: the checkpoint's with "
                        f"--resume/--pretrained, else {DEFAULT_ARCH})")
    parser.add_argument("--ksize", default=None, metavar="K",
                        help="ECA kernel size per stage, e.g. 3557 or 3,5,5,7, or 'adaptive' (Eq. 12); "
                        "default: the model's released k, or the checkpoint's")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier outputs (default: the checkpoint's, else the number of class folders)")
    parser.add_argument("-j", "--workers", default=4, type=int, metavar="N", help="data-loading workers per process")
    parser.add_argument("--epochs", default=None, type=int, metavar="N", help="total epochs (100; 400 for MobileNetV2)")
    parser.add_argument("--start-epoch", default=0, type=int, metavar="N",
                        help="epoch number to start at (overridden by --resume)")
    parser.add_argument("-b", "--batch-size", default=None, type=int, metavar="N",
                        help="total batch size over all processes (256; 96 for MobileNetV2)")
    parser.add_argument("--lr", "--learning-rate", default=None, type=float, metavar="LR",
                        help="initial learning rate (0.1; 0.045 for MobileNetV2)")
    parser.add_argument("--lr-step", default=None, type=int, metavar="N",
                        help="epochs between learning-rate decays (30; 1 for MobileNetV2)")
    parser.add_argument("--lr-gamma", default=None, type=float, metavar="G",
                        help="learning-rate decay factor (0.1; 0.98 for MobileNetV2)")
    parser.add_argument("--momentum", default=0.9, type=float, metavar="M")
    parser.add_argument("--wd", "--weight-decay", default=None, type=float, metavar="W", dest="weight_decay",
                        help="weight decay (1e-4; 4e-5 for MobileNetV2)")
    parser.add_argument("-p", "--print-freq", default=10, type=int, metavar="N", help="progress line every N steps")
    add_long_run_arguments(parser, resume_help="continue from a checkpoint (or, with --evaluate, evaluate it); 'auto': "
                           "from the run directory's latest checkpoint if it has one, else start fresh, from --pretrained "
                           "if given (one command line for the first start and every restart)")
    parser.add_argument("-e", "--evaluate", action="store_true", help="evaluate on val/ and exit")
    parser.add_argument("--pretrained", default="", type=str, metavar="PATH",
                        help="start from the weights of a (released) checkpoint, at epoch 0")
    parser.add_argument("--image-size", default=224, type=int, metavar="S",
                        help="training crop; evaluation resizes to S/0.875 and centre-crops S")
    parser.add_argument("--min-scale", default=0.08, type=float, metavar="F",
                        help="smallest area fraction RandomResizedCrop takes")
    parser.add_argument("--train-pipeline", default="fast", choices=PIPELINES,
                        help="training images: 'fast' decodes with TorchCodec (torchvision.io without it) and crops uint8 tensors, "
                        "normalised on the device; 'pil' is the original's PIL pipeline, normalised "
                        "in the workers. The same crops and flips for the same --seed (default: fast)")
    parser.add_argument("--eval-pipeline", default="pil", choices=PIPELINES,
                        help="evaluation images: 'pil' gives the exact pixels published accuracies were "
                        "measured on; 'fast' as --train-pipeline, whose resize rounds differently (default: pil)")
    parser.add_argument("--decode-device", default="cpu", choices=["cpu", "cuda"],
                        help="where the fast training pipeline decodes JPEGs: 'cuda' decodes each batch on this "
                        "process's GPU with nvjpeg, the workers only read files and draw crops (default: cpu)")
    parser.add_argument("--bad-images", default="skip", choices=["skip", "error"],
                        help="an unreadable (corrupt, truncated) image file: skip it and count it per epoch, "
                        "or stop with an error naming it (default: skip)")
    parser.add_argument("--dummy", nargs="?", const=IMAGENET_TRAIN_SIZE, default=None, type=int, metavar="N",
                        help="synthetic data of ImageNet's shape instead of DIR (N training images, "
                        "default ImageNet's count), to measure speed")
    parser.add_argument("--output-dir", default=None, metavar="DIR",
                        help="run directory for checkpoints and logs (default: runs/<arch>_<action>)")
    parser.add_argument("--action", default="", type=str, help="run name suffix, as in the original")
    add_process_arguments(parser, gpu_help="use this one GPU (default: all visible GPUs)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    add_distributed_arguments(parser)
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before any process group, dataset or model exists."""
    if args.arch is not None and args.arch not in models.model_names:
        raise UsageError(f"unknown model {args.arch!r}; choose one of: {', '.join(models.model_names)}")
    if args.data is None and args.dummy is None:
        raise UsageError("give the dataset directory DIR, or --dummy for synthetic data")
    for name in ("batch_size", "epochs", "lr_step", "print_freq", "image_size", "num_classes", "dummy", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if not 0 < args.min_scale <= 1:
        raise UsageError(f"--min-scale must be in (0, 1], got {args.min_scale}")
    if args.resume and args.resume != "auto" and args.pretrained:
        raise UsageError("give --resume (continue a run) or --pretrained (start from weights), not both")
    for flag, path in (("--resume", args.resume), ("--pretrained", args.pretrained)):
        if path and path != "auto" and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: no such file")
    if args.decode_device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--decode-device cuda: CUDA is not available; leave it out to decode in the CPU workers")
    if args.decode_device == "cuda" and args.train_pipeline == "pil":
        raise UsageError("--decode-device cuda decodes for the fast pipeline; leave out --train-pipeline pil")
    if args.ksize is not None:
        arch = args.arch or DEFAULT_ARCH
        try:
            with torch.device("meta"):
                models.create_model(arch, k_size=parse_ksize(args.ksize))
        except ValueError as error:
            raise UsageError(f"--ksize {args.ksize}: {error}") from None
        except TypeError:
            raise UsageError(f"--ksize: {arch} has no ECA layers; leave --ksize out") from None


def apply_recipe(args: argparse.Namespace, arch: str) -> None:
    """Fill the hyper-parameters left unset from the paper's recipe for this architecture."""
    recipe = RECIPES["mobilenet" if "mobilenet" in arch else "resnet"]
    for name, value in recipe.items():
        if getattr(args, name) is None:
            setattr(args, name, type(value)(value))


def folder_datasets(args: argparse.Namespace) -> Tuple[Any, Any]:
    """(train, val) ImageFolders; train is None when only evaluating, so a val/-only tree is enough."""
    pipeline = "encoded" if args.decode_device == "cuda" else args.train_pipeline
    train = None if args.evaluate else build_dataset(args.data, "train", args.image_size, args.min_scale, pipeline)
    val = build_dataset(args.data, "val", args.image_size, pipeline=args.eval_pipeline)
    if train is not None and train.classes != val.classes:
        raise DataError(f"{args.data}: train/ and val/ have different class folders")
    return train, val


def synthetic_datasets(args: argparse.Namespace, classes: int) -> Tuple[Any, Any]:
    """--dummy: ImageNet-shaped random data for the model's classes, val 1/25 of train as ImageNet's."""
    val_size = min(IMAGENET_VAL_SIZE, max(args.dummy // 25, 1))
    train = None if args.evaluate else SyntheticImages(args.dummy, classes, args.image_size)
    return train, SyntheticImages(val_size, classes, args.image_size)


def build_model(args: argparse.Namespace, data_classes: Optional[int]) -> Tuple[nn.Module, str, Optional[Dict[str, Any]]]:
    """The model, its arch, and the checkpoint it came from (None for a fresh model).

    The classifier gets --num-classes, else the checkpoint's size on --resume, else the
    data's class count (``data_classes``; None for --dummy, where the model decides).
    """
    ksize = parse_ksize(args.ksize)
    if args.resume or args.pretrained:
        num_classes = args.num_classes or (data_classes if args.pretrained else None)
        model, info = load_model(args.resume or args.pretrained, arch=args.arch, k_size=ksize, num_classes=num_classes)
        checkpoint = info["checkpoint"] if args.resume else None
        return model, info["arch"], checkpoint
    arch = args.arch or DEFAULT_ARCH
    kwargs: Dict[str, Any] = {}
    if args.num_classes or data_classes:
        kwargs["num_classes"] = args.num_classes or data_classes
    if ksize is not None:
        kwargs["k_size"] = ksize
    return models.create_model(arch, **kwargs), arch, None


def classifier_outputs(model: nn.Module) -> int:
    return [module for module in model.modules() if isinstance(module, nn.Linear)][-1].out_features


def run(args: argparse.Namespace, context: DistributedContext) -> int:
    config, scaler = start_process(args, context, channels_last=args.channels_last, cudnn_benchmark=True)
    log, device = config.log, config.device
    args.resume = resolve_resume(args.resume, run_directory(args.output_dir, args.arch or DEFAULT_ARCH, args.action), args.evaluate)
    if args.resume and args.pretrained:  # found by --resume auto: validate_args refuses a --resume PATH with --pretrained
        log(f"=> --resume auto found {args.resume}; --pretrained {args.pretrained} is only for the first start")
        args.pretrained = ""

    if args.dummy is None:
        train_set, val_set = folder_datasets(args)
        model, arch, checkpoint = build_model(args, len(val_set.classes))
    else:
        model, arch, checkpoint = build_model(args, args.num_classes)
        train_set, val_set = synthetic_datasets(args, classifier_outputs(model))
    data_classes, outputs = len(val_set.classes), classifier_outputs(model)
    if data_classes > outputs:
        raise UsageError(f"the data has {data_classes} classes but the model only {outputs} outputs; pass --num-classes {data_classes}")
    apply_recipe(args, arch)
    if args.batch_size % context.world_size:
        raise UsageError(f"-b {args.batch_size} does not split evenly over {context.world_size} processes")
    run_dir = run_directory(args.output_dir, arch, args.action)
    if context.is_main and not args.evaluate:
        prepare_run_dir(run_dir, bool(args.resume), log)
    log(f"=> {arch} ({sum(p.numel() for p in model.parameters()):,} parameters) on {device}" + describe_processes(context))

    train_model, eval_model = wrap_model(
        model, device, context, one_gpu=args.gpu is not None, channels_last=args.channels_last, compile_model=args.compile
    )
    per_process, data_seed, pin_memory = args.batch_size // context.world_size, args.seed or 0, device.type == "cuda"
    val_loader = build_loader(val_set, False, per_process, args.workers, data_seed, context, pin_memory)
    task = ClassificationTask(nn.CrossEntropyLoss().to(device), val_loader, eval_model)
    if args.evaluate:
        task.evaluate(config)
        return 0

    decode_device = device if args.decode_device == "cuda" and args.dummy is None else None
    train_loader = build_loader(train_set, True, per_process, args.workers, data_seed, context, pin_memory, decode_device=decode_device)
    optimizer = build_optimizer("sgd", model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    schedule = LearningRateSchedule(optimizer, "step", step_size=args.lr_step, gamma=args.lr_gamma)
    optimization = Optimization(optimizer, schedule, scaler)
    start = run_start(checkpoint, optimization, task, first_epoch=args.start_epoch)
    if start.resumed:
        args.start_epoch = start.epoch
        log(f"=> resumed {args.resume} at {start} ({task.describe_best(start.best)})")
    plan = TrainingPlan(run_dir, args.epochs, args.batch_size, arch, checkpoint_args(args), args.checkpoint_every)
    return train_and_evaluate(task, model, train_model, optimization, train_loader, config, plan, start)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(get_args_parser(), argv, validate_args, run)


if __name__ == "__main__":
    sys.exit(main())
