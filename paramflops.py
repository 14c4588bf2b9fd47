"""Parameters and FLOPs as the ECA-Net paper counted them, with exact and today's counts beside.

    python paramflops.py -a eca_resnet50              # one model
    python paramflops.py -a eca_resnet50 --ksize 3333
    python paramflops.py --all                        # markdown table of every registered model

The paper's 24.37M and 3.86G are binary units (M = 1024^2, G = 1024^3) of thop's mid-2019
counts; the same model is 25.56M parameters and 4.13G MACs in SI units by today's thop.
"""

import argparse
import sys
from typing import List, NoReturn, Optional, Sequence

import thop
from torch import nn

import models
from utils.complexity import ATTENTION_TYPES, Complexity, binary_units, measure, si_units


class _OneLineParser(argparse.ArgumentParser):
    """Report a usage mistake in one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = _OneLineParser(prog="paramflops.py", description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-a", "--arch", help=f"model to count, one of: {', '.join(models.model_names)}")
    target.add_argument("--all", action="store_true", help="a markdown table of every registered model")
    parser.add_argument("--ksize", help="ECA kernel sizes, e.g. 3557 or adaptive (default: the released model's)")
    parser.add_argument("--input-size", type=_positive_int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--num-classes", type=_positive_int, default=1000, help="classifier outputs (default 1000)")
    args = parser.parse_args(argv)
    if args.all and args.ksize is not None:
        parser.error("--ksize applies to one model; use it with -a")
    return args


def build(arch: str, ksize: Optional[str], num_classes: int) -> nn.Module:
    """The registered model; a bad name or k is a one-line exit, not a traceback."""
    kwargs = {"num_classes": num_classes}
    if ksize is not None:
        kwargs["k_size"] = ksize
    try:
        return models.create_model(arch, **kwargs)
    except ValueError as error:
        sys.exit(f"paramflops.py: error: {error}")
    except TypeError:
        if ksize is None:
            raise
        sys.exit(f"paramflops.py: error: {arch} has no ECA kernel size to set; drop --ksize")


def kernel_label(model: nn.Module) -> str:
    """The attention kernel sizes the model was built with, as the paper's tables write them.

    One digit per stage for a ResNet ("3557"), the distinct sizes otherwise ("1/3" for
    ECA-MobileNetV2), "-" without any k-sized attention.
    """

    def sizes(module: nn.Module) -> List[int]:
        return [m.k_size for m in module.modules() if isinstance(m, ATTENTION_TYPES) and hasattr(m, "k_size")]

    if isinstance(model, models.ResNet):
        stages = [sizes(stage) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)]
        if all(stages):
            return "".join(str(stage[0]) for stage in stages)
    return "/".join(map(str, sorted(set(sizes(model))))) or "-"


def report(arch: str, k: str, counts: Complexity, input_size: int, num_classes: int) -> List[str]:
    """One model: each count in the paper's binary units, as an exact integer, and in SI units."""
    rows = [
        ("", "paper (M=2^20, G=2^30)", "exact", "SI (M=10^6, G=10^9)"),
        ("Params", binary_units(counts.params), f"{counts.params:,}", si_units(counts.params)),
        ("FLOPs, 2019 thop", binary_units(counts.paper_flops), f"{counts.paper_flops:,}", si_units(counts.paper_flops)),
        (f"MACs, thop {thop.__version__}", binary_units(counts.thop_macs), f"{counts.thop_macs:,}", si_units(counts.thop_macs)),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [f"{arch}  k={k}  input 1x3x{input_size}x{input_size}  {num_classes} classes"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    layers = ", ".join(f"{number} {name} layers" for name, number in counts.attention_layers.items())
    lines.append(f"Attention: {counts.attention_params:,} parameters in {layers}" if layers else "Attention: none")
    return lines


def markdown_table(input_size: int, num_classes: int) -> List[str]:
    """Every registered model, one row each, ready to paste into a README."""
    lines = [
        f"Input 1x3x{input_size}x{input_size}, {num_classes} classes. Paper columns: thop's 2019 rules in "
        f"binary units (M = 1024^2, G = 1024^3); MACs: thop {thop.__version__} in SI units (G = 10^9).",
        "",
        "| model | k | Params (paper) | FLOPs (paper) | Params (exact) | MACs (thop, SI) | Attention params |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in models.model_names:
        model = build(arch, None, num_classes)
        counts = measure(model, input_size)
        lines.append(
            f"| {arch} | {kernel_label(model)} | {binary_units(counts.params)} | "
            f"{binary_units(counts.paper_flops)} | {counts.params:,} | {si_units(counts.thop_macs)} | "
            f"{counts.attention_params:,} |"
        )
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.all:
        lines = markdown_table(args.input_size, args.num_classes)
    else:
        model = build(args.arch, args.ksize, args.num_classes)
        counts = measure(model, args.input_size)
        lines = report(args.arch, kernel_label(model), counts, args.input_size, args.num_classes)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
