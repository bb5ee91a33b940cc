"""Time of every sensitivity method on the CIFAR ResNet18 (full width, 557,056 ReLUs) on CPU, in one run.

Run: python bench/sensitivity.py [--batch 32] [--captum-batch 4] [--threads 2] [--methods taylor,senet,...]
Prints a markdown table: method, options, batch, seconds, scored elements, forward calls of the net.
The net is freshly initialised (times do not depend on the weights); the captum methods that
loop over sites or channels (conductance, feature_ablation) get a smaller batch.
"""
import argparse, time, torch
from relu_explore.models import cifar_resnet18
from relu_explore.sites import relufy
from relu_explore.sensitivity import score, list_methods

SLOW = {'conductance', 'feature_ablation'}

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--batch', type=int, default=32); p.add_argument('--captum-batch', type=int, default=4)
    p.add_argument('--threads', type=int, default=2); p.add_argument('--methods', default=','.join(list_methods()))
    a = p.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    net = relufy(cifar_resnet18(), torch.randn(2, 3, 32, 32))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(a.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (a.batch,), generator=g)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    score(net, (x[:2], y[:2]), 'grad_x_act')                                  # warm-up: imports (captum), allocator
    print(f"CIFAR ResNet18 (557,056 ReLUs), CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| method | options | batch | seconds | elements | net forwards |\n|---|---|---|---|---|---|")
    for m in a.methods.split(','):
        n = a.captum_batch if m in SLOW else a.batch
        calls.clear()
        t = time.perf_counter()
        s = score(net, (x[:n], y[:n]), m)
        dt = time.perf_counter() - t
        opts = {'snl': 'steps=20', 'conductance': 'n_steps=16', 'feature_ablation': 'per channel, 16 per eval',
                'senet': 'secondary=taylor', 'ablation': 'per site', 'deepreduce': 'train_epochs=0'}.get(m, 'defaults')
        print(f"| {m} | {opts} | {n} | {dt:.2f} | {sum(v.numel() for v in s.values()):,} | {len(calls)} |", flush=True)

if __name__ == '__main__': main()
