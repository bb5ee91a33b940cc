"""Forward time of CIFAR ResNet18 on CPU: original vs relufied (all kept, 10% kept) vs thinned.

Run: python bench/sites.py [--batch 64] [--reps 10]
Prints a table; ratios are measured side by side in one run (interleaved repetitions).
"""
import argparse, time, statistics, torch
from relu_explore.models import cifar_resnet18
from relu_explore.sites import relufy, get_masks, set_masks, relu_count, thin

def bench(fns, x, reps):
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values(): f(x); f(x)                      # warm-up
        for _ in range(reps):
            for k, f in fns.items():                             # interleaved: same conditions for each
                t = time.perf_counter(); f(x); times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}

def main():
    p = argparse.ArgumentParser(); p.add_argument('--batch', type=int, default=64); p.add_argument('--reps', type=int, default=10)
    a = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(a.batch, 3, 32, 32)
    model = cifar_resnet18().eval()
    full = relufy(model, x[:2]).eval()
    ten = relufy(model, x[:2]).eval()
    g = torch.Generator().manual_seed(0)
    set_masks(ten, {k: (torch.rand(v.shape, generator=g) < 0.10).float() for k, v in get_masks(ten).items()})
    layer = relufy(model, x[:2]).eval()      # whole-layer removal: half of the sites removed, the rest kept
    set_masks(layer, {k: (torch.zeros_like(v) if i % 2 else torch.ones_like(v)) for i, (k, v) in enumerate(get_masks(layer).items())})
    fns = {'original': model, 'relufied, all kept': full, 'relufied, 10% kept (pixels)': ten,
           'thin(10% kept pixels)': thin(ten).eval(), 'relufied, half the sites removed': layer, 'thin(half the sites removed)': thin(layer).eval()}
    t = bench(fns, x, a.reps)
    base = t['original']
    print(f"CIFAR ResNet18, batch {a.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"| variant | ReLUs/image | ms/batch | × original |\n|---|---|---|---|")
    counts = {'original': 557056, 'relufied, all kept': relu_count(full), 'relufied, 10% kept (pixels)': relu_count(ten),
              'thin(10% kept pixels)': relu_count(ten), 'relufied, half the sites removed': relu_count(layer), 'thin(half the sites removed)': relu_count(layer)}
    for k, v in t.items(): print(f"| {k} | {counts[k]:,} | {v*1e3:.1f} | {v/base:.3f} |")

if __name__ == '__main__': main()
