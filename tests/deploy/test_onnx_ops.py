"""What float ONNX exports contain: BatchNorm folded into the convs, hard-swish / hard-sigmoid as
ONNX's HardSwish / HardSigmoid ops, ReduceMean over H, W as GlobalAveragePool (deploy.writer's
optimize_onnx), and the onnxruntime session that runs them.

The rewrite is checked on small hand-built graphs against numpy (with onnxruntime's own graph
optimisations off, so the file's math is what is tested), then on the exported networks of every
family against the MindSpore Cell, within the export tolerance of deploy.verify.
"""

import collections

import mindspore as ms
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from netutils import calibrated  # tests/netutils.py
from onnx import TensorProto, helper, numpy_helper

from mindcv_mobile.config import load_config
from mindcv_mobile.deploy import export_tolerance, float32_noise, onnx_session, runtime_op_types
from mindcv_mobile.deploy.writer import OPTIMIZED_OPSET, optimize_onnx, write_cell
from mindcv_mobile.host import cpu_cores
from mindcv_mobile.models import create_model, save_checkpoint
from mindcv_mobile.models.layers import ChannelMean, HardSigmoid, HardSwish
from mindcv_mobile.tasks.export import export

SIZE = 32
RNG = np.random.default_rng(0)


def const(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def model_of(nodes, initializers, outputs, channels=4, opset=11, output_shape=None):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, channels, 5, 5])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, output_shape) for name in outputs],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run_plain(model, x):
    """The graph as written: onnxruntime's own fusions off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def op_types(model):
    return collections.Counter(node.op_type for node in model.graph.node)


SCALARS = [const("three", 3.0), const("zero", 0.0), const("six", 6.0)]


def test_conv_batchnorm_folds_into_one_conv_with_the_same_output():
    x = RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)
    w = RNG.standard_normal((6, 4, 1, 1)).astype(np.float32)
    gamma, beta, mean = (RNG.normal(m, 0.5, 6).astype(np.float32) for m in (1.0, 0.0, 0.0))
    var = RNG.uniform(0.2, 2.0, 6).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["y"], kernel_shape=[1, 1]),
        helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["out"], epsilon=1e-3),
    ]
    tensors = [const("conv.weight", w), const("g", gamma), const("b", beta), const("m", mean), const("v", var)]
    model = optimize_onnx(model_of(nodes, tensors, ["out"]))
    assert model.opset_import[0].version == OPTIMIZED_OPSET
    assert op_types(model) == {"Conv": 1}
    conv = model.graph.node[0]
    assert list(conv.input) == ["x", "conv.weight", "conv.bias"]  # named after the weight
    assert sorted(t.name for t in model.graph.initializer) == ["conv.bias", "conv.weight"]
    conv_out = np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), x)
    ref = (conv_out - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-3) * gamma[:, None, None]
    ref += beta[:, None, None]
    np.testing.assert_allclose(run_plain(model, x)[0], ref, rtol=1e-5, atol=1e-5)
    # a BatchNorm in training mode normalises with the batch's statistics: not foldable
    nodes[1] = helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["out"], training_mode=1)
    training = model_of(nodes, tensors, ["out"], opset=14, output_shape=[None, 6, 5, 5])
    assert op_types(optimize_onnx(training)) == {"Conv": 1, "BatchNormalization": 1}


def test_hard_swish_and_hard_sigmoid_become_single_onnx_ops():
    x = (RNG.standard_normal((2, 4, 5, 5)) * 4).astype(np.float32)  # both clip ends are reached
    nodes = [
        helper.make_node("Add", ["x", "three"], ["s_a"]),
        helper.make_node("Clip", ["s_a", "zero", "six"], ["s_c"]),
        helper.make_node("Mul", ["x", "s_c"], ["s_m"]),
        helper.make_node("Div", ["s_m", "six"], ["swish"]),
        helper.make_node("Add", ["three", "x"], ["g_a"]),  # 3 + x: either operand order
        helper.make_node("Clip", ["g_a", "zero", "six"], ["g_c"]),
        helper.make_node("Div", ["g_c", "six"], ["sigmoid"]),
    ]
    model = optimize_onnx(model_of(nodes, SCALARS, ["swish", "sigmoid"]))
    assert op_types(model) == {"HardSwish": 1, "HardSigmoid": 1}
    assert len(model.graph.initializer) == 0  # the constants 3, 0, 6 are gone with their nodes
    swish, sigmoid = run_plain(model, x)
    relu6 = np.clip(x.astype(np.float64) + 3, 0, 6)
    np.testing.assert_allclose(swish, x * relu6 / 6, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sigmoid, relu6 / 6, rtol=1e-6, atol=1e-6)


def test_graphs_that_only_look_alike_are_left_as_they_are():
    x = RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)
    w = RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)
    bn = [const("g", np.ones(4)), const("b", np.zeros(4)), const("m", np.full(4, 0.5)), const("v", np.full(4, 2.0))]
    nodes = [
        # a conv output read by BN and by another node: folding would change the other reader
        helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1]),
        helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["y"], ["y_relu"]),
        # x + 2 is no hard-sigmoid; nor is relu6(x + 3) whose Clip output has two readers
        helper.make_node("Add", ["x", "two"], ["p_a"]),
        helper.make_node("Clip", ["p_a", "zero", "six"], ["p_c"]),
        helper.make_node("Div", ["p_c", "six"], ["plus_two"]),
        helper.make_node("Add", ["x", "three"], ["q_a"]),
        helper.make_node("Clip", ["q_a", "zero", "six"], ["q_c"]),
        helper.make_node("Div", ["q_c", "six"], ["shared"]),
        helper.make_node("Neg", ["q_c"], ["q_neg"]),
        # a mean over C and H is no global pool
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2], keepdims=1),
    ]
    outputs = ["bn", "y_relu", "plus_two", "shared", "q_neg", "mean"]
    original = model_of(nodes, [const("w", w), const("two", 2.0)] + SCALARS + bn, outputs)
    before = run_plain(original, x)
    model = optimize_onnx(model_of(nodes, [const("w", w), const("two", 2.0)] + SCALARS + bn, outputs))
    assert op_types(model) == op_types(original)
    for got, want in zip(run_plain(model, x), before):
        np.testing.assert_array_equal(got, want)


def test_mean_over_height_and_width_becomes_a_global_pool():
    x = RNG.standard_normal((3, 4, 5, 5)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["kept"], axes=[2, 3], keepdims=1),
        helper.make_node("ReduceMean", ["x"], ["flat"], axes=[2, 3], keepdims=0),
    ]
    model = optimize_onnx(model_of(nodes, [], ["kept", "flat"]))
    assert op_types(model) == {"GlobalAveragePool": 2, "Flatten": 1}
    kept, flat = run_plain(model, x)
    ref = x.astype(np.float64).mean(axis=(2, 3))
    np.testing.assert_allclose(kept, ref[:, :, None, None], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(flat, ref, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(1).uniform(-2, 2, (24, 3, SIZE, SIZE)).astype(np.float32)


def cells(net, kind):
    return sum(isinstance(cell, kind) for _, cell in net.cells_and_names())


@pytest.mark.slow
@pytest.mark.parametrize(
    "model", ["mobilenet_v1_025", "mobilenet_v2_035", "mobilenet_v3_small_075", "mobilenet_v3_large_075"]
)
def test_exported_onnx_has_folded_norms_fused_activations_and_the_cells_logits(model, calib, tmp_path):
    net = calibrated(create_model(model, num_classes=10), calib, 0)
    ckpt = str(tmp_path / "w.ckpt")
    save_checkpoint(net, ckpt)
    cfg = load_config(None, {"model": model, "num_classes": 10, "ckpt_path": ckpt, "image_resize": SIZE, "mode": 1})
    result = export(cfg, "ONNX", str(tmp_path / model))  # checks itself against the Cell
    exported = onnx.load(result.path)
    ops = op_types(exported)
    print(f"{model}: {dict(ops)}; export check: max abs diff {result.max_abs_diff:.3g} (tol {result.tolerance:.3g})")
    assert exported.opset_import[0].version == OPTIMIZED_OPSET
    assert cells(net, ms.nn.BatchNorm2d) > 0 and ops["BatchNormalization"] == 0
    assert ops["Conv"] == cells(net, ms.nn.Conv2d)
    assert ops["HardSwish"] == cells(net, HardSwish) and ops["HardSigmoid"] == cells(net, HardSigmoid)
    assert ops["GlobalAveragePool"] == cells(net, ChannelMean) and ops["ReduceMean"] == 0
    # every ReLU6 left is MobileNetV2's own (hard-swish and hard-sigmoid hold one each)
    relu6_of_hard_ops = cells(net, HardSwish) + cells(net, HardSigmoid)
    assert ops["Div"] == 0 and ops["Clip"] == cells(net, ms.nn.ReLU6) - relu6_of_hard_ops
    if model.startswith("mobilenet_v3"):
        assert ops["HardSwish"] > 0 and ops["HardSigmoid"] > 0
    images = np.random.default_rng(2).uniform(-2, 2, (6, 3, SIZE, SIZE)).astype(np.float32)
    reference = net(ms.Tensor(images)).asnumpy()
    tolerance = export_tolerance(float(np.abs(reference).max()), float32_noise(net, images))
    assert result.max_abs_diff <= result.tolerance
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(result.path, options, providers=["CPUExecutionProvider"])
        diff = float(np.abs(session.run(None, {"image": images})[0] - reference).max())
        assert diff <= tolerance, (level, diff, tolerance)
    # random networks of order-1 logits whose BatchNorms matter: a wrong fold would show
    assert np.abs(reference).max() > 0.5 and reference.std(axis=0).mean() > 0.05


@pytest.mark.slow
def test_onnxruntime_runs_v3_activations_inside_its_convs(tmp_path):
    def exported(optimize):
        net = create_model("mobilenet_v3_small_100", num_classes=10)  # a fresh Cell per export
        net.set_train(False)
        path = str(tmp_path / f"v3_{optimize}.onnx")
        return write_cell(net, ms.Tensor(np.zeros((1, 3, SIZE, SIZE), np.float32)), "ONNX", path, optimize=optimize)

    raw, optimized = runtime_op_types(exported(False)), runtime_op_types(exported(True))
    print(f"onnxruntime runs, MindSpore's graph: {dict(raw)}; optimized: {dict(optimized)}")
    # MindSpore's elementwise hard-swish stays Add/Clip/Mul/Div at run time; HardSwish and
    # HardSigmoid fuse into the conv before them (or at worst run as HardSigmoid + Mul)
    assert raw["Div"] > 0 and optimized["Div"] == 0 and optimized["Clip"] == 0
    assert sum(optimized.values()) < sum(raw.values()) / 2
    raw_reorders = raw["ReorderInput"] + raw["ReorderOutput"]
    if raw_reorders:  # CPUs with onnxruntime's blocked conv layout: fewer round trips out of it
        assert optimized["ReorderInput"] + optimized["ReorderOutput"] < raw_reorders / 2
    options = onnx_session(exported(True)).get_session_options()
    assert options.intra_op_num_threads == cpu_cores()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
