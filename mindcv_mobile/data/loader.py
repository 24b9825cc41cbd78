"""create_loader: transforms, label dtype, batching and batch-level MixUp/CutMix."""

from __future__ import annotations

import mindspore as ms
import mindspore.dataset.transforms as transforms
import mindspore.dataset.vision as vision

from ..host import data_workers


def _mix_op(mixup: float, cutmix: float, mixup_prob: float, image_format):
    """MixUpBatch / CutMixBatch (one chosen per batch if both), applied with mixup_prob."""
    ops = []
    if mixup > 0:
        ops.append(vision.MixUpBatch(alpha=mixup))
    if cutmix > 0:
        ops.append(vision.CutMixBatch(image_format, alpha=cutmix, prob=1.0))
    op = ops[0] if len(ops) == 1 else transforms.RandomChoice(ops)
    return op if mixup_prob >= 1.0 else transforms.RandomApply([op], prob=mixup_prob)


def create_loader(
    dataset,
    batch_size: int,
    drop_remainder: bool = True,
    is_training: bool = False,
    transform: list | None = None,
    num_classes: int = 1000,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    mixup_prob: float = 1.0,
    label_smoothing: float = 0.0,
    num_parallel_workers: int | None = None,
):
    """Batches of (image float32, label) from a ``create_dataset`` result.

    ``transform`` (from ``create_transforms``) is mapped on "image"; labels become int32.
    When ``is_training`` and ``mixup`` or ``cutmix`` > 0 (Beta alphas), labels become one-hot
    float32 (N, num_classes), smoothed by ``label_smoothing``, and after batching MixUpBatch
    or CutMixBatch (one picked per batch when both are on) mixes images and labels with
    probability ``mixup_prob``. ``label_smoothing`` acts only on those one-hot labels: with
    integer labels the loss applies it, so a loss fed one-hot labels must not smooth again.
    Eval loaders should pass drop_remainder=False so every sample is scored. The batches keep
    the input's ``classes`` attribute (``create_dataset`` sets it). ``num_parallel_workers`` goes
    through ``host.data_workers``.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    batch_size = int(batch_size)
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if float(value) < 0:
            raise ValueError(f"{name} is a Beta(alpha, alpha) parameter and must be >= 0 (0 = off); got {value!r}")
    for name, value in (("mixup_prob", mixup_prob), ("label_smoothing", label_smoothing)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes!r}")
    if num_parallel_workers is not None and int(num_parallel_workers) < 1:
        raise ValueError(f"num_parallel_workers must be >= 1 or None; got {num_parallel_workers!r}")
    workers = data_workers(num_parallel_workers)
    classes = getattr(dataset, "classes", None)  # map/batch return new objects without it

    size = dataset.get_dataset_size()
    if drop_remainder and batch_size > size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the dataset ({size} samples in this shard) "
            f"and drop_remainder=True would yield no batch; use batch_size <= {size} or "
            f"drop_remainder=False"
        )

    if transform:
        dataset = dataset.map(operations=list(transform), input_columns="image", num_parallel_workers=workers)
    one_hot = bool(is_training) and (float(mixup) > 0 or float(cutmix) > 0)
    if one_hot:
        label_ops = [transforms.OneHot(int(num_classes), float(label_smoothing)), transforms.TypeCast(ms.float32)]
    else:
        label_ops = [transforms.TypeCast(ms.int32)]
    dataset = dataset.map(operations=label_ops, input_columns="label", num_parallel_workers=min(2, workers))
    dataset = dataset.batch(batch_size, drop_remainder=bool(drop_remainder))
    if one_hot:
        # create_transforms ends with HWC2CHW; a custom list without it leaves HWC.
        chw = transform is None or any(isinstance(op, vision.HWC2CHW) for op in transform)
        fmt = vision.ImageBatchFormat.NCHW if chw else vision.ImageBatchFormat.NHWC
        dataset = dataset.map(
            operations=_mix_op(float(mixup), float(cutmix), float(mixup_prob), fmt),
            input_columns=["image", "label"],
            num_parallel_workers=min(2, workers),
        )
    if classes is not None:
        dataset.classes = classes
    return dataset
