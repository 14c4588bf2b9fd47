"""An attention layer written and registered outside the package (tests/user_attention.py, as a
user's own file) is a model like the built-in ones: it trains in the real training loop, the
counters count it, its checkpoint reloads with its settings read from the weights (also through
its adapter), it scripts and exports; and ECA, written with the same gate, counts the same."""

import pytest
import torch
from user_attention import ChannelMixGate

import models
from models.attention import ChannelAttention
from models.resnet import BasicBlock
from scripts.make_demo_data import make_split
from utils.checkpoint import load_model, save_checkpoint
from utils.counting.complexity import measure, paper_flops
from utils.data.datasets import image_folder
from utils.data.loaders import build_loader, start_epoch
from utils.distributed import DistributedContext
from utils.export import export_model, missing_export_packages
from utils.paper.count_tables import kernel_label
from utils.training.classification import ClassificationTask
from utils.training.config import RunConfig
from utils.training.engine import train_one_epoch
from utils.training.optim import LearningRateSchedule, Optimization

IMAGE = 32
CLASSES = 10  # make_demo_data's shapes


def gate_weights(model: torch.nn.Module) -> list:
    return [layer.mix.weight.detach().clone() for layer in model.modules() if isinstance(layer, ChannelMixGate)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """mix_gate_resnet18 after one epoch of the real loop on 20 JPEGs, and the lines it printed."""
    root = tmp_path_factory.mktemp("shapes")
    make_split(str(root), "train", per_class=2, size=IMAGE, seed=0, first_index=0)
    context = DistributedContext()
    loader = build_loader(image_folder(str(root / "train"), True, IMAGE), True, 4, 0, 0, context, pin_memory=False)
    start_epoch(loader, 0)
    torch.manual_seed(0)
    model = models.create_model("mix_gate_resnet18", k_size="3557", num_classes=CLASSES)
    before = gate_weights(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimization = Optimization(optimizer, LearningRateSchedule(optimizer, "step", step_size=30, gamma=0.1))
    lines = []
    config = RunConfig(context, torch.device("cpu"), lines.append, print_freq=1)
    task = ClassificationTask(torch.nn.CrossEntropyLoss(), loader, model)
    stats = train_one_epoch(task, model, loader, 0, optimization, config)
    return model.eval(), before, stats, lines


def test_it_trains_in_the_real_loop(trained):
    model, before, stats, lines = trained
    assert len(lines) == 5 and all(line.startswith("Epoch: [0]") for line in lines)  # 20 images, batches of 4
    assert torch.isfinite(torch.tensor(stats["loss"]))
    after = gate_weights(model)
    assert [w.shape[-1] for w in after] == [3, 3, 5, 5, 5, 5, 7, 7]
    assert all(not torch.equal(a, b) for a, b in zip(after, before))  # the gates trained


def test_blocks_hold_it_under_its_own_name():
    model = models.create_model("mix_gate_resnet18", num_classes=CLASSES)
    block = model.layer3[1]
    assert block.attention_name == "gate" and block.attention_layer is block.gate
    assert [key for key in model.state_dict() if key.startswith("layer3.1.gate")] == ["layer3.1.gate.mix.weight"]


def test_it_is_counted_through_the_interface():
    model = models.create_model("mix_gate_resnet18", k_size="3557", num_classes=CLASSES)
    counts = measure(model, IMAGE)
    assert counts.attention_params == 3 + 3 + 5 + 5 + 5 + 5 + 7 + 7
    assert counts.attention_layers == {"ChannelMixGate": 8}
    assert kernel_label(model) == "3557"
    # the gate computes what ECA's does, so the paper's rules count both alike
    eca = models.eca_resnet18(k_size="3557", num_classes=CLASSES)
    assert paper_flops(model, IMAGE) == paper_flops(eca, IMAGE)
    biased = models.create_model("mix_gate_resnet18", k_size="3557", num_classes=CLASSES, bias=True)
    assert paper_flops(biased, IMAGE) - paper_flops(model, IMAGE) == 64 * 2 + 128 * 2 + 256 * 2 + 512 * 2  # one add per channel


def test_its_checkpoint_reloads_with_the_settings_read_from_the_weights(trained, tmp_path):
    model = trained[0]
    save_checkpoint({"epoch": 1, "arch": "mix_gate_resnet18", "state_dict": model.state_dict()}, tmp_path / "gate.pth.tar")
    loaded, info = load_model(tmp_path / "gate.pth.tar")
    assert info["arch"] == "mix_gate_resnet18"
    assert info["kwargs"] == {"num_classes": CLASSES, "k_size": [3, 5, 5, 7]}
    x = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x), rtol=0, atol=0)

    torch.manual_seed(1)
    biased = models.create_model("mix_gate_resnet18", num_classes=4, bias=True)
    save_checkpoint({"state_dict": biased.state_dict()}, tmp_path / "biased.pth.tar")
    _, info = load_model(tmp_path / "biased.pth.tar")
    assert info["arch"] == "mix_gate_resnet18"
    assert info["kwargs"] == {"num_classes": 4, "bias": True, "k_size": [3, 3, 3, 3]}


def test_its_adapter_converts_its_older_checkpoints(trained, tmp_path):
    model = trained[0]
    older = {key.replace(".gate.", ".channel_gate."): value for key, value in model.state_dict().items()}
    assert sum(".channel_gate." in key for key in older) == 8
    torch.save({"state_dict": older}, tmp_path / "older.pth")
    loaded, info = load_model(tmp_path / "older.pth")
    assert info["arch"] == "mix_gate_resnet18"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize(
    "format, options",
    [("torchscript", {}), ("exported-program", {}), ("onnx", {"onnx_exporter": "torchscript"})],
    ids=["torchscript", "exported-program", "onnx"],
)
def test_it_scripts_and_exports(trained, tmp_path, format, options):
    """utils.export writes the file, loads it back as a deployment would and compares it with the model."""
    missing = missing_export_packages(format, **options)
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (requirements-export.txt)")
    result = export_model(trained[0], format, tmp_path / f"gate.{format}", image_size=IMAGE, **options)
    assert result.passed and result.batch_sizes == [1, 3]


class Doubling(ChannelAttention):
    """A layer with TorchScript constants of its own (``__constants__`` replaced, not extended)."""

    __constants__ = ["factor"]
    block_attribute = "doubling"

    def __init__(self, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_a_scripted_block_calls_a_layer_with_constants_of_its_own():
    torch.manual_seed(0)
    block = BasicBlock(8, 8, attention=Doubling()).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        expected = torch.relu(2 * block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + x)
        torch.testing.assert_close(block(x), expected)
        torch.testing.assert_close(torch.jit.script(block)(x), expected)


def test_a_block_attribute_the_block_uses_is_refused():
    class Clashing(ChannelMixGate):
        block_attribute = "conv1"

    with pytest.raises(ValueError, match="Clashing.block_attribute 'conv1' is not a free attribute name of BasicBlock"):
        BasicBlock(64, 64, attention=Clashing(64))
