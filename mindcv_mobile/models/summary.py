"""Model summary: parameters, multiply-accumulates and output shape of every stage of a network.

    python -m mindcv_mobile.models.summary mobilenet_v3_small_100 [--image_size 160] [--num_classes 10] [--stages]

What ``macs`` counts, per image at the given input size (one MAC = one multiplication and the
addition accumulating it):

- every ``nn.Conv2d`` (plain, grouped, depthwise, 1x1, and the squeeze-excite 1x1 convs on their
  pooled 1x1 maps): ``out_h * out_w * out_channels * (in_channels / groups) * k_h * k_w``;
- every ``nn.Dense``, the classifier included: ``in_channels * out_channels`` per output vector.

Not counted: biases, BatchNorm, activations, pooling, the squeeze-excite channel scaling, residual
additions, dropout. This is the papers' "Mult-Adds", whose totals include the classifier
(MobileNetV1 at 224 px: 567.7M in convolutions + 1.0M in the classifier = the paper's 569M).
Other cells that own weights are listed in ``Summary.uncounted``.

Shapes: the network runs once in eval and PyNative mode on a zero image of batch 1, with forward
hooks (``Cell.register_forward_hook``) on every Conv2d/Dense and at the end of every row; each
layer's MACs follow from its configuration and the output shape its hook saw. Running it, rather
than re-deriving shapes from layer settings, gives the true shapes whatever the padding ("same" or
explicit) and the data flow (a squeeze-excite branch on a pooled map, a shortcut), for any Cell.
A caller in graph mode is switched to PyNative for that forward and back; the network's train/eval
state and a squeeze-excite block's compiled op (which runs without calling its convs) are restored.

Parameters: ``all_params`` counts every Parameter, BatchNorm moving mean/variance included (the
``params(M)`` of mindcv's tables and of the records in ``registry.py``); ``trainable_params``
those with ``requires_grad``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from typing import Optional, Union

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from .layers import SqueezeExcite
from .registry import check_input_size, create_model, get_model_cfg

DEFAULT_IMAGE_SIZE = 224
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One row: a block of ``features``, a group of plain layers (conv + BN + activation), or the head.

    ``output_shape`` excludes the batch dimension; ``stride`` is the output stride, the product of
    the conv strides so far (None for outputs that are not feature maps). ``stages()`` rows: "stage".
    """

    name: str
    structure: str
    output_shape: tuple
    stride: Optional[int]
    trainable_params: int
    all_params: int
    macs: int
    role: str = "block"  # "stem", "block", "layers", "head"; "stage" in stages()


@dataclasses.dataclass(frozen=True)
class Summary:
    """Totals and rows of one network at one input size (see the module docstring for what counts)."""

    model: str
    image_size: int
    in_channels: int
    output_shape: tuple
    trainable_params: int
    all_params: int
    macs: int
    rows: tuple
    uncounted: tuple = ()

    def line(self) -> str:
        """One line for a log, e.g. ``mobilenet_v3_small_100: 2.54M params (2.55M with BN
        statistics), 56.5M MACs at 224x224``."""
        params, every, macs = _human(self.trainable_params, 2), _human(self.all_params, 2), _human(self.macs, 1)
        size = f"{self.image_size}x{self.image_size}"
        return f"{self.model}: {params} params ({every} with BN statistics), {macs} MACs at {size}"

    def stages(self) -> tuple:
        """The rows merged by output stride (consecutive rows with the same stride; the head alone)."""
        runs = itertools.groupby(self.rows, key=lambda r: r.stride if r.stride and r.role != "head" else id(r))
        return tuple(_merge(list(run)) for _, run in runs)

    def table(self, stages: bool = False) -> str:
        """A text table: name | structure | output | stride | params | with BN stats | MACs, with totals."""
        rows = self.stages() if stages else self.rows
        header = ("stage" if stages else "layer", "structure", "output", "stride", "params", "+BN stats", "MACs")
        body = [
            _cells(r.name, r.structure, r.output_shape, r.stride, r.trainable_params, r.all_params, r.macs)
            for r in rows
        ]
        body.append(_cells("total", "", self.output_shape, "", self.trainable_params, self.all_params, self.macs))
        widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
        right = {3, 4, 5, 6}

        def fmt(cells) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(fmt(header))
        lines = [self.line(), fmt(header), rule] + [fmt(b) for b in body[:-1]] + [rule, fmt(body[-1])]
        lines.append("MACs per image: Conv2d and Dense only (BN, activations, pooling, SE scaling, adds not counted)")
        if self.uncounted:
            lines.append(f"no MACs counted for these cells with weights: {', '.join(self.uncounted)}")
        return "\n".join(line.rstrip() for line in lines)


def summarize(
    model_name_or_net: Union[str, nn.Cell],
    image_size: Optional[int] = None,
    num_classes: int = 1000,
    *,
    in_channels: Optional[int] = None,
    name: Optional[str] = None,
) -> Summary:
    """Parameters, MACs and per-row output shapes of a registered model or of a built network.

    Args:
        model_name_or_net: a name from ``list_models()`` (built here with ``num_classes`` and
            ``in_channels``) or a Cell, which is run as it is (its own classes and channels).
        image_size: square input size; None: the record's (a name) or 224 (a Cell).
        num_classes: classifier size when a name is given.
        in_channels: input channels; None: 3 for a name, the first Conv2d's for a Cell.
        name: the model's name in ``line()`` / ``table()``; default the registered name or the
            Cell's class name.
    """
    if isinstance(model_name_or_net, str):
        model = model_name_or_net
        if image_size is None:
            image_size = get_model_cfg(model).image_size
        check_input_size(model, image_size)
        in_channels = 3 if in_channels is None else in_channels
        net = create_model(model, num_classes=num_classes, in_channels=in_channels)
    elif isinstance(model_name_or_net, nn.Cell):
        net, model = model_name_or_net, type(model_name_or_net).__name__
        image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if in_channels is None:
            in_channels = _first_conv_channels(net)
    else:
        raise ValueError(f"expected a model name or an nn.Cell, got {type(model_name_or_net).__name__}")
    groups = _plan_rows(net)
    out_shape, layers, row_outputs = _trace(net, groups, in_channels, image_size)
    rows = tuple(_row(group, index, layers, row_outputs, image_size) for index, group in enumerate(groups))
    return Summary(
        model=name or model,
        image_size=image_size,
        in_channels=in_channels,
        output_shape=out_shape,
        trainable_params=_count(net.trainable_params()),
        all_params=_count(net.get_parameters()),
        macs=sum(layer["macs"] for layer in layers),
        rows=rows,
        uncounted=_uncounted(net),
    )


# --------------------------------------------------------------------------------------------
# Rows: the children of ``features`` (a block each; a conv and the BN/activation cells after it
# form one row), then everything else of the top-level Cell as "head".


def _group(children: list) -> list:
    """Split ``[(name, cell)]`` into rows: a row starts at each child holding a Conv2d/Dense."""
    groups = []
    for child_name, cell in children:
        if not groups or any(isinstance(sub, (nn.Conv2d, nn.Dense)) for _, sub in cell.cells_and_names()):
            groups.append([])
        groups[-1].append((child_name, cell))
    return groups


def _plan_rows(net: nn.Cell) -> list:
    """``[(role, [(name, cell), ...])]`` in definition order (= execution order for these nets)."""
    children = list(net.name_cells().items())
    features = getattr(net, "features", None)
    if isinstance(features, (nn.SequentialCell, nn.CellList)):
        groups = _group([(f"features.{k}", c) for k, c in features.name_cells().items()])
        rest = [(n, c) for n, c in children if c is not features]
    else:
        groups, rest = _group(children), []
    if not groups and not rest:
        return [("layers", [("", net)])]
    planned = []
    for index, group in enumerate(groups):
        composite = len(group) == 1 and bool(group[0][1].name_cells()) and not isinstance(group[0][1], nn.Conv2d)
        planned.append(("stem" if index == 0 and features is not None else "block" if composite else "layers", group))
    if rest:
        planned.append(("head", rest))
    return planned


def _group_name(role: str, group: list) -> str:
    if role == "head" and len(group) > 1:
        return "head"
    first, last = group[0][0], group[-1][0]
    if first == last:
        return first or "network"
    prefix, _, first_tail = first.rpartition(".")
    last_prefix, _, last_tail = last.rpartition(".")
    return f"{prefix}.{first_tail}-{last_tail}" if prefix and prefix == last_prefix else f"{first}..{last}"


# --------------------------------------------------------------------------------------------
# The forward pass with hooks.


def _first_conv_channels(net: nn.Cell) -> int:
    convs = [int(c.in_channels) for _, c in net.cells_and_names() if isinstance(c, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no Conv2d to take the input channels from: pass in_channels")
    return convs[0]


def _out_shape(output) -> tuple:
    """Per-sample shape of an output; a tuple of shapes for a tuple of outputs."""
    if isinstance(output, (tuple, list)):
        return tuple(_out_shape(o) for o in output)
    return tuple(int(d) for d in output.shape[1:])


def _layer_macs(cell: nn.Cell, out_shape: tuple) -> int:
    """MACs of one Conv2d or Dense call, from its configuration and its per-sample output shape."""
    if isinstance(cell, nn.Conv2d):
        out_ch, out_h, out_w = out_shape
        k_h, k_w = cell.kernel_size
        return out_h * out_w * out_ch * (int(cell.in_channels) // int(cell.group)) * k_h * k_w
    vectors = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
    return vectors * int(cell.in_channels) * int(cell.out_channels)


def _trace(net: nn.Cell, groups: list, in_channels: int, image_size: int) -> tuple:
    """Run ``net`` once on zeros; return (output shape, [layer records], {row index: output shape})."""
    se = {n: c for n, c in net.cells_and_names() if isinstance(c, SqueezeExcite)}
    se_names, se_ops = list(se), {n: c.kernel_op for n, c in se.items()}
    layers, row_outputs, handles = [], {}, []
    reduction = [1]  # product of the conv strides so far, in call order

    def on_layer(layer_name):
        def hook(cell, args, output):
            shape = _out_shape(output)
            if isinstance(cell, nn.Conv2d):
                reduction[0] *= int(cell.stride[0])
            in_se = any(layer_name.startswith(se + ".") for se in se_names)
            macs = _layer_macs(cell, shape)
            layers.append({"name": layer_name, "cell": cell, "macs": macs, "se": in_se, "stride": reduction[0]})

        return hook

    def on_row(index):
        return lambda cell, args, output: row_outputs.__setitem__(index, _out_shape(output))

    mode, training = ms.get_context("mode"), net.training
    try:
        for layer_name, cell in net.cells_and_names():
            if isinstance(cell, (nn.Conv2d, nn.Dense)):
                handles.append(cell.register_forward_hook(on_layer(layer_name)))
        for index, (_, group) in enumerate(groups):
            handles.append(group[-1][1].register_forward_hook(on_row(index)))
        if mode != ms.PYNATIVE_MODE:
            ms.set_context(mode=ms.PYNATIVE_MODE)
        net.set_train(False)
        for cell in se.values():  # a compiled block would not call its convs
            cell.kernel_op = None
        output = net(ops.zeros((1, in_channels, image_size, image_size), ms.float32))
    finally:
        for name, cell in se.items():
            cell.kernel_op = se_ops[name]
        for handle in handles:
            handle.remove()
        net.set_train(training)
        if mode != ms.PYNATIVE_MODE:
            ms.set_context(mode=mode)
    if groups and groups[-1][0] == "head":
        row_outputs[len(groups) - 1] = _out_shape(output)  # the head's last child need not be the last call
    return _out_shape(output), layers, row_outputs


def _describe(layers: list) -> str:
    """Short structure of a row from its layers in call order, e.g. ``conv1x1 dw5x5/2 SE conv1x1``."""
    tokens = []
    for layer in layers:
        cell = layer["cell"]
        if layer["se"]:
            token = "SE"
        elif isinstance(cell, nn.Dense):
            token = "dense"
        else:
            (k_h, k_w), stride, group = cell.kernel_size, int(cell.stride[0]), int(cell.group)
            kind = "conv" if group == 1 else "dw" if group == cell.in_channels == cell.out_channels else f"g{group}conv"
            token = f"{kind}{k_h}x{k_w}" + (f"/{stride}" if stride > 1 else "")
        if not (token == "SE" and tokens and tokens[-1] == "SE"):
            tokens.append(token)
    return " ".join(tokens)


def _under(layer_name: str, cell_name: str) -> bool:
    return not cell_name or layer_name == cell_name or layer_name.startswith(cell_name + ".")


def _row(group: tuple, index: int, layers: list, row_outputs: dict, image_size: int) -> SummaryRow:
    role, members = group
    names = [n for n, _ in members]
    mine = [layer for layer in layers if any(_under(layer["name"], n) for n in names)]
    params = {id(p): p for _, cell in members for p in cell.get_parameters()}
    shape = row_outputs.get(index, ())
    stride = None
    if len(shape) == 3 and all(isinstance(d, int) for d in shape) and shape[1] > 0:
        stride = mine[-1]["stride"] if mine else max(1, round(image_size / shape[1]))
    structure = f"stem {_describe(mine)}".strip() if role == "stem" else _describe(mine)
    return SummaryRow(
        name=_group_name(role, members),
        structure=structure,
        output_shape=shape,
        stride=stride,
        trainable_params=_count(p for p in params.values() if p.requires_grad),
        all_params=_count(params.values()),
        macs=sum(layer["macs"] for layer in mine),
        role=role,
    )


def _merge(rows: list) -> SummaryRow:
    """Rows of one stride as one: from the first's name to the last's, the last's output, summed counts."""
    if len(rows) == 1:
        return rows[0]
    blocks = sum(r.role == "block" for r in rows)
    parts = ["stem"] * any(r.role == "stem" for r in rows) + [f"{blocks} block" + "s" * (blocks > 1)] * (blocks > 0)
    parts += [r.structure for r in rows if r.role == "layers"]
    start, end = rows[0].name.split("-")[0], rows[-1].name.rsplit(".", 1)[-1].rsplit("-", 1)[-1]
    totals = (sum(getattr(r, key) for r in rows) for key in ("trainable_params", "all_params", "macs"))
    return SummaryRow(f"{start}-{end}", " + ".join(parts), rows[-1].output_shape, rows[-1].stride, *totals, "stage")


def _uncounted(net: nn.Cell) -> tuple:
    """Cells owning weights of a kind whose MACs are not counted (neither Conv2d, Dense nor a norm)."""
    found = []
    for cell_name, cell in net.cells_and_names():
        if isinstance(cell, (nn.Conv2d, nn.Dense) + _NORMS):
            continue
        if any(True for _ in cell.get_parameters(expand=False)):
            found.append(f"{cell_name or 'network'} ({type(cell).__name__})")
    return tuple(found)


def _count(params) -> int:
    return sum(int(np.prod(p.shape)) for p in params)


def _human(value: float, digits: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.{digits}f}{unit}"
    return str(int(value))


def _cells(name, structure, shape, stride, trainable: int, total: int, macs: int) -> tuple:
    stride = "-" if stride is None else str(stride)
    return (name, structure, _shape(shape), stride, f"{trainable:,}", f"{total:,}", f"{macs / 1e6:.2f}M")


def _shape(shape: tuple) -> str:
    if not shape:
        return "-"
    return ", ".join(_shape(s) for s in shape) if isinstance(shape[0], tuple) else "x".join(str(d) for d in shape)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mindcv_mobile.models.summary",
        description="Parameters, MACs and output shapes of a registered model, stage by stage.",
    )
    parser.add_argument("model", help="a registered model name, e.g. mobilenet_v3_small_100")
    parser.add_argument("--image_size", type=int, default=None, help="square input size (default: the model's)")
    parser.add_argument("--num_classes", type=int, default=1000, help="classifier size (default 1000)")
    parser.add_argument("--in_channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--stages", action="store_true", help="one row per output stride instead of per block")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.model, args.image_size, args.num_classes, in_channels=args.in_channels)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.table(stages=args.stages))
    return 0


__all__ = ["Summary", "SummaryRow", "summarize", "main", "DEFAULT_IMAGE_SIZE"]

if __name__ == "__main__":
    sys.exit(main())
