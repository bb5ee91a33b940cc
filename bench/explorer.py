"""Explorer slider-to-update latency for CIFAR ResNet18 on CPU, split into allocate / set_masks+count / cost / charts.

Run: python bench/explorer.py [--moves 25] [--method activation] [--strategy global] [--threads N] [--update_threads 1]
Scores are computed once before timing (a cheap method on a few random 32x32 images; the numbers do not depend on
which scores). Each move sets `explorer.budget` as the slider does and reads `explorer.timings` (ms) of that update:
allocate (budget -> masks), set_masks + relu_count, cost (cost_table over the protocols), charts (per-layer bars and the
site heatmap rebuilt and handed to their JupyterChart widgets). Medians over the moves. The accuracy readout is not part
of a move (it is debounced, `acc_delay`); its cost is printed separately.
"""
import argparse, statistics, time
import numpy as np, torch
import torch.utils.data as tud
from relu_explore.data import Data
from relu_explore.models import cifar_resnet18
from relu_explore.explorer import Explorer

PARTS = ['allocate', 'set_masks+count', 'cost', 'charts', 'total']

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--moves', type=int, default=25); p.add_argument('--method', default='activation')
    p.add_argument('--strategy', default='global'); p.add_argument('--threads', type=int, default=None)
    p.add_argument('--eval_n', type=int, default=256)
    p.add_argument('--update_threads', type=int, default=1, help="torch threads during an update (0: torch's setting)")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = torch.randn(a.eval_n, 3, 32, 32), torch.randint(0, 10, (a.eval_n,))
    dl = tud.DataLoader(tud.TensorDataset(x, y), batch_size=64)
    data = Data(dl, dl, 10, (3, 32, 32), 'random-32x32')
    t = time.perf_counter()
    ex = Explorer(cifar_resnet18().eval(), data, methods=(a.method,), strategy=a.strategy, score_n=16, eval_n=a.eval_n,
                  acc_delay=None, update_threads=a.update_threads or None)
    setup = time.perf_counter() - t
    rng = np.random.default_rng(0)
    budgets = np.unique(np.geomspace(1_000, ex.total, 4 * a.moves).astype(int))
    budgets = rng.permutation(budgets)[:a.moves]                 # jumps of every size, as a dragged slider gives
    ex.budget = int(budgets[0]) + 1                              # warm-up
    rows = []
    for b in budgets:
        ex.budget = int(b)
        assert ex.relus <= b
        rows.append(ex.timings)
    med = {k: statistics.median(r[k] for r in rows) for k in PARTS}
    p90 = {k: float(np.percentile([r[k] for r in rows], 90)) for k in PARTS}
    print(f"CIFAR ResNet18 ({ex.total:,} ReLUs, {len(ex.sites)} sites), method {a.method!r}, strategy {a.strategy!r}, "
          f"{len(rows)} moves, {torch.get_num_threads()} torch threads ({a.update_threads or 'same'} during updates), torch {torch.__version__}; explorer built in {setup:.1f} s")
    print("| part | median ms | p90 ms |\n|---|---|---|")
    for k in PARTS: print(f"| {k} | {med[k]:.1f} | {p90[k]:.1f} |")
    acc = []
    for b in budgets[:5]:
        ex.budget = int(b); t = time.perf_counter(); ex.accuracy(); acc.append(time.perf_counter() - t)
    print(f"accuracy readout (debounced, not per move): {statistics.median(acc) * 1e3:.0f} ms median for {a.eval_n} images")

if __name__ == '__main__': main()
