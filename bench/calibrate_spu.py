"""Measured PI cost under SecretFlow SPU: secure runs of thinned digits ResNets, and the fit behind
relu_explore.secure.MEASURED_PI ('cheetah-measured', 'semi2k-measured').

Run in the SPU virtualenv (SPU needs numpy<2, so it is not in the main one):
    . .venv-pi/bin/activate && python bench/calibrate_spu.py            # ~25 min on the 2-core box
    python bench/calibrate_spu.py --protocols semi2k --cal-batch 4      # quick look

1. Acceptance: digits_resnet (width 16, stages (1, 1)) trained briefly with relu_explore.distill.train on
   relu_explore.data.digits_data; 100%, 50% and 10% of its ReLUs kept (masks from relu_explore.budget.allocate
   with random scores, not retrained), thinned, and run with measure_pi on `--batch` validation images
   under each protocol. Reports secure vs plaintext argmax agreement and the relative logit error.
2. Calibration: the same three budgets on two more untrained digits ResNets (width 8 stages (1, 1); width 16
   stages (2, 2)) at batch `--cal-batch`, so that ReLUs, MACs and the constant can be told apart; then
   fit_pi_cost per protocol over all runs. Prints the MEASURED_PI entries to paste into nbs/08a_secure.ipynb,
   and the markdown tables for bench/RESULTS.md. Runs are saved to --out (runs.csv, fit.json).
Weights are secret-shared (as in PI), ring 64 bits; both parties run in this one process.
"""
import argparse, json, os, platform, time
from pathlib import Path
import numpy as np, pandas as pd, torch
from relu_explore.data import digits_data
from relu_explore.models import digits_resnet
from relu_explore.distill import train, evaluate
from relu_explore.sites import relufy, thin, get_masks, set_masks, relu_count
from relu_explore.budget import allocate
from relu_explore.secure import measure_pi, fit_pi_cost

FRACS = (1.0, 0.5, 0.1)

def masked(net, scores, frac):
    "Set masks keeping `frac` of the ReLUs (all of them for 1.0)."
    if frac >= 1: set_masks(net, {k: torch.ones(m.shape) for k, m in get_masks(net).items()})
    else: set_masks(net, allocate(scores, keep_frac=frac))
    return net

def run_budgets(name, model, xb, protocols, seed, yb=None, valid=None, reps=2, weights='secret'):
    "Secure runs at each budget; repetitions are interleaved over the budgets and the fastest of each is kept."
    net = relufy(model.eval(), xb)
    g = torch.Generator().manual_seed(seed)
    scores = {k: torch.rand(m.shape, generator=g) for k, m in get_masks(net).items()}
    thinned, accs = {}, {}
    for frac in FRACS:
        thinned[frac] = thin(masked(net, scores, frac)).eval()
        accs[frac] = evaluate(thinned[frac], valid, device='cpu')['acc'] if valid is not None else float('nan')
    best = {}
    for _ in range(reps):  # the box is shared: interleaving spreads the other jobs' load over all budgets
        for frac in FRACS:
            for p in protocols:
                r = measure_pi(thinned[frac], xb, protocol=p, weights=weights)
                if (frac, p) not in best or r.seconds < best[frac, p].seconds: best[frac, p] = r
    rows = []
    for frac in FRACS:
        for p in protocols:
            r = best[frac, p]
            row = r.to_df().assign(net=name, keep_frac=frac, plain_valid_acc=accs[frac], reps=reps)
            if yb is not None: row['secure_acc'] = float((r.output.argmax(1) == yb.numpy()).mean())
            print(f"{name:>12} {weights:6} keep {frac:4.0%} {p:8} relus {r.relus:6,} x {r.batch}: {r.seconds:7.2f} s "
                  f"(ReLU ops {r.part_seconds('relu'):.2f} s, linear {r.part_seconds('linear'):.2f} s), {r.mb:8.2f} MB, "
                  f"messages {r.messages[0]:,}, rel err {r.rel_error:.1e}, argmax agree {r.argmax_agree:.0%}", flush=True)
            rows.append(row)
    return rows

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=20, help='validation images of the acceptance runs')
    ap.add_argument('--cal-batch', type=int, default=8, help='batch of the extra calibration nets')
    ap.add_argument('--epochs', type=int, default=8)
    ap.add_argument('--protocols', nargs='+', default=['semi2k', 'cheetah'])
    ap.add_argument('--reps', type=int, default=3, help='repetitions of the acceptance runs; the fastest is kept')
    ap.add_argument('--cal-reps', type=int, default=2, help='repetitions of the calibration runs')
    ap.add_argument('--out', default='bench/out/spu')
    a = ap.parse_args()
    torch.set_num_threads(1); torch.manual_seed(0)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    data = digits_data(batch_size=64)
    model = digits_resnet()
    t0 = time.time()
    train(model, data.train, data.valid, epochs=a.epochs, progress=False, device='cpu')
    acc = evaluate(model, data.valid, device='cpu')['acc']
    print(f"digits_resnet trained {a.epochs} epochs in {time.time() - t0:.0f} s: valid acc {acc:.3f}", flush=True)
    xb, yb = map(torch.cat, zip(*data.valid))
    xb, yb = xb[:a.batch], yb[:a.batch]
    for p in a.protocols:  # warm-up: the first SPU run of a process pays one-off library initialisation
        measure_pi(thin(relufy(digits_resnet(width=4).eval(), xb[:1])), xb[:1], protocol=p)
    rows = run_budgets('digits_w16', model, xb, a.protocols, 0, yb, data.valid, a.reps)
    torch.manual_seed(1)
    xc = torch.cat([x for x, _ in data.valid])[:a.cal_batch]
    rows += run_budgets('cal_w8', digits_resnet(width=8), xc, a.protocols, 1, reps=a.cal_reps)
    rows += run_budgets('cal_w16x2', digits_resnet(width=16, layers=(2, 2)), xc, a.protocols, 2, reps=a.cal_reps)
    pub = run_budgets('digits_w16', model, xb, a.protocols, 0, yb, data.valid, a.cal_reps, weights='public')
    df = pd.concat(rows + pub, ignore_index=True)
    df.to_csv(out / 'runs.csv', index=False)
    sec = df[df.weights == 'secret']
    fits = {}
    for p in a.protocols:
        f = fit_pi_cost(sec[sec.protocol == p])
        fits[f"{p}-measured"] = dict(spu_protocol=p, **f)
    (out / 'fit.json').write_text(json.dumps(dict(fits=fits, machine=platform.processor() or platform.machine(),
                                                  cpus=os.cpu_count(), date=time.strftime('%Y-%m-%d')), indent=1))
    print("\nMEASURED_PI entries:")
    for k, f in fits.items():
        c = ', '.join(f"{n}={v:.4g}" for n, v in f['coefficients'].items())
        print(f"    '{k}': dict(spu_protocol='{f['spu_protocol']}', coefficients=dict({c}),\n"
              f"        traffic_const_mb={f['traffic_const_mb']:.4g}, latency_max_rel_err={f['latency_max_rel_err']:.3g}, "
              f"latency_rms_rel_err={f['latency_rms_rel_err']:.3g},\n        traffic_max_rel_err={f['traffic_max_rel_err']:.3g}, "
              f"traffic_rms_rel_err={f['traffic_rms_rel_err']:.3g}, runs={f['runs']}),")
    acc_rows = df[df.net == 'digits_w16']
    print("\n| protocol | weights | kept | ReLUs/image | MACs/image | batch | seconds | ReLU-op s | linear-op s | MB sent (p0 + p1) | "
          "messages p0 | argmax = plaintext | rel. logit error | secure acc | plaintext valid acc |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for _, r in acc_rows.iterrows():
        print(f"| {r.protocol} | {r.weights} | {r.keep_frac:.0%} | {r.relus:,} | {r.macs:,} | {r.batch} | {r.seconds:.2f} | "
              f"{r.relu_seconds:.2f} | {r.linear_seconds:.2f} | "
              f"{r.mb:.2f} ({r.mb_party0:.2f} + {r.mb_party1:.2f}) | {r.messages_party0:,} | {round(r.argmax_agree * r.batch)}/{r.batch} | "
              f"{r.rel_error:.1e} | {r.secure_acc:.2f} | {r.plain_valid_acc:.3f} |")
    print("\n| net | protocol | kept | batch | ReLUs/run | MACs/run | seconds | ReLU-op s | linear-op s | MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for _, r in df[df.net != 'digits_w16'].iterrows():
        print(f"| {r.net} | {r.protocol} | {r.keep_frac:.0%} | {r.batch} | {r.relus_run:,} | {r.macs_run:,} | {r.seconds:.2f} | "
              f"{r.relu_seconds:.2f} | {r.linear_seconds:.2f} | {r.mb:.2f} |")

if __name__ == '__main__':
    main()
