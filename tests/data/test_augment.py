"""Augmentation options of mindcv recipes: color_jitter lists, re_value fills, AugMix, repeated augmentation."""

from __future__ import annotations

import math
import os

import mindspore.dataset as ds
import mindspore.dataset.vision as vision
import numpy as np
import pytest
from PIL import Image

from mindcv_mobile.data import create_dataset, create_transforms
from mindcv_mobile.data.auto_augment import AugMix, auto_augment_op
from mindcv_mobile.data.sampler import ShardSampler


@pytest.fixture
def seeded():
    """A fixed dataset/numpy/random seed for the test, the previous dataset seed restored after it."""
    before = ds.config.get_seed()
    ds.config.set_seed(1234)
    yield
    ds.config.set_seed(before)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photograph (scikit-learn's sample "china.jpg"), 96x144 RGB uint8."""
    import sklearn.datasets

    path = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "china.jpg")
    return np.asarray(Image.open(path).convert("RGB").resize((144, 96), Image.BILINEAR))


def one_of(ops, kind):
    (op,) = [op for op in ops if isinstance(op, kind)]
    return op


def pipeline(ops, images) -> list[np.ndarray]:
    """``ops`` mapped over ``images`` in a dataset pipeline (random ops draw anew per image there)."""
    data = ds.NumpySlicesDataset({"image": np.stack(images)}, shuffle=False)
    data = data.map(list(ops), "image", num_parallel_workers=1)
    return [row[0] for row in data.create_tuple_iterator(output_numpy=True)]


def train_ops(**kwargs):
    """Train transforms on decoded input with an identity crop and no flip, so only the tested op acts."""
    base = dict(scale=(1, 1), ratio=(1, 1), hflip=0.0, color_jitter=None, interpolation="nearest")
    return create_transforms("cifar10", kwargs.pop("size", 64), True, **{**base, **kwargs})


# --------------------------------------------------------------------------- color_jitter
@pytest.mark.parametrize("jitter", [0.4, [0.5, 0, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.05]])
def test_color_jitter_reaches_random_color_adjust_as_in_mindcv(jitter):
    from mindcv.data.transforms_factory import transforms_imagenet_train

    ours = one_of(create_transforms("imagenet", 32, True, color_jitter=jitter), vision.RandomColorAdjust)
    theirs = one_of(transforms_imagenet_train(32, color_jitter=jitter), vision.RandomColorAdjust)
    b, c, s, h = (list(jitter) + [0.0] if isinstance(jitter, list) else [jitter] * 3 + [0.0])[:4]
    want = [(max(0, 1 - v), 1 + v) for v in (b, c, s)] + [(-h, h)]
    for name, (low, high) in zip(("brightness", "contrast", "saturation", "hue"), want):
        assert getattr(ours, name) == pytest.approx((low, high)), name
        assert getattr(ours, name) == pytest.approx(getattr(theirs, name)), name


def test_brightness_only_jitter_scales_pixels_but_keeps_hue_and_saturation(photo, seeded):
    op = one_of(train_ops(size=96, color_jitter=[0.5, 0, 0]), vision.RandomColorAdjust)
    src = photo.astype(np.float64)
    hsv_in = np.asarray(Image.fromarray(photo).convert("HSV")).astype(np.int32)
    factors = []
    for out in pipeline([op], [photo] * 12):
        # brightness-only = every pixel times one factor f in [0.5, 1.5], so hue and saturation stay
        keep = (src.max(-1) * 1.5 < 250) & (src.max(-1) > 60)  # unclipped, not dark
        f = out[keep].astype(np.float64).sum() / src[keep].sum()
        factors.append(f)
        assert 0.5 - 1e-3 <= f <= 1.5 + 1e-3
        assert np.abs(out[keep] - f * src[keep]).max() <= 1.01
        hsv_out = np.asarray(Image.fromarray(out).convert("HSV")).astype(np.int32)
        hue_diff = np.abs(hsv_out[..., 0] - hsv_in[..., 0])
        hue_diff = np.minimum(hue_diff, 256 - hue_diff)[keep & (hsv_in[..., 1] > 40)]
        assert np.median(hue_diff) <= 1 and np.percentile(hue_diff, 95) <= 4
        assert np.percentile(np.abs(hsv_out[..., 1] - hsv_in[..., 1])[keep], 95) <= 4
    assert max(factors) - min(factors) > 0.3  # the mean brightness does change from draw to draw


def test_hue_jitter_shifts_hue(photo, seeded):
    op = one_of(train_ops(size=96, color_jitter=[0, 0, 0, 0.5]), vision.RandomColorAdjust)
    hue = np.asarray(Image.fromarray(photo).convert("HSV"))[..., 0].astype(np.int32)
    shifts = []
    for out in pipeline([op], [photo] * 6):
        diff = np.abs(np.asarray(Image.fromarray(out).convert("HSV"))[..., 0].astype(np.int32) - hue)
        shifts.append(np.median(np.minimum(diff, 256 - diff)))
    assert max(shifts) > 10


@pytest.mark.parametrize(
    "jitter", [-0.1, [0.1, 0.2], [0.1, -0.2, 0.3], [0.1, 0.2, 0.3, 0.6], [0.1, 0.2, 0.3, 0.4, 0.5], "x"]
)
def test_bad_color_jitter_is_a_one_line_error(jitter):
    with pytest.raises(ValueError, match="color_jitter") as err:
        create_transforms("imagenet", 32, False, color_jitter=jitter)
    assert "\n" not in str(err.value) and repr(jitter) in str(err.value)


def test_color_jitter_is_skipped_with_auto_augment():
    ops = create_transforms("imagenet", 32, True, color_jitter=[0.4, 0.4, 0.4], auto_augment="augmix")
    assert not any(isinstance(op, vision.RandomColorAdjust) for op in ops)


# --------------------------------------------------------------------------- re_value
def erased(re_value) -> tuple[np.ndarray, np.ndarray]:
    """(the erased pixels (C, n), mask) of a white image after RandomErasing at prob 1."""
    ops = train_ops(re_prob=1.0, re_scale=(0.2, 0.3), re_value=re_value)
    assert isinstance(ops[-1], vision.RandomErasing) and isinstance(ops[-2], vision.HWC2CHW)  # CHW input
    (out,) = pipeline(ops, [np.full((64, 64, 3), 255, np.uint8)])
    (white,) = pipeline(train_ops(), [np.full((64, 64, 3), 255, np.uint8)])
    mask = (out != white).any(0)
    rows, cols = np.nonzero(mask)
    assert mask.sum() > 0.1 * mask.size  # one patch of 20-30 % (a random value may equal white: rare)
    assert mask.sum() >= 0.95 * (rows.ptp() + 1) * (cols.ptp() + 1)  # a rectangle
    return out[:, mask], mask


def test_re_value_zero_fills_zeros_and_random_fills_noise(seeded):
    patch, _ = erased(0)
    assert (patch == 0).all()  # 0 after Normalize: the mean colour
    patch, _ = erased([10, 20, 30])
    assert (patch == np.array([10, 20, 30], np.float32)[:, None]).all()
    patch, _ = erased("random")
    # per-pixel standard-normal noise: not constant, mean ~0, std ~1, channels differ
    assert len(np.unique(patch)) > 0.9 * patch.size
    assert abs(patch.mean()) < 0.1 and 0.9 < patch.std() < 1.1
    assert not np.allclose(patch[0], patch[1])


@pytest.mark.parametrize("value", [256, -1, 1.5, [1, 2], [0, 0, 300], "noise", True])
def test_bad_re_value_is_a_one_line_error(value):
    with pytest.raises(ValueError, match="re_value") as err:
        create_transforms("imagenet", 32, True, re_prob=0.5, re_value=value)
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


# --------------------------------------------------------------------------- AugMix
MINDCV_AUGMIX_OPS = {
    "AutoContrast": "autocontrast", "Equalize": "equalize", "ColorIncreasing": "saturation",
    "ContrastIncreasing": "contrast", "BrightnessIncreasing": "brightness", "SharpnessIncreasing": "sharpness",
    "Rotate": "rotate", "PosterizeIncreasing": "posterize", "SolarizeIncreasing": "solarize",
    "ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x", "TranslateY": "translate_y",
}  # fmt: skip


@pytest.mark.parametrize("spec", ["augmix", "augmix-m5-w4-d2-a0.5", "augmix-m1-w1-d3-a2", "augmix-m10"])
def test_augmix_options_mean_what_mindcv_reads(spec):
    from mindcv.data.auto_augment import augment_and_mix_transform

    ours = auto_augment_op(spec)
    theirs = augment_and_mix_transform(spec, {})
    assert isinstance(ours, AugMix)
    assert (ours.severity, ours.width, ours.depth, ours.alpha) == (
        theirs.ops[0].magnitude, theirs.width, theirs.depth, theirs.alpha)  # fmt: skip
    assert sorted(ours.OPS) == sorted(MINDCV_AUGMIX_OPS[op.name] for op in theirs.ops)


@pytest.mark.parametrize(
    "spec, want",
    [
        ("augmix-m3-w3-d-1-a1-b0", (3, 3, -1, 1.0)),
        ("augmix-d-1-m7-mstd0.5", (7, 3, -1, 1.0)),
        ("AugMix-w2", (3, 2, -1, 1.0)),
    ],
)
def test_augmix_timm_grammar(spec, want):
    op = auto_augment_op(spec)
    assert (op.severity, op.width, op.depth, op.alpha) == want


@pytest.mark.parametrize(
    "spec, match",
    [
        ("augmix-m11", r"m11 .* 1\.\.10"),
        ("augmix-m0", r"m0 .* 1\.\.10"),
        ("augmix-m2.5", r"m2\.5 .* integer"),
        ("augmix-w0", r"w0 .* >= 1"),
        ("augmix-d-2", r"d-2 .* >= -1"),
        ("augmix-a0", r"a0 .* > 0"),
        ("augmix-b1", r"b1 .*blended"),
        ("augmix-q3", r"unknown AugMix key 'q'.*augmix\[-m<severity"),
        ("augmix-m3x", r"cannot parse 'm3x'.*augmix\[-m"),
    ],
)
def test_bad_augmix_options_are_one_line_errors(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        create_transforms("imagenet", 32, True, auto_augment=spec)
    assert "\n" not in str(err.value)


def test_augmix_changes_the_image_keeps_shape_dtype_and_sits_before_normalize(photo, seeded):
    ops = create_transforms("imagenet", 32, True, auto_augment="augmix-m3-w3-d-1-a1")
    kinds = [type(op) for op in ops]
    assert kinds.index(AugMix) < kinds.index(vision.Normalize) < kinds.index(vision.HWC2CHW)
    op = one_of(ops, AugMix)
    outs = [op(photo) for _ in range(4)]
    for out in outs:
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert np.abs(out.astype(np.int32) - photo).mean() > 0.5
    assert not np.array_equal(outs[0], outs[1])


def test_augmix_mixes_and_blends_as_the_paper(photo, monkeypatch):
    # one chain of one op (solarize at level 10 = invert every pixel), blended with weight 0.25
    monkeypatch.setattr(np.random, "dirichlet", lambda alphas: np.ones(len(alphas)) / len(alphas))
    monkeypatch.setattr(np.random, "beta", lambda a, b: 0.25)
    monkeypatch.setattr(np.random, "choice", lambda ops, depth: ["solarize"] * depth)
    monkeypatch.setattr(np.random, "uniform", lambda low, high: 10.0)
    out = AugMix(severity=10, width=2, depth=1)(photo)
    want = np.rint(photo * 0.75 + (255.0 - photo) * 0.25)
    np.testing.assert_array_equal(out, want.astype(np.uint8))


def test_augmix_op_levels(monkeypatch):
    img = np.random.RandomState(0).randint(0, 256, (30, 40, 3)).astype(np.uint8)
    monkeypatch.setattr(np.random, "rand", lambda: 0.9)  # positive sign
    aug = AugMix(interpolation=vision.Inter.NEAREST, fill=(1, 2, 3))
    np.testing.assert_array_equal(aug.apply(img, "posterize", 5.0), img & 0b11000000)  # 4 - int(2.0) bits
    np.testing.assert_array_equal(aug.apply(img, "solarize", 10.0), 255 - img)  # threshold 0
    shifted = aug.apply(img, "translate_x", 10.0)  # 0.3 * 40 = 12 px to the right, mean-colour fill
    np.testing.assert_array_equal(shifted[:, 12:], img[:, :-12])
    assert (shifted[:, :12] == (1, 2, 3)).all()
    np.testing.assert_array_equal(aug.apply(img, "rotate", 0.0), img)
    bright = aug.apply(img, "brightness", 10.0).astype(np.int32)  # factor 1.9
    assert np.abs(bright - np.clip(img * 1.9, 0, 255)).max() <= 1


def test_augmix_in_a_pipeline(photo, seeded):
    out = pipeline(create_transforms("cifar10", 48, True, auto_augment="augmix"), [photo[:64, :64], photo[32:, 80:]])
    assert [(o.shape, o.dtype) for o in out] == [((3, 48, 48), np.float32)] * 2 and np.isfinite(out).all()


def test_trivialaugwide_spelling():
    for spec in ("trivialaugwide", "trivialaugwide-m20", "trivialaug"):
        assert isinstance(auto_augment_op(spec), vision.TrivialAugmentWide)
    with pytest.raises(ValueError, match="trivialaugwide"):
        auto_augment_op("trivialaugwide-n2")


# --------------------------------------------------------------------------- repeated augmentation
def expected_layout(order, num_shards: int, repeats: int) -> list[list[int]]:
    """Per shard, DeiT/mindcv's repeated-augmentation reads of one epoch, written out longhand."""
    n = len(order)
    stream = [i for i in order for _ in range(repeats)]
    per_shard = -(-n * repeats // num_shards)
    while len(stream) < per_shard * num_shards:
        stream.append(stream[len(stream) - n * repeats])
    keep = -(-n // num_shards)
    return [[stream[p] for p in range(k, per_shard * num_shards, num_shards)][:keep] for k in range(num_shards)]


def shards(n, num_shards, repeats, shuffle=True, seed=7, epoch=0, cap=None):
    samplers = [ShardSampler(n, shuffle, cap, num_shards, k, seed, aug_repeats=repeats) for k in range(num_shards)]
    return [s.indices(epoch).tolist() for s in samplers], [len(s) for s in samplers]


@pytest.mark.parametrize(
    "n, num_shards, repeats", [(10, 2, 3), (17, 4, 3), (7, 8, 2), (20, 1, 3), (9, 3, 4), (64, 8, 3)]
)
def test_repeat_layout_matches_mindcv_and_a_longhand_count(n, num_shards, repeats):
    from mindcv.data.distributed_sampler import RepeatAugSampler

    got, lengths = shards(n, num_shards, repeats, shuffle=False)
    mindcv = [
        list(RepeatAugSampler(n, num_shards, k, shuffle=False, num_repeats=repeats, selected_round=0))
        for k in range(num_shards)
    ]
    assert got == mindcv == expected_layout(list(range(n)), num_shards, repeats)
    assert lengths == [math.ceil(n / num_shards)] * num_shards  # about len(dataset) reads per epoch in all

    perm = np.random.default_rng([7, 3]).permutation(n)  # shuffled: the same layout over the epoch's permutation
    got, _ = shards(n, num_shards, repeats, epoch=3)
    assert got == [perm[m].tolist() for m in mindcv] == expected_layout(perm.tolist(), num_shards, repeats)


@pytest.mark.parametrize("n, num_shards, repeats", [(60, 4, 3), (61, 3, 3), (100, 8, 2)])
def test_repeated_copies_go_to_different_shards(n, num_shards, repeats):
    got, _ = shards(n, num_shards, repeats)
    where: dict[int, list[int]] = {}
    for k, rows in enumerate(got):
        for i in rows:
            where.setdefault(i, []).append(k)
    counts = sorted(len(v) for v in where.values())
    assert counts[1:] == [repeats] * (len(counts) - 1) and 1 <= counts[0] <= repeats  # one image may be cut
    assert all(len(set(v)) == len(v) for v in where.values())  # never twice on one shard
    assert sum(map(len, got)) == num_shards * math.ceil(n / num_shards)
    assert len(where) == math.ceil(num_shards * math.ceil(n / num_shards) / repeats)


def test_repeat_order_depends_only_on_seed_and_epoch():
    first = ShardSampler(50, True, None, 4, 1, 11, aug_repeats=3)
    again = ShardSampler(50, True, None, 4, 1, 11, aug_repeats=3)
    assert first.indices(2).tolist() == again.indices(2).tolist()
    assert first.indices(2).tolist() != first.indices(3).tolist()
    assert first.indices(2).tolist() != ShardSampler(50, True, None, 4, 1, 12, aug_repeats=3).indices(2).tolist()
    epochs = [list(first) for _ in range(3)]  # iterating advances the epoch; a resumed sampler picks up
    again.epoch = 2
    assert epochs == [first.indices(e).tolist() for e in range(3)] and list(again) == epochs[2]


def test_repeats_off_and_cap():
    plain, _ = shards(30, 4, 0)
    assert shards(30, 4, 1)[0] == plain and [len(rows) for rows in plain] == [7] * 4
    assert shards(30, 4, 3, cap=5) == ([rows[:5] for rows in shards(30, 4, 3)[0]], [5] * 4)
    for bad in (-1, 2.5, "3", True):
        with pytest.raises(ValueError, match="aug_repeats") as err:
            ShardSampler(30, True, None, 1, 0, 0, aug_repeats=bad)
        assert "\n" not in str(err.value)


def test_create_dataset_reads_the_repeated_layout(tmp_path):
    # ten classes of one image each, so a row's label is its index
    for c in range(10):
        os.makedirs(tmp_path / "train" / f"c{c}")
        Image.new("RGB", (8, 8), (c * 20, 0, 0)).save(tmp_path / "train" / f"c{c}" / "x.png")
    for shard in range(2):
        data = create_dataset("imagenet", str(tmp_path), "train", num_shards=2, shard_id=shard, seed=5, epoch=1,
                              aug_repeats=3)  # fmt: skip
        assert data.get_dataset_size() == 5
        it = data.create_tuple_iterator(num_epochs=2, output_numpy=True)
        labels = [[int(label) for _, label in it] for _ in range(2)]
        sampler = ShardSampler(10, True, None, 2, shard, 5, aug_repeats=3)
        assert labels == [sampler.indices(1).tolist(), sampler.indices(2).tolist()]
