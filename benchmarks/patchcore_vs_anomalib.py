"""Our PatchCore vs anomalib's Patchcore, in one run, on the same images, weights and input size.

    bash benchmarks/setup_anomalib_env.sh           # once: a separate environment with anomalib
    benchmarks/.venv-anomalib/bin/python benchmarks/patchcore_vs_anomalib.py --data-root data/quick

Both use tf_efficientnet_lite0 with the offline package weights loaded by hand (anomalib gets
``pre_trained=False``, then the same state dict), layers 2+3, coreset 5 %, k = 3, the same input size.
Prints per-image latency at batch 1 (median over the test images, warm-up excluded), image AUROC of
each, and the latency ratio (target: ours <= 0.5x anomalib's at equal AUROC within 1 point).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.dataset.manifest import read_manifest  # noqa: E402
from lib.evaluate.metrics import roc_auc  # noqa: E402
from lib.models.backbones import FeatureExtractor  # noqa: E402
from lib.models.data import load_images, select  # noqa: E402
from lib.models.patchcore import PatchCore  # noqa: E402


def latency(fn, images, warmup=3):
    for i in range(warmup):
        fn(images[i : i + 1])
    times, scores = [], []
    for i in range(len(images)):
        t0 = time.perf_counter()
        scores.append(float(fn(images[i : i + 1])))
        times.append(time.perf_counter() - t0)
    return np.median(times) * 1000, np.array(scores)


def latency_interleaved(fns: dict, images, warmup=3):
    """Per image, each function in turn (so load and thermal drift hit all alike): median ms, scores."""
    for i in range(warmup):
        for fn in fns.values():
            fn(images[i : i + 1])
    times = {k: [] for k in fns}
    scores = {k: [] for k in fns}
    for i in range(len(images)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            scores[k].append(float(fn(images[i : i + 1])))
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1000 for k, v in times.items()}, {
        k: np.array(v) for k, v in scores.items()
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default="data/quick")
    ap.add_argument("--viewpoint", default="center")
    ap.add_argument("--masked", action="store_true", default=True)
    ap.add_argument("--width", type=int, default=212)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data_root)
    man = read_manifest(root / "data_manifest.csv")
    size = (args.width, args.height)
    train = load_images(root, select(man, args.viewpoint, "train", "normal"), size, args.masked)
    test_rows = select(man, args.viewpoint, "test")
    test = load_images(root, test_rows, size, args.masked)
    y = (test_rows.label == "anomalous").to_numpy()

    backbone = "tf_efficientnet_lite0"
    ours = PatchCore(
        input_size=size, backbone=backbone, pretrain_embed_dim=256, target_embed_dim=256, device="cpu"
    )
    t0 = time.perf_counter()
    ours.fit(train)
    fit_ours = time.perf_counter() - t0

    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    ref_fe = FeatureExtractor(backbone, ("layer2", "layer3"))  # resolves the same offline weights
    layers = list(ref_fe.model.feature_info.module_name())  # the timm modules of layer2/layer3
    ano = PatchcoreModel(layers=layers, backbone=backbone, pre_trained=False, num_neighbors=3)
    missing = ano.feature_extractor.feature_extractor.load_state_dict(ref_fe.model.state_dict(), strict=False)
    assert not missing.missing_keys, missing.missing_keys
    mean, std = ref_fe.mean, ref_fe.std

    def to_tensor(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).flip(-1).permute(0, 3, 1, 2).float() / 255.0
        return (t - mean) / std

    t0 = time.perf_counter()
    ano.train()
    with torch.no_grad():
        for i in range(0, len(train), 4):
            ano(to_tensor(train[i : i + 4]))  # training mode: anomalib stores the embeddings
        t_sub = time.perf_counter()
        ano.subsample_embedding(sampling_ratio=0.05)
        coreset_ano = time.perf_counter() - t_sub
    fit_ano = time.perf_counter() - t0
    ano.eval()

    @torch.no_grad()
    def ano_score(x):
        out = ano(to_tensor(x))
        return out.pred_score.flatten()[0]

    import tempfile

    from lib.models.export import OnnxPredictor, export_onnx

    ours_onnx = OnnxPredictor(export_onnx(ours, Path(tempfile.mkdtemp()) / "patchcore.onnx"), args.threads)
    from lib.precision import autocast, describe, module_precision

    def ours_bf16(x):
        with module_precision(ours.net, "bf16"):
            return ours.predict(x)[0][0]

    def ano_bf16(x):  # anomalib under the same autocast: a fair comparison both ways
        with autocast("bf16", "cpu"):
            return ano_score(x).float()

    ms, sc = latency_interleaved(
        {
            "ours (torch)": lambda x: ours.predict(x)[0][0],
            "ours (onnxruntime)": lambda x: ours_onnx.predict(x)[0][0],
            "anomalib": ano_score,
            "ours bf16": ours_bf16,
            "anomalib bf16": ano_bf16,
        },
        test,
    )
    from lib.config import cpu_description

    print(f"{cpu_description()}; {describe()}")
    print(
        f"{len(train)} train / {len(test)} test images ({y.sum()} anomalous), {size[0]}x{size[1]}, "
        f"{args.viewpoint}, {'masked' if args.masked else 'raw'}, {backbone} package weights, "
        f"{args.threads} thread(s); calls interleaved image by image"
    )
    coreset_ours = ours.history["coreset_s"]
    print(f"fit: ours {fit_ours:.1f} s, anomalib {fit_ano:.1f} s (ratio {fit_ours / fit_ano:.2f})")
    print(
        f"coreset selection: ours {coreset_ours:.2f} s, anomalib {coreset_ano:.2f} s "
        f"(ratio {coreset_ours / coreset_ano:.3f}, target <= 0.1)"
    )
    for k in ms:
        print(f"{k:<20} latency {ms[k]:.1f} ms/image, image AUROC {roc_auc(y, sc[k]):.3f}")
    for k in ("ours (torch)", "ours (onnxruntime)", "ours bf16"):
        print(f"latency ratio {k} / anomalib fp32 = {ms[k] / ms['anomalib']:.2f} (target <= 0.3)")
    print(
        f"latency ratio ours bf16 / anomalib bf16 = {ms['ours bf16'] / ms['anomalib bf16']:.2f} (target <= 0.3)"
    )


if __name__ == "__main__":
    main()
