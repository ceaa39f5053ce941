"""PyTorch inference alone, for paired runs against `cargo bench -p lenet-benches --bench eval`.

Uses the LeNet5 model and evaluate() of /work/shared/reference/bench_lenet.py (batch 1000,
no_grad) on the 10k Fashion-MNIST test images; prints the median and best of 5 timed passes
after one warm-up pass. Usage: python pytorch_inference.py THREADS [DATA_DIR]
"""
import os, sys, time, statistics, torch
sys.path.insert(0, os.environ.get("LENET_REFERENCE_DIR", "/work/shared/reference"))
import bench_lenet as b
threads = int(sys.argv[1])
torch.set_num_threads(threads)
b.DATA_DIR = sys.argv[2] if len(sys.argv) > 2 else "/work/shared/data/fashion-mnist"
import numpy as np
x_u8, y_u8 = b.load_split("t10k")
x = torch.from_numpy(x_u8.astype(np.float32) / 255.0).unsqueeze(1).contiguous()
y = torch.from_numpy(y_u8.astype(np.int64))
torch.manual_seed(0)
m = b.LeNet5(); m.eval()
b.evaluate(m, x, y)
ts = []
for _ in range(5):
    t0 = time.perf_counter(); b.evaluate(m, x, y); ts.append(time.perf_counter() - t0)
print(f"torch {threads}t inference: median {10000/statistics.median(ts):.0f} img/s, best {10000/min(ts):.0f}")
