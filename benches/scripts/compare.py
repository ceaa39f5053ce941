#!/usr/bin/env python3
"""Side-by-side speed of lenet and PyTorch on this machine, alternated in one run.

Rows (each the median over --rounds rounds; in every round ours and PyTorch run back to back,
the order flipping from round to round so that a burst of load from other processes hits
both sides alike):

  epoch b32      one Fashion-MNIST epoch (60k training images, then the 10k test images),
                 batch 32, SGD lr 0.01, no momentum, constant rate          [seconds]
  epoch b256     the same, batch 256, SGD lr 0.05, momentum 0.9 (classical) [seconds]
  inference      forward pass + argmax over the 10k test images, batch 1000 [images/s]
  sgemm 512^3    C = A.B of 512x512 f32 matrices on 1 and 2 threads: tensor::gemm
                 against torch.mm (MKL in the PyTorch wheels)               [GFLOP/s]

The epochs and inference use --threads threads (default 2) on both sides. Our side runs the
release `lenet` binary (`lenet train`) and the `ours` example of the benches crate
(benches/examples/ours.rs), both built here with cargo; LENET_KERNEL (or --kernel) picks
our kernel tier. PyTorch's LeNet-5 is the reference model: conv(1->6, 5x5, pad 2), ReLU, 2x2
average pool, conv(6->16, 5x5), ReLU, pool, 400->120->84->10 with ReLU, cross-entropy; the data
preloaded as float32 pixels/255, reshuffled each epoch, in a plain Python loop.

Kept out of CI (it needs torch). Usage, from anywhere inside the repository:

  python3 benches/scripts/compare.py --data "$LENET_DATA_DIR" [--rounds 3] [--threads 2]
        [--kernel avx2|all] [--only sgemm,inference] [--skip-build]

--kernel all runs every tier the CPU has side by side (each round rotates which side goes
first) and adds the default tier's speed against the fastest tier per row.

--data is the folder holding fashion-mnist/ (default: $LENET_DATA_DIR).
"""
import argparse
import gzip
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
ROWS = ["epoch b32", "epoch b256", "inference", "sgemm 1t", "sgemm 2t"]


def cpu_model():
    """The `model name` line of /proc/cpuinfo (or the platform's description)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ---------------------------------------------------------------------------------------------
# Our side


def cargo_build(skip, need_lenet):
    """Builds the release `lenet` binary and the `ours` example; returns their paths."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    if not skip:
        for cmd in (["cargo", "build", "--release", "-p", "lenet-cli"],
                    ["cargo", "build", "--release", "-p", "lenet-benches", "--example", "ours"]):
            print("+", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, cwd=REPO, check=True)
    lenet = os.path.join(target, "release", "lenet")
    ours = os.path.join(target, "release", "examples", "ours")
    for path in (lenet, ours) if need_lenet else (ours,):
        if not os.path.exists(path):
            sys.exit(f"compare.py: {path} is missing (run without --skip-build)")
    return lenet, ours


def run_line(cmd, env):
    """Runs `cmd`, returns its stdout; exits with its stderr on failure."""
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout


def ours_epoch(lenet, env, data, batch, lr, momentum, threads):
    """Seconds of one epoch (training + test evaluation) as `lenet train` reports it."""
    cmd = [lenet, "train", "--dataset", "fashion-mnist",
           "--data-dir", os.path.join(data, "fashion-mnist"), "--epochs", "1",
           "--batch-size", str(batch), "--lr", str(lr), "--momentum", str(momentum),
           "--weight-decay", "0", "--schedule", "constant", "--activation", "relu",
           "--pool", "avg", "--threads", str(threads)]
    if momentum > 0:
        cmd += ["--nesterov", "false"]
    out = run_line(cmd, env)
    times = re.findall(r"time\s+([0-9.]+)s", out)
    if not times:
        sys.exit(f"compare.py: no epoch time in the output of lenet train:\n{out}")
    return float(times[-1])


def ours_example(ours, env, *args):
    """The last field of the `ours` example's one-line answer, as a float."""
    return float(run_line([ours, *map(str, args)], env).split()[-1])


# ---------------------------------------------------------------------------------------------
# PyTorch's side


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(data, prefix):
    """(images [N,1,28,28] float32 in [0,1], labels int64) of `prefix` (train or t10k)."""
    folder = os.path.join(data, "fashion-mnist")

    def find(name):
        for candidate in (name + ".gz", name):
            if os.path.exists(os.path.join(folder, candidate)):
                return os.path.join(folder, candidate)
        sys.exit(f"compare.py: {name}(.gz) not found in {folder}")

    x = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1).contiguous()
    return x, torch.from_numpy(y.astype(np.int64))


def torch_evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / x.shape[0]


def torch_epoch(train, test, batch, lr, momentum, threads, seed=0):
    """Seconds of one epoch: the training pass, then the evaluation of the test set."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = LeNet5()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    (x, y), (xt, yt) = train, test
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    perm = torch.randperm(x.shape[0], generator=gen)
    for i in range(0, x.shape[0], batch):
        idx = perm[i:i + batch]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
        loss.backward()
        opt.step()
    torch_evaluate(model, xt, yt)
    return time.perf_counter() - start


def median_secs(f, reps, batch_secs):
    """Median seconds per call of f over `reps` samples of about `batch_secs` each."""
    start = time.perf_counter()
    f()
    once = max(time.perf_counter() - start, 1e-7)
    batch = max(1, int(batch_secs / once))
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(batch):
            f()
        samples.append((time.perf_counter() - t) / batch)
    return statistics.median(samples)


def torch_inference(test, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = LeNet5()
    x, y = test
    return x.shape[0] / median_secs(lambda: torch_evaluate(model, x, y), 5, 0.0)


def torch_sgemm(size, threads):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=g) * 2 - 1
    b = torch.rand(size, size, generator=g) * 2 - 1
    c = torch.empty(size, size)
    secs = median_secs(lambda: torch.mm(a, b, out=c), 15, 0.05)
    return 2.0 * size ** 3 / secs / 1e9


# ---------------------------------------------------------------------------------------------


def our_tiers(ours, kernel_arg):
    """[(label, env)] of our sides: each tier the CPU has for `--kernel all` (asked of the
    `ours` example, which names the tier a LENET_KERNEL value gives), else the one named (or
    the default). The last label of `all` is the default: the highest tier."""
    base = dict(os.environ)
    base.pop("LENET_GEMM_KERNEL", None)
    if kernel_arg != "all":
        env = dict(base)
        if kernel_arg:
            env["LENET_KERNEL"] = kernel_arg
        return [(run_line([ours, "sgemm", "1", "64"], env).split()[3], env)]
    sides = []
    for name in ("portable", "avx2", "avx512"):
        env = dict(base, LENET_KERNEL=name)
        got = run_line([ours, "sgemm", "1", "64"], env).split()[3]
        if got == name:
            sides.append((name, env))
        else:
            print(f"compare.py: this CPU has no {name} tier (LENET_KERNEL={name} runs {got})",
                  file=sys.stderr)
    return sides


def row_functions(args, lenet, ours, env, train, test):
    """{row: (our function, PyTorch's function)} for the groups asked for."""
    groups = set((args.only or "epochs,inference,sgemm").split(","))
    t, rows = args.threads, {}
    if "epochs" in groups:
        rows["epoch b32"] = (lambda: ours_epoch(lenet, env, args.data, 32, 0.01, 0.0, t),
                             lambda: torch_epoch(train, test, 32, 0.01, 0.0, t))
        rows["epoch b256"] = (lambda: ours_epoch(lenet, env, args.data, 256, 0.05, 0.9, t),
                              lambda: torch_epoch(train, test, 256, 0.05, 0.9, t))
    if "inference" in groups:
        rows["inference"] = (lambda: ours_example(ours, env, "infer", t,
                                                  os.path.join(args.data, "fashion-mnist")),
                             lambda: torch_inference(test, t))
    if "sgemm" in groups:
        for n in (1, 2):
            rows[f"sgemm {n}t"] = (lambda n=n: ours_example(ours, env, "sgemm", n, args.size),
                                   lambda n=n: torch_sgemm(args.size, n))
    return rows


def print_table(args, labels, results):
    """One line per row: each side's median, default/PyTorch, default/fastest of our tiers."""
    default = labels[-2]  # our highest tier; the last label is pytorch
    print(f"\nCPU: {cpu_model()} ({os.cpu_count()} logical CPUs); torch {torch.__version__}; "
          f"our tiers: {', '.join(labels[:-1])} (default {default}); "
          f"medians of {args.rounds} alternated rounds")
    head = "".join(f"{lab:>11}" for lab in labels)
    print(f"{'row':<16} {'unit':<9}{head} {'default/pytorch':>16} {'default/best tier':>18}")
    for row in ROWS:
        if row not in results:
            continue
        med = {lab: statistics.median(v) for lab, v in results[row].items()}
        seconds = row.startswith("epoch")
        unit = "s" if seconds else ("images/s" if row == "inference" else "GFLOP/s")
        speed = (lambda a, b: b / a) if seconds else (lambda a, b: a / b)
        best = min if seconds else max
        fastest = best(med[lab] for lab in labels[:-1])
        label = row if not row.startswith("sgemm") else f"sgemm {args.size}^3 {row[-2:]}"
        cells = "".join(f"{med[lab]:>11.2f}" for lab in labels)
        print(f"{label:<16} {unit:<9}{cells} {speed(med[default], med['pytorch']):>15.2f}x"
              f" {speed(med[default], fastest):>17.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("LENET_DATA_DIR"),
                   help="folder holding fashion-mnist/ (default: $LENET_DATA_DIR)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per row (default 3)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads of the epochs and inference (default 2)")
    p.add_argument("--kernel", help="our kernel tier: avx512, avx2, portable, or all (every "
                   "tier the CPU has, alternated in each round); default: the best")
    p.add_argument("--size", type=int, default=512, help="sgemm size (default 512)")
    p.add_argument("--only", help="comma-separated subset of: epochs,inference,sgemm")
    p.add_argument("--skip-build", action="store_true", help="use the binaries already built")
    args = p.parse_args()
    groups = set((args.only or "epochs,inference,sgemm").split(","))
    if groups & {"epochs", "inference"} and not args.data:
        sys.exit("compare.py: pass --data or set LENET_DATA_DIR")

    lenet, ours = cargo_build(args.skip_build, "epochs" in groups)
    tiers = our_tiers(ours, args.kernel)
    test = load_split(args.data, "t10k") if groups & {"epochs", "inference"} else None
    train = load_split(args.data, "train") if "epochs" in groups else None

    # sides[row] = [(label, function)]: our tiers, then PyTorch.
    sides = {}
    for label, env in tiers:
        for row, (f_ours, f_torch) in row_functions(args, lenet, ours, env, train, test).items():
            sides.setdefault(row, []).append((label, f_ours))
            if label == tiers[-1][0]:
                sides[row].append(("pytorch", f_torch))
    labels = [label for label, _ in tiers] + ["pytorch"]
    results = {row: {lab: [] for lab in labels} for row in sides}
    for r in range(args.rounds):
        for row, fs in sides.items():
            # Alternate: every round starts with another side.
            k = r % len(fs)
            for label, f in fs[k:] + fs[:k]:
                results[row][label].append(f())
            got = ", ".join(f"{lab} {results[row][lab][-1]:.3f}" for lab in labels)
            print(f"round {r + 1}/{args.rounds} {row}: {got}", file=sys.stderr)
    print_table(args, labels, results)


if __name__ == "__main__":
    main()
