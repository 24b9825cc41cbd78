#!/usr/bin/env bash
# The main job on an embedded default: install into ./.venv, then build a MobileNet from the
# registry and classify a few generated images (becomes digits training with the training issue).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python - <<'PY'
import numpy as np
import mindcv_mobile
from mindcv_mobile.models import create_model, get_model_cfg, list_models
import mindspore as ms

name = "mobilenet_v3_small_100"
cfg = get_model_cfg(name)
print(f"{len(list_models())} models registered; building {name} ({cfg.params_m}M params, top-1 {cfg.top1})")
net = create_model(name, num_classes=10)
net.set_train(False)
rng = np.random.default_rng(0)
images = rng.random((4, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
probs = ms.ops.softmax(net(ms.Tensor(images)), axis=1).asnumpy()
for i, p in enumerate(probs):
    print(f"image {i}: class {int(p.argmax())} p={p.max():.3f} (untrained weights)")
PY
