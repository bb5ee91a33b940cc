"""Multi-GPU (or multi-process CPU) retraining with DDP: train a teacher, relufy it, keep a fraction of its ReLUs, distill.

`distill`/`train` notice torchrun's environment and run DDP themselves (NCCL on GPUs, Gloo on CPU); this script is an
ordinary script, the same one runs on one process:

    torchrun --standalone --nproc_per_node=2 bench/ddp_train.py                       # digits, CPU or GPUs
    torchrun --standalone --nproc_per_node=8 bench/ddp_train.py --data cifar10 --root data --model cifar_resnet18 \
             --teacher-epochs 200 --epochs 100 --batch 64                            # CIFAR-10 resident on each GPU
    python bench/ddp_train.py                                                           # one process

`--batch` is per process: N processes at batch B train like one process at N*B. Only process 0 prints and writes
checkpoints (`--ckpt DIR`; start it again with the same arguments to resume).
"""
import argparse, os
import torch
from relu_explore.data import get_data
from relu_explore.models import get_model
from relu_explore.sites import relufy, get_masks, set_masks, relu_count, relu_total
from relu_explore.distill import train, distill, evaluate

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default='digits'); p.add_argument('--model', default='digits_resnet')
    p.add_argument('--epochs', type=int, default=3); p.add_argument('--teacher-epochs', type=int, default=3)
    p.add_argument('--batch', type=int, default=64, help='per process')
    p.add_argument('--keep', type=float, default=0.25, help='fraction of ReLUs kept (random elements)')
    p.add_argument('--loss', default='kd'); p.add_argument('--ckpt', default=None)
    p.add_argument('--root', default='data', help='CIFAR folder (holds cifar-10-batches-py/)')
    a = p.parse_args()
    rank = int(os.environ.get('RANK', 0))
    # CIFAR in memory: distill keeps it on each GPU and augments there (random crop + flip), the fast path
    extra = dict(root=a.root, in_memory=True) if a.data.lower().replace('-', '') in ('cifar10', 'cifar100') else {}
    data = get_data(a.data, batch_size=a.batch, **extra)
    torch.manual_seed(0)
    teacher = get_model(a.model, num_classes=data.num_classes)
    ht = train(teacher, data.train, data.valid, epochs=a.teacher_epochs, progress=rank == 0,
               ckpt_dir=None if a.ckpt is None else os.path.join(a.ckpt, 'teacher'))
    student = relufy(teacher, data.example().to(next(teacher.parameters()).device))
    g = torch.Generator().manual_seed(0)
    set_masks(student, {k: (torch.rand(v.shape, generator=g) < a.keep).float() for k, v in get_masks(student).items()})
    hs = distill(student, teacher, data.train, data.valid, epochs=a.epochs, loss=a.loss, progress=rank == 0,
                 ckpt_dir=None if a.ckpt is None else os.path.join(a.ckpt, 'student'))
    if rank == 0:
        world = int(os.environ.get('WORLD_SIZE', 1))
        print(f"{world} process(es); teacher valid acc {ht.last['valid_acc']:.3f}; student with {relu_count(student):,} of "
              f"{relu_total(student):,} ReLUs: valid acc {hs.last['valid_acc']:.3f}")

if __name__ == '__main__': main()
