"""CIFAR-10 ResNet18 teacher on the library's fast path (issue 7: >= 94% test accuracy in <= 5 minutes on one H100).

    python bench/cifar_teacher.py --root data                      # GPU: in-memory CIFAR, bf16, channels_last, compile
    python bench/cifar_teacher.py --root data --limit 512 --epochs 1 --width 8     # CPU smoke test of the same code

The data is `cifar10_data(in_memory=True)`: resident on the GPU, random crop + flip done there. Training is
`relu_explore.distill.train` (SGD, nesterov-free momentum 0.9, one-cycle schedule, weight decay 5e-4). Prints one
table row per run: epochs, wall time, test accuracy, images/s of the last epoch, device. Saves the weights with
safetensors to --out, so `bench/distill.py`-style runs and the method reproductions can start from it.
"""
import argparse, time
import torch
from torch.utils.data import DataLoader, TensorDataset
from relu_explore.data import cifar10_data, Data
from relu_explore.models import cifar_resnet18
from relu_explore.distill import train, evaluate, pick_device

def _limit(d, n):
    "The first n training and test images (for smoke tests), still in memory and still augmented on the device."
    (x, y), (xv, yv) = d.train_ds.tensors, d.valid_ds.tensors
    tl = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=d.train.batch_size, shuffle=True,
                    generator=torch.Generator().manual_seed(0))
    tl.device_augment = True
    return Data(tl, DataLoader(TensorDataset(xv[:n], yv[:n]), batch_size=d.valid.batch_size), d.num_classes, d.input_shape,
                d.name, d.classes, d.mean, d.std)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default='data'); p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--batch', type=int, default=512); p.add_argument('--lr', type=float, default=0.2)
    p.add_argument('--width', type=int, default=64); p.add_argument('--seed', type=int, default=0)
    p.add_argument('--limit', type=int, default=0, help='train/test on the first N images only (smoke test)')
    p.add_argument('--no-compile', action='store_true'); p.add_argument('--out', default='bench/out/cifar_resnet18_teacher.safetensors')
    a = p.parse_args()
    dev = pick_device('auto')
    data = cifar10_data(a.root, batch_size=a.batch, in_memory=True)
    if a.limit: data = _limit(data, a.limit)
    torch.manual_seed(a.seed)
    model = cifar_resnet18(width=a.width) if a.width != 64 else cifar_resnet18()
    if dev.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter()
    h = train(model, data.train, data.valid, epochs=a.epochs, lr=a.lr, sched='onecycle', weight_decay=5e-4, seed=a.seed,
              compile=None if not a.no_compile else False, progress=True)
    if dev.type == 'cuda': torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    acc = evaluate(model, data.valid)['acc']
    from pathlib import Path
    from safetensors.torch import save_file
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, a.out)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'
    print('| model | epochs | batch | wall s | test acc | img/s (last epoch) | device |')
    print('|---|---|---|---|---|---|---|')
    print(f"| cifar_resnet18 (width {a.width}) | {a.epochs} | {a.batch} | {wall:.1f} | {acc:.4f} | {h.last['img_s']:,.0f} | {name} |")

if __name__ == '__main__': main()
