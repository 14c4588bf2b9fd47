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
from models.layout import classifier_name
from utils.checkpoint import checkpoint_args, load_model
from utils.console import UsageError, parse_ksize, training_parser
from utils.data.datasets import IMAGENET_TRAIN_SIZE, IMAGENET_VAL_SIZE, DataError, SyntheticImages, build_dataset
from utils.data.loaders import build_loader
from utils.data.transforms import AUTO_AUGMENTS, PIPELINES, Augmentation, BatchMix
from utils.distributed import DistributedContext, add_distributed_arguments, describe_processes
from utils.longrun.resume import add_long_run_arguments, resolve_resume
from utils.longrun.run_dir import prepare_run_dir, run_directory
from utils.training.classification import LOSSES, ClassificationTask, build_criterion
from utils.training.device import wrap_model
from utils.training.optim import (
    OPTIMIZERS,
    SCHEDULES,
    LearningRateSchedule,
    Optimization,
    WeightAverage,
    build_optimizer,
    ema_decay_per_update,
    parameter_groups,
)
from utils.training.recipes import (
    DEFAULT_RECIPE,
    RECIPES,
    ResolvedRecipe,
    apply_recipe,
    explicit_settings,
    format_recipe,
    recipe_of_checkpoint,
    resolve_recipe,
    save_recipe,
)
from utils.training.run import TrainingPlan, add_process_arguments, run_command, run_start, start_process, train_and_evaluate

DEFAULT_ARCH = "eca_resnet50"
EPOCH_SCHEDULES = [name for name, kind in SCHEDULES.items() if not kind.per_step]
"""The schedules main.py's flags describe; a per-step one (detect.py's 1x) counts its milestones in steps."""


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
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, choices=RECIPES,
                        help="the training recipe every setting left out comes from: " + "; ".join(
                            f"{name}: {recipe.summary}" for name, recipe in RECIPES.items()).replace("%", "%%") + " (default: %(default)s)")
    parser.add_argument("--print-recipe", action="store_true",
                        help="print the settings the recipe and the other flags resolve to, and where each comes from, then exit")
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
    parser.add_argument("--momentum", default=None, type=float, metavar="M", help="SGD's momentum (0.9)")
    parser.add_argument("--wd", "--weight-decay", default=None, type=float, metavar="W", dest="weight_decay",
                        help="weight decay (1e-4; 4e-5 for MobileNetV2)")
    add_recipe_arguments(parser)
    parser.add_argument("-p", "--print-freq", default=10, type=int, metavar="N", help="progress line every N steps")
    add_long_run_arguments(parser, resume_help="continue from a checkpoint (or, with --evaluate, evaluate it); 'auto': "
                           "from the run directory's latest checkpoint if it has one, else start fresh, from --pretrained "
                           "if given (one command line for the first start and every restart)")
    parser.add_argument("-e", "--evaluate", action="store_true", help="evaluate on val/ and exit")
    parser.add_argument("--pretrained", default="", type=str, metavar="PATH",
                        help="start from the weights of a (released) checkpoint, at epoch 0")
    parser.add_argument("--image-size", default=224, type=int, metavar="S",
                        help="the test crop, by which a recipe's sizes scale (given at 224); the paper's recipe "
                        "trains on crops of S and evaluates S/0.875 resized, S centre-cropped")
    parser.add_argument("--train-crop-size", default=None, type=int, metavar="S",
                        help="training crop (the recipe's: --image-size for the paper's, 176 at 224 for torchvision-v2)")
    parser.add_argument("--val-resize-size", default=None, type=int, metavar="S",
                        help="evaluation: the short side's size before the centre crop (--image-size / 0.875 for the paper's)")
    parser.add_argument("--val-crop-size", default=None, type=int, metavar="S", help="evaluation: the centre crop (--image-size)")
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


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ingredients of today's recipes, each usable alone; left out, each is the recipe's
    (``--print-recipe`` shows which), else off."""
    group = parser.add_argument_group("recipe ingredients (default: the recipe's, else off)")
    group.add_argument("--opt", default=None, choices=OPTIMIZERS,
                       help="optimizer: torch.optim's SGD or AdamW, or timm's LAMB (pip install timm) (sgd)")
    group.add_argument("--nesterov", default=None, action=argparse.BooleanOptionalAction, help="SGD with Nesterov momentum")
    group.add_argument("--norm-weight-decay", default=None, type=float, metavar="W",
                       help="weight decay of normalization layers' weights and biases (default: --wd)")
    group.add_argument("--bias-weight-decay", default=None, type=float, metavar="W",
                       help="weight decay of every bias (default: --wd, or --norm-weight-decay for a norm layer's)")
    group.add_argument("--sched", default=None, choices=EPOCH_SCHEDULES,
                       help="lr schedule per epoch: step (x --lr-gamma every --lr-step epochs) or cosine (down to --min-lr) (step)")
    group.add_argument("--min-lr", default=None, type=float, metavar="LR", help="the cosine schedule's last lr (0)")
    group.add_argument("--warmup-epochs", default=None, type=int, metavar="N",
                       help="a linear lr warm-up over the first N epochs, before the schedule (0)")
    group.add_argument("--warmup-factor", default=None, type=float, metavar="F",
                       help="the warm-up's first epoch runs at F x the lr (0.01, torchvision's lr_warmup_decay)")
    group.add_argument("--loss", default=None, choices=LOSSES, help="cross-entropy or binary cross-entropy (ce)")
    group.add_argument("--label-smoothing", default=None, type=float, metavar="S", help="label smoothing (0)")
    group.add_argument("--mixup-alpha", default=None, type=float, metavar="A",
                       help="Mixup's Beta(A, A) (0: off; with --cutmix-alpha, one of the two per batch)")
    group.add_argument("--cutmix-alpha", default=None, type=float, metavar="A", help="CutMix's Beta(A, A) (0: off)")
    group.add_argument("--auto-augment", default=None, choices=AUTO_AUGMENTS,
                       help="after the crop and flip: ra (RandAugment, two operations) or ta_wide (TrivialAugmentWide) (none)")
    group.add_argument("--ra-magnitude", default=None, type=int, metavar="M", help="RandAugment's magnitude, of 0..30 (9)")
    group.add_argument("--random-erase", default=None, type=float, metavar="P", help="random erasing's probability (0)")
    group.add_argument("--ra-reps", default=None, type=int, metavar="N",
                       help="repeated augmentation: every sample N times per epoch, each copy augmented alike "
                       "but drawn apart, on different processes under torchrun (1: off)")
    group.add_argument("--drop-path", default=None, type=float, metavar="P",
                       help="stochastic depth of the ResNets' residual blocks, rising to P in the last block (0)")
    group.add_argument("--ema-decay", default=None, type=float, metavar="D",
                       help="evaluate and checkpoint an EMA of the weights beside them; D as torchvision's "
                       "--model-ema-decay, adjusted to -b, --ema-steps and --epochs (default: no EMA)")
    group.add_argument("--ema-steps", default=None, type=int, metavar="N", help="update the EMA every N optimizer steps (32)")
    group.add_argument("--clip-grad", default=None, type=float, metavar="NORM", help="clip the gradients' total norm (off)")
    group.add_argument("--accum-steps", default=None, type=int, metavar="N",
                       help="accumulate gradients over N steps of -b / N images each, then update (1)")


INGREDIENT_RANGES = {
    "ema_steps": (lambda value: value >= 1, "at least 1"),
    "accum_steps": (lambda value: value >= 1, "at least 1"),
    "ra_reps": (lambda value: value >= 1, "at least 1"),
    "warmup_epochs": (lambda value: value >= 0, "0 or more"),
    "ra_magnitude": (lambda value: 0 <= value <= 30, "in 0..30"),
    "mixup_alpha": (lambda value: value >= 0, "0 or more"),
    "cutmix_alpha": (lambda value: value >= 0, "0 or more"),
    "min_lr": (lambda value: value >= 0, "0 or more"),
    "norm_weight_decay": (lambda value: value >= 0, "0 or more"),
    "bias_weight_decay": (lambda value: value >= 0, "0 or more"),
    "label_smoothing": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "random_erase": (lambda value: 0 <= value <= 1, "in [0, 1]"),
    "drop_path": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "ema_decay": (lambda value: 0 < value <= 1, "in (0, 1]"),
    "warmup_factor": (lambda value: 0 < value <= 1, "in (0, 1]"),
    "clip_grad": (lambda value: value > 0, "above 0"),
}
"""Each ingredient flag's valid values, as (test, what it says); the recipes' are valid by construction."""


def validate_ingredients(args: argparse.Namespace) -> None:
    """Each ingredient flag given on the command line in its range (:data:`INGREDIENT_RANGES`), one line if not."""
    for name, (valid, text) in INGREDIENT_RANGES.items():
        value = getattr(args, name)
        if value is not None and not valid(value):
            raise UsageError(f"--{name.replace('_', '-')} must be {text}, got {value}")


def validate_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before any process group, dataset or model exists."""
    if args.arch is not None and args.arch not in models.model_names:
        raise UsageError(f"unknown model {args.arch!r}; choose one of: {', '.join(models.model_names)}")
    if args.data is None and args.dummy is None and not args.print_recipe:
        raise UsageError("give the dataset directory DIR, or --dummy for synthetic data")
    validate_ingredients(args)
    for name in ("batch_size", "epochs", "lr_step", "print_freq", "image_size", "num_classes", "dummy", "checkpoint_every",
                 "train_crop_size", "val_resize_size", "val_crop_size"):
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
    # Without -a, a --resume or --pretrained file names the model, and load_model checks k against it.
    if args.ksize is not None and (args.arch is not None or not (args.resume or args.pretrained)):
        arch = args.arch or DEFAULT_ARCH
        try:
            with torch.device("meta"):
                models.create_model(arch, k_size=parse_ksize(args.ksize))
        except ValueError as error:
            raise UsageError(f"--ksize {args.ksize}: {error}") from None
        except TypeError:
            raise UsageError(f"--ksize: {arch} has no ECA layers; leave --ksize out") from None


def folder_datasets(args: argparse.Namespace, early: ResolvedRecipe) -> Tuple[Any, Any]:
    """(train, val) ImageFolders at the recipe's sizes, the training one with its augmentation;
    train is None when only evaluating, so a val/-only tree is enough."""
    settings = early.values()
    pipeline = "encoded" if args.decode_device == "cuda" else args.train_pipeline
    augmentation = Augmentation(settings["auto_augment"], settings["ra_magnitude"], settings["random_erase"])
    if pipeline == "encoded" and augmentation.changes_images:
        raise UsageError("--decode-device cuda crops on the GPU, where --auto-augment and --random-erase do not run; "
                         "leave it out, or turn them off (--auto-augment none --random-erase 0)")
    train = None if args.evaluate else build_dataset(
        args.data, "train", settings["train_crop_size"], args.min_scale, pipeline, augmentation)
    val = build_dataset(args.data, "val", settings["val_crop_size"], pipeline=args.eval_pipeline, resize=settings["val_resize_size"])
    if train is not None and train.classes != val.classes:
        raise DataError(f"{args.data}: train/ and val/ have different class folders")
    return train, val


def synthetic_datasets(args: argparse.Namespace, classes: int, early: ResolvedRecipe) -> Tuple[Any, Any]:
    """--dummy: ImageNet-shaped random data for the model's classes, val 1/25 of train as ImageNet's."""
    settings = early.values()
    val_size = min(IMAGENET_VAL_SIZE, max(args.dummy // 25, 1))
    train = None if args.evaluate else SyntheticImages(args.dummy, classes, settings["train_crop_size"])
    return train, SyntheticImages(val_size, classes, settings["val_crop_size"])


def build_model(
    args: argparse.Namespace, data_classes: Optional[int], drop_path: float = 0.0
) -> Tuple[nn.Module, str, Optional[Dict[str, Any]]]:
    """The model, its arch, and the checkpoint it came from (None for a fresh model).

    The classifier gets --num-classes, else the checkpoint's size on --resume, else the
    data's class count (``data_classes``; None for --dummy, where the model decides).
    ``drop_path``: the model's stochastic depth, which no checkpoint records.
    """
    ksize = parse_ksize(args.ksize)
    if args.resume or args.pretrained:
        num_classes = args.num_classes or (data_classes if args.pretrained else None)
        model, info = load_model(args.resume or args.pretrained, arch=args.arch, k_size=ksize, num_classes=num_classes)
        checkpoint = info["checkpoint"] if args.resume else None
        if drop_path:
            loaded, model = model, create_model(info["arch"], drop_path, **info["kwargs"])
            model.load_state_dict(loaded.state_dict())
        return model, info["arch"], checkpoint
    arch = args.arch or DEFAULT_ARCH
    kwargs: Dict[str, Any] = {}
    if args.num_classes or data_classes:
        kwargs["num_classes"] = args.num_classes or data_classes
    if ksize is not None:
        kwargs["k_size"] = ksize
    return create_model(arch, drop_path, **kwargs), arch, None


def create_model(arch: str, drop_path: float, **kwargs: Any) -> nn.Module:
    """``models.create_model``, with ``drop_path_rate`` when stochastic depth is on (a UsageError
    for a model without it)."""
    if not drop_path:
        return models.create_model(arch, **kwargs)
    try:
        return models.create_model(arch, drop_path_rate=drop_path, **kwargs)
    except TypeError:
        raise UsageError(f"--drop-path: {arch} has no stochastic depth (the ResNets have); leave it at 0") from None


def classifier_outputs(model: nn.Module, arch: str) -> int:
    return model.get_submodule(classifier_name(arch)).out_features


def training_parts(
    args: argparse.Namespace, model: nn.Module, outputs: int, scaler: Optional[torch.amp.GradScaler]
) -> Tuple[Optimization, Optional[BatchMix], Optional[WeightAverage]]:
    """The recipe's optimizer, lr schedule, EMA and batch mixing, from the resolved ``args``."""
    groups = parameter_groups(model, args.weight_decay, args.norm_weight_decay, args.bias_weight_decay)
    optimizer = build_optimizer(
        args.opt, groups, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum, nesterov=args.nesterov
    )
    schedule = LearningRateSchedule(
        optimizer, args.sched, step_size=args.lr_step, gamma=args.lr_gamma, epochs=args.epochs, min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs, warmup_factor=args.warmup_factor,
    )
    average = None
    if args.ema_decay is not None:
        average = WeightAverage(model, ema_decay_per_update(args.ema_decay, args.batch_size, args.ema_steps, args.epochs), args.ema_steps)
    mix = BatchMix(outputs, args.mixup_alpha, args.cutmix_alpha) if args.mixup_alpha or args.cutmix_alpha else None
    optimization = Optimization(optimizer, schedule, scaler, args.clip_grad, args.accum_steps, average, args.warmup_epochs)
    return optimization, mix, average


def run(args: argparse.Namespace, context: DistributedContext) -> int:
    explicit = explicit_settings(args)
    if args.print_recipe:
        resolved = resolve_recipe(args.recipe, args.arch or DEFAULT_ARCH, explicit, args.image_size)
        if context.is_main:
            print("\n".join(format_recipe(resolved)))
        return 0
    config, scaler = start_process(args, context, channels_last=args.channels_last, cudnn_benchmark=True)
    log, device = config.log, config.device
    args.resume = resolve_resume(args.resume, run_directory(args.output_dir, args.arch or DEFAULT_ARCH, args.action), args.evaluate)
    if args.resume and args.pretrained:  # found by --resume auto: validate_args refuses a --resume PATH with --pretrained
        log(f"=> --resume auto found {args.resume}; --pretrained {args.pretrained} is only for the first start")
        args.pretrained = ""

    # The data's and the model's settings are alike for every model family (only the paper's
    # optimisation differs for MobileNetV2), so they are resolved before the model's arch is known.
    early = resolve_recipe(args.recipe, args.arch or DEFAULT_ARCH, explicit, args.image_size)
    drop_path = early.settings["drop_path"].value
    if args.dummy is None:
        train_set, val_set = folder_datasets(args, early)
        model, arch, checkpoint = build_model(args, len(val_set.classes), drop_path)
    else:
        model, arch, checkpoint = build_model(args, args.num_classes, drop_path)
        train_set, val_set = synthetic_datasets(args, classifier_outputs(model, arch), early)
    data_classes, outputs = len(val_set.classes), classifier_outputs(model, arch)
    if data_classes > outputs:
        raise UsageError(f"the data has {data_classes} classes but the model only {outputs} outputs; pass --num-classes {data_classes}")
    resolved = apply_recipe(args, arch, explicit)
    if args.batch_size % (context.world_size * args.accum_steps):
        raise UsageError(
            f"-b {args.batch_size} does not split evenly over {context.world_size} processes x --accum-steps {args.accum_steps}"
        )
    run_dir = run_directory(args.output_dir, arch, args.action)
    if context.is_main and not args.evaluate:
        prepare_run_dir(run_dir, bool(args.resume), log)
        save_recipe(run_dir, resolved)
    log(f"=> {arch} ({sum(p.numel() for p in model.parameters()):,} parameters) on {device}" + describe_processes(context))
    if resolved.name != DEFAULT_RECIPE:
        log(f"=> recipe {resolved.name} (version {resolved.version}); --print-recipe shows its settings")

    train_model, eval_model = wrap_model(
        model, device, context, one_gpu=args.gpu is not None, channels_last=args.channels_last, compile_model=args.compile
    )
    per_process, data_seed, pin_memory = args.batch_size // context.world_size, args.seed or 0, device.type == "cuda"
    val_loader = build_loader(val_set, False, per_process, args.workers, data_seed, context, pin_memory)
    criterion = build_criterion(args.loss, args.label_smoothing).to(device)
    if args.evaluate:
        ClassificationTask(criterion, val_loader, eval_model).evaluate(config)
        return 0

    decode_device = device if args.decode_device == "cuda" and args.dummy is None else None
    micro_batch = per_process // args.accum_steps
    train_loader = build_loader(train_set, True, micro_batch, args.workers, data_seed, context, pin_memory,
                                decode_device=decode_device, repeats=args.ra_reps)
    optimization, mix, average = training_parts(args, model, outputs, scaler)
    task = ClassificationTask(criterion, val_loader, eval_model, mix, average.module if average is not None else None)
    start = run_start(checkpoint, optimization, task, first_epoch=args.start_epoch)
    if start.resumed:
        args.start_epoch = start.epoch
        log(f"=> resumed {args.resume} at {start} ({task.describe_best(start.best)})")
        trained_under = recipe_of_checkpoint(checkpoint)
        if trained_under is not None and trained_under != (resolved.name, resolved.version):
            log(f"=> the checkpoint was trained under recipe {trained_under[0]} (version {trained_under[1]}); "
                f"it goes on under {resolved.name} (version {resolved.version})")
    plan = TrainingPlan(run_dir, args.epochs, micro_batch * context.world_size, arch, checkpoint_args(args), args.checkpoint_every,
                        checkpoint_extras={"recipe": resolved.record()})
    return train_and_evaluate(task, model, train_model, optimization, train_loader, config, plan, start)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(get_args_parser(), argv, validate_args, run)


if __name__ == "__main__":
    sys.exit(main())
