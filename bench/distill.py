"""Images/s of KD retraining (`relu_explore.distill.distill`) for the CIFAR ResNet18: plain vs relufied student (10% of
the ReLUs kept), eager vs `torch.compile`, fp32 vs bf16 autocast, each also as a fraction of the FLOP limit
(FLOPs of one KD step per image x images/s / measured matmul peak of that precision).

On CUDA:  python bench/distill.py                 # batch 512, 40 steps per epoch, all 8 variants
On CPU:   python bench/distill.py                 # tiny: ResNet18 at width 8, batch 8, 3 steps, eager only
          python bench/distill.py --compile       # ... and the compiled variants too (inductor: minutes on CPU)
Either:   python bench/distill.py --guard         # only the cost of the per-step non-finite check (distill's backoffs=):
          the relufied student with the check (default backoffs=3) and without it (backoffs=None) side by side in one
          process, calls interleaved (on/off, off/on, ...), median step time; on CUDA compiled + bf16 (the fast path)
          and the host synchronisations per epoch counted with torch.cuda.set_sync_debug_mode at two epoch lengths.

A KD step = teacher forward (eval, inference mode) + student forward and backward + SGD step. FLOPs are counted with
torch.utils.flop_counter (convolutions and matmuls; the masks' element-wise work is not counted, so plain and relufied
students have the same count). "fp32" runs with TF32 tensor cores allowed (torch.set_float32_matmul_precision('high')),
and its peak is measured the same way. Throughput is the library's own `History.img_s` of the last epoch (the first
epoch carries the compilation); the data is resident on the device (`gpu_data=True`) with crop+flip done there.
"""
import argparse, copy, statistics, time, warnings
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode
from relu_explore.models import cifar_resnet18
from relu_explore.sites import relufy, get_masks, set_masks, relu_count, relu_total
from relu_explore.distill import distill

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def matmul_peak(dtype, dev, n, seconds=1.0):
    "Measured FLOP/s of an n x n x n matmul in `dtype` (best of a few timed bursts)."
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3): a @ b
    sync(dev)
    t, reps = time.perf_counter(), 0
    while time.perf_counter() - t < seconds / 4:        # calibrate: how many fit in a quarter of `seconds`
        a @ b; sync(dev); reps += 1
    reps = max(reps, 3)
    best = 0.
    for _ in range(4):
        sync(dev); t = time.perf_counter()
        for _ in range(reps): a @ b
        sync(dev); best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best

def step_flops(student, teacher, x):
    "FLOPs per image of one KD step: teacher forward + student forward and backward."
    s, t = copy.deepcopy(student).cpu(), copy.deepcopy(teacher).cpu().eval()
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad(): t(x)
        s(x).sum().backward()
    return fc.get_total_flops() / x.shape[0]

def guard_work(student, dev, cuda, n=2000):
    "(seconds per step, seconds per epoch) of what the check adds, each timed alone: the per-step flag and the per-epoch snapshot."
    import math
    from relu_explore.distill import _snapshot
    l = torch.tensor(1.5, device=dev)
    if cuda:
        flags = torch.zeros(2, device=dev)
        def step():
            bad = l.isfinite().logical_not().float()
            flags[0] += bad; flags[1] += flags[0] == 0
    else:
        def step(): return math.isfinite(l.item())
    for _ in range(50): step()
    sync(dev); t = time.perf_counter()
    for _ in range(n): step()
    sync(dev); per_step = (time.perf_counter() - t) / n
    s = copy.deepcopy(student).to(dev)
    opt = torch.optim.SGD(s.parameters(), lr=0.01, momentum=0.9)
    s(torch.randn(2, *s._relu_explore_input_shape.tolist(), device=dev)).sum().backward(); opt.step()   # momentum buffers exist
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.)
    _snapshot(s, opt, sched); sync(dev); t = time.perf_counter()
    for _ in range(20): _snapshot(s, opt, sched)
    sync(dev)
    return per_step, (time.perf_counter() - t) / 20

def guard_rows(student, teacher, dl, dev, cuda, rounds, epochs):
    "Step time of distill with and without the per-step non-finite check, interleaved calls in this process."
    kw = dict(compile=cuda, amp=cuda, augment=True, gpu_data=True, device=dev, progress=False)
    times = {3: [], None: []}
    for r in range(rounds):
        for b in ((3, None) if r % 2 == 0 else (None, 3)):
            s = copy.deepcopy(student)
            h = distill(s, teacher, dl, None, epochs=epochs, backoffs=b, **kw)
            times[b] += [len(dl.dataset) / rec['img_s'] / len(dl) for rec in h.records[1 if cuda else 0:]]   # CUDA: the first compiles
            del s
            if cuda: torch.cuda.empty_cache()
    print("| per-step non-finite check | fastest epoch: ms/step | median epoch: ms/step | slowest | epochs timed |\n|---|---|---|---|---|")
    med, low = ({b: f(t) for b, t in times.items()} for f in (statistics.median, min))
    for b, label in ((None, 'off (backoffs=None)'), (3, 'on (backoffs=3, the default)')):
        print(f"| {label} | {1e3 * low[b]:.3f} | {1e3 * med[b]:.3f} | {1e3 * max(times[b]):.3f} | {len(times[b])} |", flush=True)
    print(f"\ncost of the check: {100 * (low[3] / low[None] - 1):+.2f} % of the step time (fastest epochs; other load only adds "
          f"time, so the fastest is the least disturbed), {100 * (med[3] / med[None] - 1):+.2f} % (medians)")
    own_step, own_epoch = guard_work(student, dev, cuda)
    share = 100 * (own_step + own_epoch / len(dl)) / low[None]
    print(f"the check's own work, timed alone in a loop: {1e6 * own_step:.2f} us per step ({'flag kernels + found_inf' if cuda else 'l.item()'}), "
          f"{1e3 * own_epoch:.2f} ms per epoch (copy of weights, optimiser and schedule) = {share:.3f} % of the fastest step without it")
    if cuda:   # host syncs per epoch must not grow with the number of steps
        counts = {}
        for b in (3, None):
            for ep_dl in (dl, DataLoader(dl.dataset, batch_size=dl.batch_size // 2, shuffle=True)):
                s = copy.deepcopy(student)
                distill(s, teacher, ep_dl, None, epochs=1, backoffs=b, **kw)           # compiled once here, then counted
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter('always')
                    torch.cuda.set_sync_debug_mode('warn')
                    try: distill(s, teacher, ep_dl, None, epochs=1, backoffs=b, **kw)
                    finally: torch.cuda.set_sync_debug_mode('default')
                counts[(b, len(ep_dl))] = sum('synchronizing' in str(i.message) for i in w)
        print("host synchronisations in one epoch (torch.cuda.set_sync_debug_mode): " + ", ".join(
            f"backoffs={b}, {n} steps: {c}" for (b, n), c in counts.items()))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch', type=int, default=None, help='batch size (default 512 on CUDA, 8 on CPU)')
    p.add_argument('--steps', type=int, default=None, help='steps per epoch (default 40 on CUDA, 3 on CPU)')
    p.add_argument('--epochs', type=int, default=None, help='epochs per variant; the last one is reported (default 2; --guard: 4 on CUDA, 3 on CPU)')
    p.add_argument('--keep', type=float, default=0.10, help='fraction of ReLUs kept in the relufied student')
    p.add_argument('--width', type=int, default=None, help='ResNet18 width (default 64 on CUDA, 8 on CPU)')
    p.add_argument('--compile', action='store_true', help='on CPU, also run the compiled variants (always on CUDA)')
    p.add_argument('--device', default='auto')
    p.add_argument('--guard', action='store_true', help='only the step-time cost of the per-step non-finite check, interleaved')
    p.add_argument('--rounds', type=int, default=None, help='--guard: calls per variant (default 4 on CUDA, 10 on CPU)')
    a = p.parse_args()
    cuda = torch.cuda.is_available() if a.device == 'auto' else a.device.startswith('cuda')
    dev = torch.device('cuda' if cuda else 'cpu')
    batch, steps, width = a.batch or (512 if cuda else 8), a.steps or (40 if cuda else 3), a.width or (64 if cuda else 8)
    if a.guard and not cuda: batch, steps, width = a.batch or 16, a.steps or 8, a.width or 16
    torch.set_float32_matmul_precision('high')                 # fp32 = TF32 tensor cores on GPUs that have them
    torch.manual_seed(0)
    n = batch * steps
    x, y = torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))
    dl = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
    teacher = cifar_resnet18(width=width)
    relu_student = relufy(teacher, x[:2])
    g = torch.Generator().manual_seed(0)
    set_masks(relu_student, {k: (torch.rand(v.shape, generator=g) < a.keep).float() for k, v in get_masks(relu_student).items()})
    if a.guard:
        name = torch.cuda.get_device_name(dev) if cuda else f"CPU, {torch.get_num_threads()} threads"
        print(f"CIFAR ResNet18 (width {width}), relufied student ({a.keep:.0%} kept), KD step, batch {batch}, {steps} steps/epoch, "
              f"{'compiled, bf16' if cuda else 'eager, fp32'}, {name}, torch {torch.__version__}\n")
        return guard_rows(relu_student, teacher, dl, dev, cuda, a.rounds or (4 if cuda else 10), a.epochs or (4 if cuda else 3))
    flops = step_flops(teacher, teacher, x[:2])
    mm = 8192 if cuda else 512
    peak = {False: matmul_peak(torch.float32, dev, mm), True: matmul_peak(torch.bfloat16, dev, mm)}
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"CIFAR ResNet18 (width {width}), KD step, batch {batch}, {steps} steps/epoch, {name}, torch {torch.__version__}")
    print(f"FLOPs per image per KD step: {flops / 1e9:.3g} GFLOP; matmul peak ({mm}^3): fp32/TF32 {peak[False] / 1e12:.3g}, "
          f"bf16 {peak[True] / 1e12:.3g} TFLOP/s")
    print(f"relufied student: {relu_count(relu_student):,} of {relu_total(relu_student):,} ReLUs kept\n")
    print("| student | forward | precision | img/s | achieved TFLOP/s | % of FLOP limit |\n|---|---|---|---|---|---|")
    for kind in ('plain', f'relufied {a.keep:.0%}'):
        for comp in ((False, True) if (cuda or a.compile) else (False,)):
            for bf16 in (False, True):
                student = copy.deepcopy(teacher) if kind == 'plain' else copy.deepcopy(relu_student)
                h = distill(student, teacher, dl, None, epochs=a.epochs or 2, compile=comp, amp=bf16, augment=True, gpu_data=True,
                            device=dev, progress=False)
                img_s = h.last['img_s']
                ach = img_s * flops
                print(f"| {kind} | {'compiled' if comp else 'eager'} | {'bf16' if bf16 else 'fp32'} | {img_s:,.0f} | "
                      f"{ach / 1e12:.3g} | {100 * ach / peak[bf16]:.1f} |", flush=True)
                del student
                if cuda: torch.cuda.empty_cache()

if __name__ == '__main__': main()
