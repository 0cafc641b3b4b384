"""Our EfficientAD-S vs anomalib's EfficientAd (small), per-image latency in one run; MemSeg beside it.

    bash benchmarks/setup_anomalib_env.sh           # once
    benchmarks/.venv-anomalib/bin/python benchmarks/efficientad_vs_anomalib.py --data-root data/quick

Same input size (256x256, the paper's), batch 1, warm-up excluded, one thread; our teacher weights are
copied by hand into anomalib's PDN (same layers in the same order), nothing is downloaded. Training is
short: latency does not depend on it. Prints each median latency and the ratio (target: <= 0.5).
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
from lib.models import make_model  # noqa: E402
from lib.models.data import load_images, select  # noqa: E402


def median_ms(fn, images, warmup=3):
    for i in range(warmup):
        fn(images[i : i + 1])
    times = []
    for i in range(len(images)):
        t0 = time.perf_counter()
        fn(images[i : i + 1])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def interleaved_median_ms(fns: dict, images, warmup=3) -> dict:
    """Median latency of each function, calling them in turn on every image so that CPU-frequency or
    load drift during the run affects all of them alike."""
    for i in range(warmup):
        for fn in fns.values():
            fn(images[i : i + 1])
    times = {name: [] for name in fns}
    for i in range(len(images)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(images[i : i + 1])
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t) * 1000) for name, t in times.items()}


def conv_gmac(net, x) -> float:
    """Multiply-accumulates of every Conv2d in one forward pass (what bounds CPU latency here)."""
    total = [0]

    def hook(m, _inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return total[0] / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default="data/quick")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data_root)
    man = read_manifest(root / "data_manifest.csv")
    size = (args.size, args.size)
    train = load_images(root, select(man, "center", "train", "normal"), size, True)
    test = load_images(root, select(man, "center", "test"), size, True)

    ours = make_model(
        "efficientad_s", None, input_size=size, iterations=10, teacher_iterations=5, device="cpu"
    )
    ours.fit(train[:16], train[16:24])

    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel

    ano = EfficientAdModel(teacher_out_channels=384, model_size="small", padding=False)
    src = [v for k, v in ours.net.teacher.state_dict().items()]
    dst = ano.teacher.state_dict()
    assert [tuple(v.shape) for v in src] == [tuple(v.shape) for v in dst.values()], "PDN layouts differ"
    ano.teacher.load_state_dict(dict(zip(dst.keys(), src, strict=True)))
    ano.eval()

    @torch.no_grad()
    def ano_predict(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).flip(-1).permute(0, 3, 1, 2).float() / 255.0
        return ano(t)

    import tempfile

    from lib.models.export import OnnxPredictor, export_onnx

    onnx_s = OnnxPredictor(export_onnx(ours, Path(tempfile.mkdtemp()) / "efficientad_s.onnx"), args.threads)
    from lib.precision import autocast, describe, module_precision

    def ours_bf16(x):
        with module_precision(ours.net, "bf16"):
            return ours.predict(x)

    def ano_bf16(x):  # anomalib under the same autocast: a fair comparison both ways
        with autocast("bf16", "cpu"):
            return ano_predict(x)

    ms = interleaved_median_ms(
        {
            "ours": ours.predict,
            "ours (onnxruntime)": onnx_s.predict,
            "anomalib": ano_predict,
            "ours bf16": ours_bf16,
            "anomalib bf16": ano_bf16,
        },
        test,
    )
    ms_ours, ms_ano = ms["ours"], ms["anomalib"]
    memseg = make_model(
        "memseg", None, input_size=size, iterations=2, batch_size=2, memory_samples=8, device="cpu"
    )
    memseg.fit(train[:16])
    ms_memseg = median_ms(lambda x: memseg.predict(x), test)
    from lib.config import cpu_description

    print(f"{cpu_description()}; {describe()}")
    print(f"{len(test)} test images at {size[0]}x{size[1]}, batch 1, {args.threads} thread(s)")
    b_ours, b_ano = ms["ours bf16"], ms["anomalib bf16"]
    print(
        f"bf16 autocast: ours {b_ours:.1f} ms/image, anomalib {b_ano:.1f} ms/image; ratios: ours bf16 / "
        f"anomalib bf16 = {b_ours / b_ano:.2f}, ours bf16 / anomalib fp32 = {b_ours / ms_ano:.2f} (target <= 0.5); "
        f"ours bf16 / ours fp32 = {b_ours / ms_ours:.2f}"
    )
    print(f"ours EfficientAD-S: {ms_ours:.1f} ms/image; anomalib EfficientAd(small): {ms_ano:.1f} ms/image")
    print(f"latency ratio ours/anomalib = {ms_ours / ms_ano:.2f} (target <= 0.5)")
    ms_onnx = ms["ours (onnxruntime)"]
    print(
        f"ours EfficientAD-S under ONNX Runtime: {ms_onnx:.1f} ms/image, ratio {ms_onnx / ms_ano:.2f} (target <= 0.5)"
    )
    x = torch.zeros(1, 3, *size[::-1])
    # our net's forward takes what predict gets (uint8 BGR, N x H x W x 3); anomalib's a float NCHW tensor
    g_ours = conv_gmac(ours.net, torch.zeros(1, *size[::-1], 3, dtype=torch.uint8))
    g_ano = conv_gmac(ano, x)
    print(
        f"convolution work per image: ours {g_ours:.1f} GMAC, anomalib {g_ano:.1f} GMAC; "
        f"achieved {2 * g_ours / ms_ours * 1e3:.1f} vs {2 * g_ano / ms_ano * 1e3:.1f} GFLOP/s (fp32) "
        "-- half anomalib's latency with the same arithmetic would need twice its throughput"
    )
    print(f"ours MemSeg: {ms_memseg:.1f} ms/image")


if __name__ == "__main__":
    main()
