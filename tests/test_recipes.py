"""Today's training recipes beside the paper's: each ingredient doing what it must on tiny
tensors, the recipes as data, ``--recipe paper`` against the code before recipes existed, and
one run with every ingredient on stopped by SIGTERM that resumes bitwise."""

import copy
import csv
import hashlib
import json
import math
import signal
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import run_code, run_script
from test_longrun import stop_with_signals
from test_robustness import make_images
from torch import nn

import main as main_module
import models
from models.attention import ChannelAttention
from utils.checkpoint import load_checkpoint_file
from utils.console import UsageError
from utils.data.decode import read_rgb
from utils.data.loaders import RepeatedAugmentationSampler, SeededSamples
from utils.data.transforms import MEAN_PIXEL, Augmentation, BatchMix, RandomCropFlip
from utils.longrun.preemption import EXIT_STOPPED
from utils.training.classification import BinaryCrossEntropy, build_criterion
from utils.training.optim import (
    LearningRateSchedule,
    Optimization,
    WeightAverage,
    build_optimizer,
    ema_decay_per_update,
    parameter_groups,
)
from utils.training.recipes import DEFAULTS, FAMILY_SETTINGS, RECIPES, resolve_recipe

FIXTURE = Path(__file__).parent / "fixtures" / "paper_recipe_reference.json"
TINY = ["--image-size", "32", "--min-scale", "0.5", "-b", "4", "-j", "0", "-p", "1", "--seed", "0", "--epochs", "2"]
TIMING_COLUMNS = {"train_images_per_s", "epoch_seconds"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The demo's shapes at 32 x 32: three classes, 4 training and 2 validation JPEGs each."""
    return make_images(tmp_path_factory.mktemp("shapes"), train_per_class=4, val_per_class=2)


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def run_digest(run_dir: Path) -> str:
    """SHA-256 of a run's last checkpoint: every weight and buffer by name, and SGD's momentum."""
    checkpoint = load_checkpoint_file(run_dir / "checkpoint.pth.tar")
    digest = hashlib.sha256()
    for name, tensor in checkpoint["state_dict"].items():
        digest.update(name.encode())
        digest.update(tensor_bytes(tensor))
    for _, state in sorted(checkpoint["optimizer"]["state"].items()):
        digest.update(tensor_bytes(state["momentum_buffer"]))
    return digest.hexdigest()


def machine_fingerprint(data: Path) -> str:
    """What decides the last bits of a tiny run besides the code: the JPEGs' bytes and decoded
    pixels, and torch's convolutions and SGD on this CPU (torchvision's own networks, two steps)."""
    digest = hashlib.sha256()
    for path in sorted(Path(data).rglob("*.jpg")):
        digest.update(path.read_bytes())
        digest.update(tensor_bytes(read_rgb(str(path))))
    torch.manual_seed(0)
    for network in (torchvision.models.resnet18(num_classes=3), torchvision.models.mobilenet_v2(num_classes=3)):
        optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
        for _ in range(2):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(network(images), labels).backward()
            optimizer.step()
        for parameter in network.parameters():
            digest.update(tensor_bytes(parameter))
    conv1d = torch.nn.functional.conv1d(torch.randn(4, 1, 64), torch.randn(1, 1, 5), padding=2)
    digest.update(tensor_bytes(conv1d.sigmoid()))
    return digest.hexdigest()


def train(data: Path, run_dir: Path, *flags) -> Path:
    assert main_module.main([str(data), *TINY, "--output-dir", str(run_dir), *map(str, flags)]) == 0
    return run_dir


def csv_rows(run_dir: Path):
    with open(run_dir / "log.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


# --- --recipe paper is today's behaviour ------------------------------------------------------

EVERY_INGREDIENT_OFF = [
    "--opt", "sgd", "--momentum", "0.9", "--no-nesterov", "--sched", "step", "--warmup-epochs", "0", "--loss", "ce",
    "--label-smoothing", "0", "--mixup-alpha", "0", "--cutmix-alpha", "0", "--auto-augment", "none", "--random-erase", "0",
    "--ra-reps", "1", "--drop-path", "0", "--accum-steps", "1", "--train-crop-size", "32", "--val-resize-size", "37",
    "--val-crop-size", "32",
]


@pytest.fixture(scope="module")
def paper_runs(data, tmp_path_factory):
    """eca_resnet18 (the paper's ResNet recipe) and eca_mobilenet_v2 (its own), without --recipe."""
    return {arch: train(data, tmp_path_factory.mktemp(arch), "-a", arch) for arch in ("eca_resnet18", "eca_mobilenet_v2")}


@pytest.mark.parametrize("arch", ["eca_resnet18", "eca_mobilenet_v2"])
def test_recipe_paper_and_every_ingredient_off_train_as_no_recipe_does(data, paper_runs, arch, tmp_path):
    explicit = {"eca_resnet18": ["--lr", "0.1", "--wd", "1e-4", "--lr-step", "30", "--lr-gamma", "0.1"],
                "eca_mobilenet_v2": ["--lr", "0.045", "--wd", "4e-5", "--lr-step", "1", "--lr-gamma", "0.98"]}[arch]
    with_recipe = train(data, tmp_path / "paper", "-a", arch, "--recipe", "paper")
    spelled_out = train(data, tmp_path / "spelled_out", "-a", arch, *explicit, *EVERY_INGREDIENT_OFF)
    assert run_digest(with_recipe) == run_digest(spelled_out) == run_digest(paper_runs[arch])
    assert csv_rows(with_recipe) == csv_rows(paper_runs[arch])
    recorded = json.loads((with_recipe / "recipe.json").read_text())
    assert recorded["name"] == "paper" and recorded["settings"]["lr"]["value"] == float(explicit[1])
    assert load_checkpoint_file(with_recipe / "checkpoint.pth.tar")["recipe"] == recorded


def test_recipe_paper_trains_bitwise_as_the_code_before_recipes(data, paper_runs):
    """The weights' SHA-256 after two tiny epochs, recorded with the code of 2f68a93 (before
    recipes) and re-recorded where ECA's rounding changed (the fixture says where). Bitwise
    only where the JPEGs, their decoding and torch's kernels are those of the machine it was
    recorded on; elsewhere the test says so and stops."""
    reference = json.loads(FIXTURE.read_text())
    if machine_fingerprint(data) != reference["machine_fingerprint"]:
        pytest.skip("this machine's JPEG codec or CPU kernels round otherwise than the recording machine's")
    assert {arch: run_digest(run_dir) for arch, run_dir in paper_runs.items()} == reference["sha256"]


# --- recipes as data ---------------------------------------------------------------------------


def test_every_recipe_cites_a_source_for_every_value_and_families_change_only_the_optimisation():
    for recipe in RECIPES.values():
        for values in (recipe.values, *recipe.families.values()):
            assert set(values) <= set(DEFAULTS)
            assert all(cited.source for cited in values.values())
        assert all(set(values) <= FAMILY_SETTINGS for values in recipe.families.values())


def test_a_flag_wins_over_the_recipe_and_sizes_scale_with_the_image_size():
    at_224 = resolve_recipe("torchvision-v2", "eca_resnet50", {}, 224)
    assert [at_224.settings[name].value for name in ("train_crop_size", "val_resize_size", "val_crop_size")] == [176, 232, 224]
    at_48 = resolve_recipe("torchvision-v2", "eca_resnet50", {"lr": 0.2, "val_crop_size": 40}, 48)
    assert (at_48.settings["lr"].value, at_48.settings["lr"].origin) == (0.2, "flag")
    assert [at_48.settings[name].value for name in ("train_crop_size", "val_resize_size", "val_crop_size")] == [38, 50, 40]
    paper = resolve_recipe("paper", "eca_mobilenet_v2", {}, 48)
    assert [paper.settings[name].value for name in ("lr", "epochs", "train_crop_size", "val_resize_size")] == [0.045, 400, 48, 55]
    assert paper.settings["ema_decay"].origin == "default" and paper.settings["ema_decay"].value is None
    with pytest.raises(UsageError, match="unknown recipe 'rsb-a4'"):
        resolve_recipe("rsb-a4", "eca_resnet50", {})


def test_print_recipe_shows_each_setting_and_where_it_came_from(capsys):
    assert main_module.main(["--print-recipe", "--recipe", "rsb-a3", "--lr", "0.01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("recipe rsb-a3 (version 1): ResNet strikes back A3")
    settings = {line.split()[0]: line.split(None, 2)[1:] for line in lines[2:]}
    assert settings["lr"] == ["0.01", "command line"]
    assert settings["opt"] == ["lamb", "recipe: column A3"]
    assert settings["train_crop_size"][0] == "160" and settings["ema_decay"] == ["-", "default"]


def test_bad_ingredient_values_are_one_line_errors(data, tmp_path, capsys):
    for flags, message in (
        (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0"),
        (["--accum-steps", "3"], "-b 4 does not split evenly over 1 processes x --accum-steps 3"),
        (["-a", "eca_mobilenet_v2", "--drop-path", "0.1"], "--drop-path: eca_mobilenet_v2 has no stochastic depth"),
    ):
        code = main_module.main([str(data), *TINY, "--output-dir", str(tmp_path / "bad"), *flags])
        errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
        assert code == 2 and len(errors) == 1 and errors[0].startswith(f"main.py: error: {message}"), errors


# --- each ingredient ---------------------------------------------------------------------------


def test_label_smoothed_cross_entropy_and_binary_cross_entropy_equal_their_formulas():
    torch.manual_seed(0)
    logits, labels, smoothing = torch.randn(5, 7, dtype=torch.float64), torch.tensor([0, 3, 6, 2, 2]), 0.1
    log_p = logits.log_softmax(1)
    expected = ((1 - smoothing) * -log_p[torch.arange(5), labels] + smoothing * -log_p.mean(1)).mean()
    torch.testing.assert_close(build_criterion("ce", smoothing)(logits, labels), expected, rtol=1e-14, atol=0)
    target = torch.nn.functional.one_hot(labels, 7).double() * (1 - smoothing) + smoothing / 7
    p = logits.sigmoid()
    expected_bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    torch.testing.assert_close(build_criterion("bce", smoothing)(logits, labels), expected_bce, rtol=1e-12, atol=0)
    soft = torch.softmax(torch.randn(5, 7, dtype=torch.float64), 1)  # a mixed batch's weights
    torch.testing.assert_close(BinaryCrossEntropy()(logits, soft), -(soft * p.log() + (1 - soft) * (1 - p).log()).mean(),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("mixup, cutmix", [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mixup_and_cutmix_targets_sum_to_one_and_weigh_what_each_image_holds(mixup, cutmix):
    torch.manual_seed(1)
    images, labels = torch.randn(6, 3, 16, 16, dtype=torch.float64), torch.arange(6)
    mix = BatchMix(6, mixup, cutmix)
    mixed, target = mix(images, labels, seed=12)
    ones = torch.ones(6, dtype=target.dtype)  # float32, as MixUp and CutMix make them
    torch.testing.assert_close(target.sum(1), ones, rtol=0, atol=1e-7)
    again = mix(images, labels, seed=12)
    assert torch.equal(mixed, again[0]) and torch.equal(target, again[1])
    partner = images.roll(1, 0)  # torchvision pairs each image with the one before it
    own, other = target[labels, labels], target[labels, labels.roll(1, 0)]
    torch.testing.assert_close(own + other, ones, rtol=0, atol=1e-7)
    assert torch.all(own == own[0])
    lam = own[0].item()
    if torch.allclose(mixed, lam * images + (1 - lam) * partner, rtol=0, atol=1e-6):
        assert cutmix == 0 or mixup > 0  # Mixup: every pixel the same blend as the labels
        return
    assert mixup == 0 or cutmix > 0  # CutMix: each pixel its own image's or its partner's, in the labels' shares
    from_self = (mixed == images).all(1)
    assert ((mixed == images) | (mixed == partner)).all()
    assert from_self.double().mean(dim=(1, 2)).tolist() == pytest.approx([lam] * 6, rel=0, abs=1e-6)


def test_a_weight_average_equals_its_recurrence_buffers_included_and_copies_during_the_warm_up():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    average = WeightAverage(model, decay=0.75, every=2)
    expected = {name: value.clone() for name, value in model.state_dict().items()}
    for update in range(6):
        with torch.no_grad():
            model(torch.randn(8, 3, dtype=torch.float64))  # BatchNorm's running statistics move
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        warming_up = update < 2
        average.after_update(update, warming_up)
        if update % 2 == 0:
            for name, value in model.state_dict().items():
                if value.is_floating_point():
                    first = update == 0 or update == 2  # updates 0: copy (warm-up), 2: the first after it copies too
                    expected[name] = value.clone() if first else 0.75 * expected[name] + 0.25 * value
    for name, value in average.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, expected[name], rtol=1e-14, atol=0, msg=name)
    assert ema_decay_per_update(0.99998, 1024, 32, 600) == 1 - (1 - 0.99998) * (1024 * 32 / 600)  # torchvision's train.py
    assert ema_decay_per_update(0.9, 1024, 32, 2) == 0.0  # never below 0: a copy every update


def test_warm_up_then_cosine_and_step_learning_rates_at_chosen_epochs():
    parameter = nn.Parameter(torch.zeros(1))
    lr, factor, minimum, epochs, warmup = 0.4, 0.01, 0.001, 10, 3

    def schedule(name, **options):
        optimizer = torch.optim.SGD([parameter], lr=lr)
        return LearningRateSchedule(optimizer, name, warmup_epochs=warmup, warmup_factor=factor, epochs=epochs, min_lr=minimum,
                                    step_size=2, gamma=0.5, **options)

    def cosine_at(epoch):
        if epoch < warmup:
            return lr * (factor + (1 - factor) * epoch / warmup)
        return minimum + (lr - minimum) * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup))) / 2

    def step_at(epoch):
        return lr * (factor + (1 - factor) * epoch / warmup) if epoch < warmup else lr * 0.5 ** ((epoch - warmup) // 2)

    for name, closed_form in (("cosine", cosine_at), ("step", step_at)):
        running = schedule(name)
        for epoch in range(epochs):
            running.optimizer.step()  # as training does before the next epoch's lr (no gradient: no change)
            running.advance(epoch)
            fresh = schedule(name)
            fresh.advance(epoch)  # a resumed run replays the schedule to where it stands
            assert running.lr == pytest.approx(closed_form(epoch), rel=1e-12), (name, epoch)
            assert fresh.lr == running.lr


@pytest.mark.parametrize("arch", ["eca_resnet18", "se_resnet18", "resnet18"])
def test_stochastic_depth_drops_whole_samples_and_keeps_the_expectation(arch):
    """Each block's residual branch, per sample, is dropped or scaled by 1 / (1 - p); ECA's fused
    ending takes the same factors as the other blocks' plain ending."""
    torch.manual_seed(3)
    rate = 0.6
    model = models.create_model(arch, num_classes=4, drop_path_rate=rate).double().train()
    plain = models.create_model(arch, num_classes=4).double()
    plain.load_state_dict(model.state_dict())
    blocks = [block for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for block in layer]
    rates = [0.0 if block.drop_path is None else block.drop_path.p for block in blocks]
    assert rates == pytest.approx([rate * index / (len(blocks) - 1) for index in range(len(blocks))], rel=1e-15)

    block = model.layer4[1]  # the last block: p = rate
    x = torch.randn(16, 512, 2, 2, dtype=torch.float64)
    torch.manual_seed(4)
    out = block(x.clone())
    torch.manual_seed(4)
    factors = block.drop_path(torch.ones(16, 1, 1, 1, dtype=torch.float64))
    assert set(factors.flatten().tolist()) == {0.0, 1 / (1 - rate)}
    torch.testing.assert_close(out, torch.relu(_branch(block, x) * factors + x), rtol=1e-12, atol=1e-12)
    dropped = factors.flatten() == 0
    assert torch.equal(out[dropped], torch.relu(x)[dropped]) and 0 < dropped.sum() < 16
    # The expectation: the kept factor times the keep probability is 1; the drops are Bernoulli(p).
    draws = torch.cat([block.drop_path(torch.ones(4096, 1, 1, 1)) for _ in range(4)]).flatten()
    assert abs((draws == 0).double().mean().item() - rate) < 4 * math.sqrt(rate * (1 - rate) / draws.numel())
    torch.testing.assert_close(draws.mean(), torch.tensor(1.0), rtol=0, atol=4 * math.sqrt(rate / (1 - rate) / draws.numel()))
    plain.load_state_dict(model.state_dict())  # the running statistics the training-mode calls moved
    model.eval(), plain.eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(model(images), plain(images))  # evaluation keeps every block


def _branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A BasicBlock's residual branch as its forward computes it, the attention's scaling included."""
    out = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    return out if block.attention_layer is None else block.attention_layer(out)


class PlainECA(ChannelAttention):
    """ECA as plain autograd ops under the same name, so that its block ends as the others do."""

    block_attribute = "eca"

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.conv(x.mean(dim=(2, 3)).unsqueeze(1)))
        return x * gate.view(x.shape[0], -1, 1, 1)


def test_the_fused_eca_ending_with_stochastic_depth_matches_the_plain_model_in_training():
    """Logits and every gradient of ECA-ResNet-18 with stochastic depth, fused against plain ECA
    layers with the same draws (float64)."""
    torch.manual_seed(5)
    model = models.eca_resnet18(num_classes=5, drop_path_rate=0.5).double().train()
    reference = copy.deepcopy(model)
    for block in (block for layer in (reference.layer1, reference.layer2, reference.layer3, reference.layer4) for block in layer):
        block.eca = PlainECA(block.eca.conv)
    images, targets = torch.randn(6, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 0])
    results = []
    for net in (model, reference):
        torch.manual_seed(6)
        logits = net(images)
        torch.nn.functional.cross_entropy(logits, targets).backward()
        results.append((logits, {name: p.grad for name, p in net.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-10)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-9, atol=1e-9 * results[1][1][name].abs().max().item(), msg=name)


def test_no_weight_decay_on_norm_layers_and_biases():
    torch.manual_seed(7)
    model = models.eca_resnet18(num_classes=3)
    groups = parameter_groups(model, 0.1, norm_weight_decay=0.0, bias_weight_decay=0.0)
    names = {id(p): name for name, p in model.named_parameters()}
    by_decay = {0.0: set(), 0.1: set()}
    for group in groups:
        by_decay[group["weight_decay"]] |= {names[id(p)] for p in group["params"]}
    bn = {name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)}
    assert by_decay[0.0] == {f"{m}.{p}" for m in bn for p in ("weight", "bias")} | {"fc.bias"}
    assert "fc.weight" in by_decay[0.1] and "layer1.0.eca.conv.weight" in by_decay[0.1]
    assert len(by_decay[0.1]) + len(by_decay[0.0]) == len(list(model.parameters()))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer("sgd", groups, lr=0.5, weight_decay=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        if name in by_decay[0.0]:
            assert torch.equal(p, before[name]), name
        else:
            torch.testing.assert_close(p, before[name] * (1 - 0.5 * 0.1), rtol=1e-6, atol=0, msg=name)
    assert len(parameter_groups(model, 0.1)) == 1  # the paper's: one group, as model.parameters()


def test_gradient_accumulation_updates_as_one_large_batch():
    torch.manual_seed(8)
    inputs, targets = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)

    def trained(accumulation, batches):
        model = nn.Linear(4, 2).double()
        torch.nn.init.constant_(model.weight, 0.1)
        torch.nn.init.constant_(model.bias, 0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        optimization = Optimization(optimizer, LearningRateSchedule(optimizer, "step", step_size=1, gamma=1.0),
                                    accumulation=accumulation)
        updates = [optimization.step(nn.functional.mse_loss(model(x), y), step, len(batches))
                   for step, (x, y) in enumerate(batches)]
        return model.weight.detach(), updates

    whole, _ = trained(1, [(inputs[:4], targets[:4]), (inputs[4:], targets[4:])])
    halves = [(inputs[0:2], targets[0:2]), (inputs[2:4], targets[2:4]), (inputs[4:7], targets[4:7]),
              (inputs[7:10], targets[7:10])]
    accumulated, updates = trained(2, halves)
    torch.testing.assert_close(accumulated, whole, rtol=1e-14, atol=1e-15)
    assert updates == [False, True, False, True]
    _, last_group_shorter = trained(3, halves)  # groups of 3 and 1 step
    assert last_group_shorter == [False, False, True, True]


def test_repeated_augmentation_deals_each_sample_s_copies_to_different_processes_and_resumes_part_way():
    dataset, repeats, processes = list(range(12)), 3, 3
    samplers = [RepeatedAugmentationSampler(dataset, repeats, processes, rank, seed=5) for rank in range(processes)]
    for sampler in samplers:
        sampler.set_epoch(2)
    keys = [list(sampler) for sampler in samplers]
    assert all(len(rank_keys) == len(sampler) == 4 for rank_keys, sampler in zip(keys, samplers))  # an ordinary epoch's length
    draws = [draw for rank_keys in keys for _, draw in rank_keys]
    assert len(set(draws)) == len(draws)  # every copy drawn apart
    by_index = {}
    for rank, rank_keys in enumerate(keys):
        for _, draw in rank_keys:
            by_index.setdefault(draw % 12, []).append(rank)
    assert all(sorted(ranks) == sorted(set(ranks)) for ranks in by_index.values())  # copies on different processes
    assert max(len(ranks) for ranks in by_index.values()) == repeats
    samplers[1].start = 2
    assert list(samplers[1]) == keys[1][2:]
    samples = SeededSamples(torch.arange(12), seed=5)
    assert samples[(2, 7)] == samples[(2, 7 + 12)] == 7  # the same image under a copy's own seed


def test_augmentations_run_on_the_fast_pipeline_s_uint8_crops():
    torch.manual_seed(9)
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    for augmentation in (Augmentation("ra", 21), Augmentation("ta_wide"), Augmentation(random_erase=1.0)):
        crops = [RandomCropFlip(24, 0.5, augmentation)(image) for _ in range(3)]
        assert all(crop.dtype == torch.uint8 and crop.shape == (3, 24, 24) for crop in crops)
        assert not torch.equal(crops[0], crops[1])
    erased = RandomCropFlip(24, 1.0, Augmentation(random_erase=1.0))(torch.zeros(3, 24, 24, dtype=torch.uint8))
    filled = (erased == torch.tensor(MEAN_PIXEL, dtype=torch.uint8).view(3, 1, 1)).all(0)
    assert 0 < filled.sum() < 24 * 24  # a rectangle of ImageNet's mean colour, which normalises to about 0


def test_lamb_comes_from_timm_and_without_timm_is_a_one_line_error():
    model = nn.Linear(3, 2)
    optimizer = build_optimizer("lamb", model.parameters(), lr=0.01, weight_decay=0.02, momentum=0.9)
    assert type(optimizer).__module__.startswith("timm.optim")
    result = run_code(
        "import sys; sys.modules['timm'] = None\n"
        "from torch import nn\nfrom utils.training.optim import build_optimizer\nfrom utils.console import UsageError\n"
        "try:\n    build_optimizer('lamb', nn.Linear(2, 2).parameters(), lr=0.1)\n"
        "except UsageError as error:\n    print(error)\n"
    )
    assert result.stdout.strip() == "--opt lamb takes LAMB from timm, which is not installed: pip install timm", result.stderr


# --- every ingredient at once: SIGTERM, then --resume auto ---------------------------------------

EVERYTHING = [
    "-a", "eca_resnet18", "--recipe", "rsb-a1", "--image-size", "32", "-b", "8", "-p", "1", "--seed", "0", "--epochs", "2",
    "--warmup-epochs", "1", "--accum-steps", "2", "--ema-decay", "0.9", "--ema-steps", "1", "--random-erase", "0.25",
    "--clip-grad", "5", "--drop-path", "0.2", "--resume", "auto", "--checkpoint-every", "5",
]
STEPS_PER_EPOCH = 6  # 24 images, micro-batches of 4


@pytest.fixture(scope="module")
def larger_data(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("shapes24"), train_per_class=8, val_per_class=2)


def everything(data, run_dir, workers=0):
    return [str(data), *EVERYTHING, "-j", str(workers), "--output-dir", str(run_dir)]


def test_every_ingredient_on_resumes_bitwise_after_sigterm(larger_data, tmp_path):
    """rsb-a1 (LAMB, BCE, label smoothing, Mixup/CutMix, RandAugment, repeated augmentation,
    stochastic depth, no decay on norms and biases, warm-up + cosine) with an EMA, random
    erasing, clipping and accumulation: stopped by SIGTERM (its checkpoint waits for the
    accumulated update), resumed with --resume auto, it ends as the run that never stopped."""
    straight = tmp_path / "straight"
    assert main_module.main(everything(larger_data, straight)) == 0
    stopped = tmp_path / "stopped"
    code, out = stop_with_signals(everything(larger_data, stopped, workers=2), 1, signal.SIGTERM, signal.SIGTERM)
    assert code == EXIT_STOPPED, out
    saved = load_checkpoint_file(stopped / "checkpoint_step.pth.tar")
    assert saved["step"] % 2 == 0, "a mid-epoch checkpoint lies between accumulated updates"
    assert main_module.main(everything(larger_data, stopped)) == 0

    expected, actual = (load_checkpoint_file(run / "checkpoint.pth.tar") for run in (straight, stopped))
    for key in ("state_dict", "ema"):
        assert [name for name in expected[key] if not torch.equal(expected[key][name], actual[key][name])] == [], key
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(actual["optimizer"]["state"][index][name])), (index, name)
    assert expected["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    assert csv_rows(stopped) == csv_rows(straight)
    assert {"ema_val_loss", "ema_val_prec1", "ema_val_prec5"} <= set(csv_rows(straight)[0])
    assert actual["recipe"]["name"] == "rsb-a1" and actual["recipe"]["settings"]["accum_steps"]["value"] == 2


def test_torchrun_trains_every_ingredient_on_two_processes(larger_data, tmp_path):
    result = run_script(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2,
        "main.py", *everything(larger_data, tmp_path), "--epochs", 1,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "=> weights identical on all 2 processes" in result.stdout
    assert result.stdout.count(" * EMA Prec@1") == 1


def test_an_augmentation_changes_images_only_with_a_policy_or_erasing():
    """What --decode-device cuda refuses: a policy or random erasing, not a RandAugment magnitude left set."""
    assert not Augmentation("none", ra_magnitude=18).changes_images
    assert Augmentation("ra").changes_images and Augmentation("ta_wide").changes_images
    assert Augmentation(random_erase=0.25).changes_images
