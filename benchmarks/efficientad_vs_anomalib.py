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
    ms_ours = median_ms(lambda x: ours.predict(x), test)

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

    ms_ano = median_ms(ano_predict, test)
    memseg = make_model(
        "memseg", None, input_size=size, iterations=2, batch_size=2, memory_samples=8, device="cpu"
    )
    memseg.fit(train[:16])
    ms_memseg = median_ms(lambda x: memseg.predict(x), test)
    print(f"{len(test)} test images at {size[0]}x{size[1]}, batch 1, {args.threads} thread(s)")
    print(f"ours EfficientAD-S: {ms_ours:.1f} ms/image; anomalib EfficientAd(small): {ms_ano:.1f} ms/image")
    print(f"latency ratio ours/anomalib = {ms_ours / ms_ano:.2f} (target <= 0.5)")
    print(f"ours MemSeg: {ms_memseg:.1f} ms/image")


if __name__ == "__main__":
    main()
