"""CIFAR-10 methods study on a CPU: every recipe against random masks at equal training, at 0.5 %, 1.5 % and 5 % of
the ReLUs of a quarter-width ResNet18 (139,264 ReLUs), two seeds, on a 2-core machine.

    python bench/methods_cifar_cpu.py --root data                  # the study (about 3 h of a 2-core CPU; resumable)
    python bench/methods_cifar_cpu.py --root data --table          # print the stored table only (runs nothing)
    python bench/methods_cifar_cpu.py --root data --probe          # layers or elements? (below; about 1 h more)

It is exactly this command (the same function), so the table can be reproduced from the shell:

    relu_explore_sweep bench/results/methods_cifar_cpu --dataset cifar10 --root data --model cifar_resnet18 --width 16 \
      --valid_split 0.1 --n_train 20000 --test --teacher_epochs 15 --teacher_lr 0.1 \
      --recipe random,taylor,deepreduce,senet,snl,autorep,random_poly,random_long --preset cpu --seeds 0,1 \
      --budgets 0.005,0.015,0.05 --epochs 4

Data: the official training set split into 45,000 / 5,000 (stratified, seed 0); the first 20,000 of the 45,000 train,
the 5,000 are the validation split every recipe reports on. `random_poly` is AutoReP's control (random masks with
AutoReP's polynomial replacement and training, as many epochs); `random_long` is random masks trained as long as the
longest method at that (budget, seed). The test set (10,000) is measured once per finished net,
for the table only. One teacher, trained once and kept in --out. Every finished point is stored with its masks and
notes as it ends (`relu_explore.study.run_study`), smallest budget first; kill it at any time and run it again to go on.

--probe runs, at the smallest budget and on the same store, `random_alloc:<m>` for SENet, SNL and Taylor: random
elements within each site, as many per site as <m>'s stored masks keep there, trained as many epochs as <m>. The gap
to <m> is what <m>'s choice within layers is worth; the gap to uniform random, what its choice of layers is worth.
"""
import argparse, time
from pathlib import Path
import torch

STUDY = dict(dataset='cifar10', model='cifar_resnet18', width=16, valid_split='0.1', n_train=20000, test=True,
             teacher_epochs=15, teacher_lr=0.1, recipe='random,taylor,deepreduce,senet,snl,autorep,random_poly,random_long',
             preset='cpu', seeds='0,1', budgets='0.005,0.015,0.05', epochs=4)
PROBE = dict(recipe='random_alloc:senet,random_alloc:snl,random_alloc:taylor', budgets='0.005')

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default='data', help="folder holding 'cifar-10-batches-py/'")
    p.add_argument('--out', default='bench/results/methods_cifar_cpu', help='results store folder (the teacher is kept there too)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--table', action='store_true', help='print the stored table of this configuration and stop')
    p.add_argument('--probe', action='store_true', help=f"run {PROBE['recipe']} at budget {PROBE['budgets']} (needs those points)")
    for k, v in STUDY.items():
        if k != 'test': p.add_argument(f'--{k}', type=type(v), default=v)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    kw = {k: getattr(a, k) for k in STUDY if k != 'test'}
    if a.table: return print_table(a.out, kw)
    from relu_explore.cli import sweep_cli
    t0 = time.perf_counter()
    sweep_cli(a.out, root=a.root, test=True, **{**kw, **(PROBE if a.probe else {})})
    print(f"study wall time this run: {(time.perf_counter() - t0) / 60:.1f} min")

def print_table(out, kw):
    "The stored rows of this configuration as a markdown table (mean ± sd over seeds), and the gain over random_long."
    from relu_explore.frontier import load_results
    from relu_explore.study import current_keys, study_table
    from relu_explore.models import cifar_resnet18
    from relu_explore.sites import relufy, relu_total
    from relu_explore.sweeps import _budget_list
    df = load_results(out)
    total = relu_total(relufy(cifar_resnet18(width=kw['width']), torch.randn(2, 3, 32, 32)))
    bl = _budget_list([float(b) for b in kw['budgets'].split(',')], total)
    names, seeds = kw['recipe'].split(',') + PROBE['recipe'].split(','), [int(s) for s in kw['seeds'].split(',')]
    cur = df[df.point_key.isin(current_keys(df, names, bl, seeds, kw['preset'], kw['epochs'], store_dir=out))]
    tab = study_table(cur)
    dense = cur[cur.method == 'dense']
    if len(dense): print(f"teacher ({total:,} ReLUs): validation {100 * dense.acc.iloc[0]:.2f} %, test {100 * dense.test_acc.iloc[0]:.2f} %\n")
    print('| budget | method | seeds | ReLUs (no stem) | valid acc % | test acc % | epochs | min/point |')
    print('|---|---|---|---|---|---|---|---|')
    for r in tab.itertuples():
        sd = lambda v: '' if v != v else f' ± {100 * v:.2f}'
        print(f"| {r.budget:,} | {r.method} | {r.seeds} | {r.relus:,.0f} ({r.relus_no_stem:,.0f}) | {100 * r.valid_acc:.2f}{sd(r.valid_sd)} "
              f"| {100 * r.test_acc:.2f}{sd(r.test_sd)} | {r.epochs:.0f} | {r.minutes:.1f} |")
    from relu_explore.study import gain_table
    pts = cur[cur.method != 'dense']
    probe = [(n, n.split(':', 1)[1]) for n in PROBE['recipe'].split(',')]
    for base, only in (('random_long', None), ('random', None), ('random_poly', 'autorep'), *probe):
        g = gain_table(pts, baseline=base)
        if only is not None and len(g): g = g[g.method == only]
        if g.empty: continue
        what = {None: '', 'autorep': ' (AutoReP against chance placement with its own replacement and training)'}.get(
            only, f' (its choice within layers: random elements in the same number per site, as many epochs)')
        print(f"\ngain over `{base}` at the same seed{what}, validation accuracy points (mean, smallest, spread = larger sd over seeds):\n")
        print('| budget | method | seeds | gain | smallest gain | spread | beats chance (> 2 spread, every seed) |')
        print('|---|---|---|---|---|---|---|')
        for r in g.itertuples():
            v = 'n/a (one seed)' if r.beats_chance is None else ('yes' if r.beats_chance else 'no')
            print(f"| {r.budget:,} | {r.method} | {r.seeds} | {r.gain_pts:+.2f} | {r.min_gain_pts:+.2f} | "
                  f"{'' if r.spread_pts != r.spread_pts else f'{r.spread_pts:.2f}'} | {v} |")
    return tab

if __name__ == '__main__': main()
