"""Every model through graph capture and export: ONNX (both exporters, run by ONNX Runtime),
TorchScript (script and trace), torch.export, torch.compile, FX feature extraction, timm's
features interface, and export.py on a released-format checkpoint.

Capture and export cost seconds per model on 2 cores, and ResNet-34/101/152 only repeat the
blocks of ResNet-18/50, so by default the cheaper paths (script, trace with grad,
torch.export, features_only) run on the smallest registered model of every kind (class,
block type, attention), and the costly ones (ONNX, trace without grad, torch.compile, FX) on
the two whose ECA layers run both call forms (ECA-ResNet-18: the fused block ending over the
BatchNorm output and over a downsampled identity; ECA-MobileNetV2: the plain scale); ONNX's
default exporter by default only through export.py (ECA-ResNet-18, batch 1 and 3).
``EXPORT_TEST_MODELS=all`` runs every registered model through every path (long);
``EXPORT_TEST_MODELS=eca_resnet50,se_resnet101`` the ones named.
"""

import copy
import functools
import os
import re
import subprocess
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from helpers import run_script, script_env
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.feature_extraction import create_feature_extractor

import models
from models import EfficientChannelAttention
from utils.checkpoint import CheckpointWarning, load_model
from utils.export import export_model, load_exported, serialize

IMAGE = 32
CLASSES = 5


@functools.lru_cache(maxsize=None)
def _kind_and_size(arch: str) -> Tuple[tuple, Tuple[bool, int]]:
    """What a model is made of, depth aside (its class, block type, attention types), and its size
    as the selection orders it: a network with torchvision's stem and shortcut before any of the
    ResNet-D/T family (timm's ecaresnet26t is smaller than ECA-ResNet-50; its stem and
    average-pool shortcut are scripted in test_foreign_layouts)."""
    with torch.device("meta"):
        model = models.create_model(arch)
    block = next((type(m).__name__ for m in model.modules() if hasattr(m, "attention_name")), None)
    attention = sorted({type(m).__name__ for m in model.modules() if isinstance(m, models.ChannelAttention)})
    resnet_d = bool(getattr(model, "avg_down", False))
    return (type(model).__name__, block, tuple(attention)), (resnet_d, sum(p.numel() for p in model.parameters()))


ORIGINAL_COMPARISON = {(), ("EfficientChannelAttention",), ("SqueezeExcitation",), ("NonSharedChannelAttention",)}
"""Attention kinds checked in every block type: none, ECA (whose fused ending differs with the block), SE, ECA-NS."""


def _smallest_of_each_kind() -> List[str]:
    """The smallest model of every (class, block type, attention) kind of the original comparison, and
    of every other attention kind only the smallest model (a ResNet-18): its layer runs the same code
    in either block type, and each ResNet-50 costs tens of seconds here."""
    chosen: Dict[tuple, Tuple[int, str]] = {}
    for arch in models.model_names:
        kind, size = _kind_and_size(arch)
        if kind[2] not in ORIGINAL_COMPARISON:
            kind = (kind[0], None, kind[2])
        if kind not in chosen or size < chosen[kind][0]:
            chosen[kind] = (size, arch)
    return sorted(arch for _, arch in chosen.values())


def _selected_models() -> Tuple[List[str], List[str]]:
    """(models for the cheaper paths, models for the costly ones)."""
    wanted = os.environ.get("EXPORT_TEST_MODELS", "")
    if wanted == "all":
        return list(models.model_names), list(models.model_names)
    if wanted:
        named = [name for name in wanted.split(",") if name]
        return named, named
    return _smallest_of_each_kind(), ["eca_mobilenet_v2", "eca_resnet18"]


MODELS, COSTLY_PATH_MODELS = _selected_models()
DIRECT_ONNX_EXPORTERS = ["dynamo", "torchscript"] if os.environ.get("EXPORT_TEST_MODELS") else ["torchscript"]
"""By default the default (dynamo) exporter is checked through export.py, on ECA-ResNet-18 below."""


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.create_model(arch, num_classes=CLASSES)
    # Non-trivial BatchNorm statistics, so that eval mode is not the identity at initialisation.
    with torch.no_grad():
        model.train()(torch.randn(4, 3, IMAGE, IMAGE))
    return model.eval()


@pytest.fixture(scope="module")
def built() -> Dict[str, torch.nn.Module]:
    return {}


def model_for(built: Dict[str, torch.nn.Module], arch: str) -> torch.nn.Module:
    if arch not in built:
        built[arch] = build(arch)
    return built[arch].eval()


def train_without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Training mode, but with dropout (ECA-MobileNetV2's classifier) off, so that two runs compare."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    return model


TRAIN_BATCH = 4
"""The batch of the training-mode comparisons. At batch 2 the last feature map (1 x 1 at 32 pixels)
gives train-mode BatchNorm two values per channel, which it normalises to -1 and +1 whatever they
are: its input gradient is then driven by eps alone, and float64 rounding made up much of
ECA-MobileNetV2's gradients (compiled and eager differed by up to 70% of a parameter's largest
gradient, and passed only by a 1e-6 tolerance). At batch 4 they agree to 1e-12 of it."""


def images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def eager(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_the_default_selection_covers_every_kind():
    kinds = {_kind_and_size(arch)[0] for arch in models.model_names}
    selected = {_kind_and_size(arch)[0] for arch in _smallest_of_each_kind()}
    assert {kind for kind in kinds if kind[2] in ORIGINAL_COMPARISON} <= selected
    assert {(cls, attention) for cls, _, attention in selected} == {(cls, attention) for cls, _, attention in kinds}
    assert {"eca_resnet18", "eca_resnet50", "eca_mobilenet_v2", "se_resnet50", "eca_ns_resnet50"} <= set(
        _smallest_of_each_kind()
    )


# --- ONNX ----------------------------------------------------------------------------------


@pytest.mark.parametrize("exporter", DIRECT_ONNX_EXPORTERS)
@pytest.mark.parametrize("arch", COSTLY_PATH_MODELS)
def test_onnx_runtime_matches_eager(built, arch, exporter, tmp_path):
    """Dynamic batch axis; ONNX Runtime (CPU) at batch 1 and 3 within 1e-4 of eager float32."""
    model = model_for(built, arch)
    result = export_model(model, "onnx", tmp_path / f"{arch}.onnx", image_size=IMAGE, onnx_exporter=exporter)
    assert result.batch_sizes == [1, 3]
    assert result.max_abs_diff <= 1e-4, result
    run = load_exported(tmp_path / f"{arch}.onnx", "onnx")
    torch.testing.assert_close(run(images(3)), eager(model, images(3)), rtol=1e-4, atol=1e-4)


def test_onnx_graph_has_only_ordinary_operators(built):
    import onnx

    model = onnx.load_from_string(serialize(model_for(built, "eca_resnet18"), "onnx", IMAGE, onnx_exporter="torchscript"))
    ops = {node.op_type for node in model.graph.node}
    assert {"Conv", "Sigmoid", "ReduceMean", "Relu"} <= ops
    assert not any(node.domain not in ("", "ai.onnx") for node in model.graph.node)


# --- TorchScript ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", MODELS)
def test_torchscript_script_matches_eager(built, arch, tmp_path):
    model = model_for(built, arch)
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, tmp_path / "model.pt")
    loaded = torch.jit.load(tmp_path / "model.pt")
    for batch in (1, 3):
        expected = eager(model, images(batch))
        torch.testing.assert_close(loaded(images(batch)), expected)  # grad on
        with torch.no_grad():
            torch.testing.assert_close(scripted(images(batch)), expected)


@pytest.mark.parametrize(
    "arch, grad",
    [(arch, True) for arch in MODELS] + [(arch, False) for arch in COSTLY_PATH_MODELS],
    ids=[f"{arch}-grad" for arch in MODELS] + [f"{arch}-no_grad" for arch in COSTLY_PATH_MODELS],
)
def test_torchscript_trace_matches_eager(built, arch, grad):
    """torch.jit.trace's own check (re-running the model and the trace) must pass with grad on and off."""
    model = model_for(built, arch)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(model, images(2), check_inputs=[(images(2, seed=5),)])
    torch.testing.assert_close(traced(images(2, seed=7)), eager(model, images(2, seed=7)))


# --- torch.export and torch.compile --------------------------------------------------------


@pytest.mark.parametrize("arch", MODELS)
def test_torch_export_with_dynamic_batch(built, arch):
    model = model_for(built, arch)
    program = torch.export.export(model, (images(2),), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    for batch in (1, 3):
        torch.testing.assert_close(program.module()(images(batch)), eager(model, images(batch)))


@pytest.mark.parametrize("arch", COSTLY_PATH_MODELS)
def test_torch_compile_fullgraph_eval_and_training(built, arch):
    """No graph break (fullgraph) in eval and in training; training compiles the backward too."""
    torch._dynamo.reset()
    model = model_for(built, arch)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images(2)), model(images(2)))

    # Training in float64 and at batch TRAIN_BATCH (see there).
    torch._dynamo.reset()
    reference = train_without_dropout(copy.deepcopy(model).double())
    trained = train_without_dropout(copy.deepcopy(model).double())
    compiled = torch.compile(trained, backend="aot_eager", fullgraph=True)
    targets = torch.tensor([1, 3, 0, 4])
    logits, ref_logits = compiled(images(TRAIN_BATCH).double()), reference(images(TRAIN_BATCH).double())
    torch.testing.assert_close(logits, ref_logits)
    F.cross_entropy(logits, targets).backward()
    F.cross_entropy(ref_logits, targets).backward()
    for (name, param), ref_param in zip(trained.named_parameters(), reference.parameters()):
        torch.testing.assert_close(param.grad, ref_param.grad, msg=name)


# --- FX and the features interface ---------------------------------------------------------


@pytest.mark.parametrize("arch", COSTLY_PATH_MODELS)
def test_torchvision_feature_extractor_in_train_and_eval(built, arch):
    """Every feature_info module's output, and the gradients through them; float64 and TRAIN_BATCH, as above."""
    model = copy.deepcopy(model_for(built, arch)).double()
    names = model.feature_info.module_name()
    for training in (True, False):
        model.train(training)
        extractor = create_feature_extractor(model, {name: name for name in names})
        assert model.training == training and extractor.training == training
        reference = models.FeatureListNet(copy.deepcopy(model), range(len(names))).train(training)
        features = extractor(images(TRAIN_BATCH).double())
        expected = reference(images(TRAIN_BATCH).double())
        for name, value in zip(names, expected):
            torch.testing.assert_close(features[name], value, msg=name)
        sum(f.square().mean() for f in features.values()).backward()
        sum(f.square().mean() for f in expected).backward()
        ref_grads = dict(reference.named_parameters())
        for key, param in extractor.named_parameters():
            if key in ref_grads:
                torch.testing.assert_close(param.grad, ref_grads[key].grad, msg=key)
        assert any(param.grad is not None for param in extractor.parameters())
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("arch", MODELS)
def test_features_only_returns_the_stages_named_in_feature_info(arch):
    """timm's convention: a list of the picked stages' outputs, their channels and strides in
    ``feature_info``, the classifier's keys (less the head) for the modules kept."""
    torch.manual_seed(0)
    classifier = models.create_model(arch, num_classes=CLASSES).eval()
    backbone = models.create_model(arch, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert set(backbone.state_dict()) < set(classifier.state_dict())
    backbone.load_state_dict({k: v for k, v in classifier.state_dict().items() if k in backbone.state_dict()})
    info = backbone.feature_info
    assert info == classifier.feature_info[1:]
    seen = {}
    for name in info.module_name():
        classifier.get_submodule(name).register_forward_hook(lambda m, i, out, name=name: seen.setdefault(name, out))
    eager(classifier, images(2))
    features = eager(backbone, images(2))
    assert isinstance(features, list) and len(features) == 4
    for feature, name, channels, stride in zip(features, info.module_name(), info.channels(), info.reduction()):
        assert feature.shape == (2, channels, IMAGE // stride, IMAGE // stride)
        torch.testing.assert_close(feature, seen[name], msg=name)


@pytest.mark.parametrize("arch", ["eca_resnet18", "eca_mobilenet_v2"])
def test_forward_features_and_reset_classifier(arch):
    torch.manual_seed(0)
    model = models.create_model(arch, num_classes=CLASSES).eval()
    x = images(2)
    features = model.forward_features(x).detach()
    assert features.shape == (2, model.num_features, 1, 1)
    model.reset_classifier(7)
    assert eager(model, x).shape == (2, 7)
    model.reset_classifier(0)
    torch.testing.assert_close(eager(model, x), features.mean(dim=(2, 3)))


def test_out_indices_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r"out_indices \(2, 5\): give increasing indices from 0 to 4"):
        models.create_model("eca_resnet18", features_only=True, out_indices=(2, 5))


def test_released_checkpoint_loads_into_a_features_only_model(released_file):
    path, source = released_file
    with pytest.warns(CheckpointWarning) as caught:
        backbone, info = load_model(path, features_only=True, out_indices=(1, 2, 3, 4))
    assert any("features only, the classifier 'fc' is left out" in str(w.message) for w in caught)
    assert isinstance(backbone, models.FeatureListNet) and info["arch"] == "eca_resnet18"
    x = images(2)
    torch.testing.assert_close(eager(backbone.eval(), x)[-1], source.eval().forward_features(x).detach())


@pytest.mark.parametrize("capture", ["script", "trace", "export"])
def test_detection_body_captures(built, capture):
    """The ResNet body as the detectors take it (torchvision's IntermediateLayerGetter, children unrenamed)."""
    body = IntermediateLayerGetter(copy.deepcopy(model_for(built, "eca_resnet18")), {f"layer{i}": str(i) for i in range(1, 5)})
    x = images(2)
    if capture == "script":
        graph = torch.jit.script(body)
    elif capture == "trace":
        graph = torch.jit.trace(body, x, strict=False)
    else:
        graph = torch.export.export(body, (x,)).module()
    expected = eager(body, images(2, seed=4))
    actual = graph(images(2, seed=4))
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, msg=name)


# --- the fast eager path and mixed precision ------------------------------------------------


def test_eager_training_still_takes_the_fast_path():
    model = models.eca_resnet18(num_classes=CLASSES).train()
    block = model.layer1[0]
    seen = []
    block.register_forward_hook(lambda module, inputs, output: seen.append(output.grad_fn.name()))
    model(images(2))
    assert seen == ["_GateAddReLUBackward"]


def _bf16_gate_is_different(layer: EfficientChannelAttention, x: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether a gate computed in bfloat16 (what autocast would do to the conv) changes the output."""
    pooled = x.float().mean(dim=(2, 3)).unsqueeze(1).bfloat16()
    gate = torch.sigmoid(F.conv1d(pooled, layer.conv.weight.bfloat16(), padding=layer.padding))
    return not torch.equal(x * gate.view(x.shape[0], -1, 1, 1), expected)


@pytest.mark.parametrize("capture", ["script", "trace", "export"])
@pytest.mark.parametrize("residual", [False, True], ids=["scale", "residual"])
def test_captured_graphs_keep_the_gate_in_float32_under_autocast(capture, residual):
    torch.manual_seed(3)
    layer = EfficientChannelAttention(64, 5).eval()
    x = torch.randn(4, 64, 5, 5).bfloat16()
    identity = torch.randn(4, 64, 5, 5).bfloat16()
    inputs = (x, identity) if residual else (x,)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        expected = layer(*[t.clone() for t in inputs])
    if capture == "script":
        graph = torch.jit.script(layer)
    elif capture == "trace":
        graph = torch.jit.trace(layer, inputs)
    else:
        graph = torch.export.export(layer, inputs).module()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        captured = graph(*inputs)
    # TorchScript's own autocast pass computes bfloat16 products in float32: round as eager does.
    assert captured.dtype == (torch.float32 if capture == "script" else torch.bfloat16)
    torch.testing.assert_close(captured.to(expected.dtype), expected, rtol=0, atol=0)
    assert residual or _bf16_gate_is_different(layer, x, expected)


# --- export.py -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released_file(tmp_path_factory):
    """ECA-ResNet-18 as the authors released their checkpoints: ``module.`` keys, a wrong arch
    string, a tensor best_prec1, an optimizer state."""
    torch.manual_seed(0)
    model = models.eca_resnet18(num_classes=CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(model(images(4)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    state = {
        "epoch": 100,
        "arch": "resnet18_eca",
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "best_prec1": torch.tensor(70.9),
        "optimizer": optimizer.state_dict(),
    }
    path = tmp_path_factory.mktemp("released") / "eca_resnet18_k3577.pth.tar"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path, model


def export_cli(*args, env=None) -> subprocess.CompletedProcess:
    return run_script("export.py", *args, env=env, timeout=600)


@pytest.mark.parametrize(
    "format, suffix, extra",
    [
        ("onnx", "onnx", ["--dynamic-batch"]),
        ("torchscript", "pt", []),
        ("exported-program", "pt2", []),
    ],
    ids=["onnx", "torchscript", "exported-program"],
)
def test_export_cli_writes_a_checked_file(released_file, tmp_path, format, suffix, extra):
    path, source = released_file
    out = tmp_path / f"eca_resnet18.{suffix}"
    done = export_cli("--weights", path, "--format", format, "--out", out, "--image-size", IMAGE, *extra)
    assert done.returncode == 0, done.stderr
    match = re.search(r"largest difference from the eager model ([0-9.e+-]+) \(tolerance", done.stdout)
    assert match and float(match.group(1)) <= 1e-4, done.stdout
    assert f"wrote {out}" in done.stdout
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no temporary file left behind
    batch = 1 if "--dynamic-batch" in extra or format == "torchscript" else 2
    run = load_exported(out, format)
    torch.testing.assert_close(run(images(batch)), eager(source.eval(), images(batch)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "{tmp}/missing.pth.tar", "--format", "onnx", "--out", "{tmp}/m.onnx"], "does not exist"),
        (["--weights", "{weights}", "--format", "tflite", "--out", "{tmp}/m.tflite"], "invalid choice: 'tflite'"),
        (["--weights", "{weights}", "--format", "onnx", "--out", "{tmp}/no/such/m.onnx"], "does not exist"),
        (["--weights", "{weights}", "--format", "torchscript", "--out", "{tmp}"], "is a directory"),
    ],
    ids=["missing-weights", "unknown-format", "missing-folder", "out-is-a-folder"],
)
def test_export_cli_bad_input_is_one_line(released_file, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, weights=released_file[0]) for a in args]
    done = export_cli(*args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("export.py: error: ")
    assert message in done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_export_cli_unwritable_folder(released_file, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    done = export_cli("--weights", released_file[0], "--format", "torchscript", "--out", folder / "m.pt")
    assert done.returncode == 2 and "is not writable" in done.stderr and done.stderr.count("\n") == 1


def test_export_cli_names_the_requirements_when_onnx_is_missing(released_file, tmp_path):
    """A real interpreter in which onnxruntime cannot be imported (sitecustomize hides it)."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    done = export_cli("--weights", released_file[0], "--format", "onnx", "--out", tmp_path / "m.onnx", env=script_env(PYTHONPATH=str(hide)))
    assert done.returncode == 2
    assert done.stderr == "export.py: error: onnx export needs onnxruntime: pip install -r requirements-export.txt\n"
