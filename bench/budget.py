"""Time `allocate` on the CIFAR ResNet18 sites (557,056 elements) on CPU, one row per strategy.

Run: python bench/budget.py [--reps 25] [--budget 50000] [--threads N]
Scores are random (seeded); each strategy is warmed up, then timed `--reps` times (interleaved),
and the median wall-clock and CPU times are printed next to the 50 ms target (for 'global' and
'per_layer'; 'channel', 'layer' and 'deepreduce' are shown for comparison). The allocation work runs
in numpy on one thread, so CPU time tracks the work itself; wall time also includes waiting for a
CPU on a shared machine (the load average is printed).
"""
import argparse, os, statistics, time, warnings
import torch
from relu_explore.budget import allocate

def resnet18_shapes():
    "Site names and mask shapes of the CIFAR ResNet18 at 32x32 (stem + 8 BasicBlocks x 2 ReLUs)."
    shapes = {'relu': (64, 32, 32)}
    for i, (c, s) in enumerate([(64, 32), (128, 16), (256, 8), (512, 4)], 1):
        for b in range(2): shapes[f'layer{i}.{b}.relu'] = shapes[f'layer{i}.{b}.relu_1'] = (c, s, s)
    return shapes

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--reps', type=int, default=25); p.add_argument('--budget', type=int, default=50_000)
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave the default)')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    scores = {k: torch.rand(s, generator=g) for k, s in resnet18_shapes().items()}
    n = sum(v.numel() for v in scores.values())
    runs = {'global': {}, 'per_layer': {}, 'channel': dict(exact=False), 'layer': dict(exact=False), 'deepreduce': dict(exact=False, criticality={'S1': 0, 'S4': 1, 'S2': 2, 'S3': 3})}   # DeepReDuce's CIFAR-100 stage order
    target = {'global': 50, 'per_layer': 50}
    times, cpu, kept = {k: [] for k in runs}, {k: [] for k in runs}, {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for k, kw in runs.items():                               # warm-up
            for _ in range(3): kept[k] = allocate(scores, budget=a.budget, strategy=k, **kw).kept
        for _ in range(a.reps):
            for k, kw in runs.items():                           # interleaved: same conditions for each
                t, c = time.perf_counter(), time.process_time()
                allocate(scores, budget=a.budget, strategy=k, **kw)
                times[k].append(time.perf_counter() - t); cpu[k].append(time.process_time() - c)
    print(f"allocate on CIFAR ResNet18 sites, CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"budget {a.budget:,}, median of {a.reps} runs")
    print("| strategy | elements | kept | median ms (wall) | median ms (CPU) | target ms | within target |\n|---|---|---|---|---|---|---|")
    for k in runs:
        med, mc = statistics.median(times[k]) * 1e3, statistics.median(cpu[k]) * 1e3
        tgt = target.get(k)
        print(f"| {k} | {n:,} | {kept[k]:,} | {med:.1f} | {mc:.1f} | {tgt if tgt else '-'} | {('yes' if med <= tgt else 'NO') if tgt else '-'} |")
    print(f"(load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs)")

if __name__ == '__main__': main()
