"Retraining loop: accuracy recovery on the digits, exact resume after SIGKILL, DDP equivalence, bad inputs, bench on CPU."
import math, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest, torch, torch.nn as nn
import fastcore.test as fct
from torch.utils.data import DataLoader, TensorDataset
from relu_explore.data import digits_data
from relu_explore.models import digits_resnet, tiny_net
from relu_explore.sites import relufy, get_masks, set_masks, relu_count, relu_total
from relu_explore.distill import (distill, train, evaluate, History, GPUBatches, list_losses, load_checkpoint,
                                  stage_output_sites, training_view)

ROOT = Path(__file__).resolve().parents[1]

def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    for k in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'): env.pop(k, None)
    return env

def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

@pytest.fixture(scope='module')
def digits(): return digits_data(batch_size=64)

@pytest.fixture(scope='module')
def teacher(digits):
    torch.manual_seed(0)
    t = digits_resnet()
    train(t, digits.train, digits.valid, epochs=4, progress=False)
    return t

def _quarter_masks(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.rand(v.shape, generator=g) < 0.25).float() for k, v in get_masks(net).items()}

# 1. accuracy recovery and epochs=0
def test_teacher_trains(digits, teacher):
    assert evaluate(teacher, digits.valid, device='cpu')['acc'] > 0.9

def test_distill_recovers_accuracy_at_25_percent(digits, teacher):
    student = relufy(teacher, digits.example())
    set_masks(student, _quarter_masks(student))
    assert abs(relu_count(student) / relu_total(student) - 0.25) < 0.03
    before = evaluate(student, digits.valid, device='cpu')['acc']
    masks = get_masks(student)
    h = distill(student, teacher, digits.train, digits.valid, epochs=3, progress=False)
    after = evaluate(student, digits.valid, device='cpu')['acc']
    # the stated margin: at least 30 points over the no-retraining start, and >= 80% in absolute terms
    assert after >= before + 0.30, (before, after)
    assert after >= 0.80, after
    assert math.isclose(h.last['valid_acc'], after, abs_tol=1e-9)
    assert all(torch.equal(v, masks[k]) for k, v in get_masks(student).items())   # masks untouched
    assert list(h.to_df().epoch) == [1, 2, 3]

def test_epochs_zero_changes_nothing(digits, teacher):
    student = relufy(teacher, digits.example())
    set_masks(student, _quarter_masks(student, 1))
    sd = {k: v.clone() for k, v in student.state_dict().items()}
    tsd = {k: v.clone() for k, v in teacher.state_dict().items()}
    h = distill(student, teacher, digits.train, digits.valid, epochs=0)
    assert isinstance(h, History) and len(h) == 0 and h.to_df().empty
    assert _same_weights(sd, student.state_dict()) and _same_weights(tsd, teacher.state_dict())

def test_senet_loss_runs_on_stage_outputs(digits, teacher):
    student = relufy(teacher, digits.example())
    set_masks(student, _quarter_masks(student))
    assert stage_output_sites(student) == ['layer1.0.relu_1', 'layer2.0.relu_1']
    h = distill(student, teacher, digits.train, digits.valid, epochs=1, loss='senet', progress=False)
    assert h.last['valid_acc'] > 0.5

def test_losses_registered():
    assert {'ce', 'kd', 'snl', 'senet'} <= set(list_losses())

def test_history_plot():
    h = History([dict(epoch=1, train_loss=1., valid_loss=2.), dict(epoch=2, train_loss=.5, valid_loss=1.)])
    d = h.plot().to_dict()
    assert d['mark']['type'] == 'line' and d['encoding']['x']['field'] == 'epoch'

def test_callbacks_get_each_epoch(digits):
    seen = []
    torch.manual_seed(0)
    train(tiny_net(), digits.train, None, epochs=2, progress=False, callbacks=[lambda e, r: seen.append((e, r['train_loss']))])
    assert [e for e, _ in seen] == [1, 2] and all(math.isfinite(l) for _, l in seen)

def test_gpu_batches_path_matches_dataloader_on_cpu(digits):
    "Same data, same seed: the device-resident batches give the same training as the DataLoader they replace (no shuffle)."
    x, y = digits.train.dataset.tensors
    dl = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32)
    res = []
    for gpu_data in (False, True):
        torch.manual_seed(0); m = tiny_net()
        h = train(m, dl, None, epochs=2, progress=False, gpu_data=gpu_data)
        res.append((m.state_dict(), h.to_df().train_loss.tolist()))
    torch.testing.assert_close(res[0][1], res[1][1])
    assert _same_weights(res[0][0], res[1][0])

def test_augment_follows_the_loaders_device_augment_mark(digits):
    "cifar10_data(in_memory=True) marks its train loader; distill(augment=None) then augments as augment=True does."
    x, y = digits.train.dataset.tensors
    def run(augment, mark):
        dl = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=32)
        if mark: dl.device_augment = True
        torch.manual_seed(0); m = tiny_net()
        train(m, dl, None, epochs=1, progress=False, augment=augment)
        return m.state_dict()
    marked = run(None, True)
    assert _same_weights(marked, run(True, False))
    assert not _same_weights(marked, run(None, False))          # unmarked: no augmentation by default

def test_data_over_gpu_batches_reads_like_a_loader(digits):
    from relu_explore.data import Data
    x, y = digits.train.dataset.tensors
    d = Data(GPUBatches(x, y, batch_size=16, device='cpu'), digits.valid, 10, (1, 8, 8), 'digits-resident')
    assert f"train={len(x)}" in repr(d) and len(d.train_ds) == len(x)
    assert torch.equal(d.batch(5, 'train')[0], x[:5]) and d.example(2).shape == (2, 1, 8, 8)

# 2. SIGKILL mid-epoch, resume, same final weights
KILL_SCRIPT = '''
import sys, time, torch
torch.use_deterministic_algorithms(True); torch.set_num_threads(1)
from torch.utils.data import DataLoader, TensorDataset
from relu_explore.models import digits_resnet
from relu_explore.sites import relufy, get_masks, set_masks
from relu_explore.distill import distill

class Slow(TensorDataset):
    def __getitem__(self, i):
        time.sleep(0.003)
        return super().__getitem__(i)

g = torch.Generator().manual_seed(0)
x, y = torch.randn(160, 1, 8, 8, generator=g), torch.randint(0, 10, (160,), generator=g)
torch.manual_seed(0)
teacher = digits_resnet(width=8)
student = relufy(teacher, x[:2])
set_masks(student, {k: (torch.rand(v.shape, generator=g) < 0.5).float() for k, v in get_masks(student).items()})
trn = DataLoader(Slow(x, y), batch_size=16, shuffle=True, num_workers=0)
val = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=32)
h = distill(student, teacher, trn, val, epochs=4, lr=0.05, augment=True, ckpt_dir=sys.argv[1], progress=False,
            callbacks=[lambda e, r: print('EPOCH', e, flush=True)])
torch.save(student.state_dict(), sys.argv[2])
print('DONE', len(h), flush=True)
'''

def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    script = tmp_path / 'run.py'
    script.write_text(KILL_SCRIPT)
    run = lambda ck, out: subprocess.run([sys.executable, str(script), str(tmp_path / ck), str(tmp_path / out)],
                                         capture_output=True, text=True, env=_env(), timeout=600)
    ref = run('ck_ref', 'ref.pt')
    assert ref.returncode == 0, ref.stderr[-2000:]
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path / 'ck'), str(tmp_path / 'out.pt')],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    for line in p.stdout:                       # wait for the end of epoch 2, then kill during epoch 3
        if line.strip() == 'EPOCH 2': break
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (tmp_path / 'out.pt').exists()
    assert load_checkpoint(tmp_path / 'ck')['epoch'] == 2          # the last finished epoch, epoch 3 was cut
    res = run('ck', 'out.pt')
    assert res.returncode == 0, res.stderr[-2000:]
    assert [l for l in res.stdout.split('\n') if l.startswith('EPOCH')] == ['EPOCH 3', 'EPOCH 4']   # continued, not restarted
    assert 'DONE 4' in res.stdout
    a, b = torch.load(tmp_path / 'ref.pt', weights_only=True), torch.load(tmp_path / 'out.pt', weights_only=True)
    assert _same_weights(a, b)
    ha, hb = load_checkpoint(tmp_path / 'ck_ref')['history'].to_df(), load_checkpoint(tmp_path / 'ck')['history'].to_df()
    cols = ['epoch', 'train_loss', 'train_acc', 'valid_loss', 'valid_acc', 'lr']
    assert ha[cols].equals(hb[cols])

def _tiny_ckpt(tmp_path, digits):
    torch.manual_seed(0)
    m = tiny_net()
    train(m, digits.train, None, epochs=1, ckpt_dir=tmp_path / 'ck', progress=False)
    return tmp_path / 'ck'

def test_corrupt_checkpoint_is_refused(tmp_path, digits):
    ck = _tiny_ckpt(tmp_path, digits)
    data = (ck / 'model.safetensors').read_bytes()
    (ck / 'model.safetensors').write_bytes(data[:len(data) // 2])
    fct.test_fail(lambda: train(tiny_net(), digits.train, None, epochs=1, ckpt_dir=ck, progress=False),
                  contains='resume=False')
    fct.test_fail(lambda: train(tiny_net(), digits.train, None, epochs=1, ckpt_dir=ck, progress=False), contains=str(ck))
    train(tiny_net(), digits.train, None, epochs=1, ckpt_dir=ck, progress=False, resume=False)     # the way out works
    assert load_checkpoint(ck)['epoch'] == 1

def test_mismatched_checkpoint_is_refused(tmp_path, digits):
    ck = _tiny_ckpt(tmp_path, digits)
    fct.test_fail(lambda: train(digits_resnet(), digits.train, None, epochs=1, ckpt_dir=ck, progress=False), contains='for a different model')
    fct.test_fail(lambda: train(tiny_net(), digits.train, None, epochs=1, lr=0.5, ckpt_dir=ck, progress=False), contains='lr: checkpoint 0.1, now 0.5')

# 3. DDP, 2 gloo processes on CPU
DDP_SCRIPT = '''
import os, sys, torch, torch.nn as nn
torch.set_num_threads(1)
from torch.utils.data import DataLoader, TensorDataset
from relu_explore.distill import train

class NoBN(nn.Module):   # no BatchNorm: per-process batch statistics would make DDP differ from one big batch
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1, stride=2), nn.Linear(8, 4)
    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).mean((2, 3)))

out, bs, gpu_data = sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1'
g = torch.Generator().manual_seed(0)
x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
torch.manual_seed(0)
model = NoBN()
trn = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=gpu_data)    # DataLoader path: fixed order (see test)
val = DataLoader(TensorDataset(x[:20], y[:20]), batch_size=8)
h = train(model, trn, val, epochs=3, lr=float(sys.argv[4]) if len(sys.argv) > 4 else 0.2, progress=False, gpu_data=gpu_data, device='cpu')
rank = int(os.environ.get('RANK', 0))
torch.save({'sd': model.state_dict(), 'hist': [[r[k] for k in ('train_loss', 'train_acc', 'valid_loss', 'valid_acc')] for r in h],
            'backoff': [r.get('backoff') for r in h]},
           os.path.join(out, f'rank{rank}.pt'))
'''

@pytest.mark.parametrize('gpu_data', ['0', pytest.param('1', marks=pytest.mark.slow)])
def test_ddp_two_gloo_processes_match_one_process_on_the_combined_batch(tmp_path, gpu_data):
    """2 processes at batch 8 = 1 process at batch 16: DDP averages the gradients, every process ends with the same
    weights, and the loss curve is that of the single process. With a DataLoader the order is fixed (shuffle=False):
    DistributedSampler draws another permutation than RandomSampler. GPUBatches shards one permutation seeded by
    (seed, epoch), so there the equivalence holds with shuffling too."""
    script = tmp_path / 'ddp.py'; script.write_text(DDP_SCRIPT)
    (tmp_path / 'ddp').mkdir(); (tmp_path / 'one').mkdir()
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(script),
                        str(tmp_path / 'ddp'), '8', gpu_data], capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r1 = subprocess.run([sys.executable, str(script), str(tmp_path / 'one'), '16', gpu_data], capture_output=True, text=True, env=_env(), timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r0, rk1, one = (torch.load(tmp_path / d / f, weights_only=True) for d, f in (('ddp', 'rank0.pt'), ('ddp', 'rank1.pt'), ('one', 'rank0.pt')))
    assert _same_weights(r0['sd'], rk1['sd'])                               # gradients were averaged: ranks agree exactly
    assert not _same_weights(r0['sd'], {k: v * 0 for k, v in r0['sd'].items()})
    for k in one['sd']: torch.testing.assert_close(r0['sd'][k], one['sd'][k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(r0['hist']), torch.tensor(one['hist']), rtol=1e-4, atol=1e-5)
    assert r0['hist'] == rk1['hist']

# 5. bad inputs
def test_bad_inputs(digits, teacher):
    student = relufy(teacher, digits.example())
    fct.test_fail(lambda: distill(student, teacher, digits.train, digits.valid, epochs=-2), contains='whole number >= 0')
    fct.test_fail(lambda: distill(student, tiny_net(num_classes=7), digits.train, digits.valid, epochs=1, progress=False),
                  contains='Teacher output shape (2, 7) and student output shape (2, 10) differ')
    x, y = digits.train.dataset.tensors
    fct.test_fail(lambda: train(tiny_net(num_classes=5), DataLoader(TensorDataset(x, y), batch_size=64), None, epochs=1, progress=False),
                  contains='num_classes=10')
    fct.test_fail(lambda: train(tiny_net(), DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4), None, epochs=1), contains='yields no batches')
    fct.test_fail(lambda: distill(student, teacher, digits.train, None, epochs=1, T=2, lambda_=0.5), contains="has no option ['lambda_']")
    if not torch.cuda.is_available():
        fct.test_fail(lambda: train(tiny_net(), digits.train, None, epochs=1, device='cuda'), contains="device='cpu'")

# 4. the benchmark runs (tiny, CPU)
@pytest.mark.slow
def test_bench_runs_on_cpu():
    r = subprocess.run([sys.executable, str(ROOT / 'bench' / 'distill.py'), '--steps', '2'], capture_output=True, text=True,
                       env=_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [l for l in r.stdout.split('\n') if l.startswith('| ') and 'img/s' not in l and '---' not in l]
    assert len(rows) == 4, r.stdout                  # plain/relufied x fp32/bf16, eager (compiled ones need --compile on CPU)
    assert all(float(l.split('|')[4].replace(',', '')) > 0 for l in rows), r.stdout

@pytest.mark.slow
def test_compiled_distill_on_cpu_trains(digits, teacher):
    "compile=True goes through torch.compile (inductor on CPU) and still trains."
    student = relufy(teacher, digits.example())
    set_masks(student, _quarter_masks(student))
    before = evaluate(student, digits.valid, device='cpu')['acc']
    h = distill(student, teacher, digits.train, digits.valid, epochs=1, compile=True, progress=False, loss='senet')
    assert h.last['valid_acc'] > before

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_fast_path(digits, teacher):
    student = relufy(teacher, digits.example())
    set_masks(student, _quarter_masks(student))
    h = distill(student, teacher, digits.train, digits.valid, epochs=2, progress=False)
    assert h.last['valid_acc'] > 0.8
    assert next(student.parameters()).is_cuda


def test_recalibrate_bn_recovers_no_retraining_accuracy(digits, teacher):
    "Masks change every later activation; stale BatchNorm statistics, not the masks alone, cost most of the accuracy."
    from relu_explore.distill import recalibrate_bn
    from relu_explore.budget import allocate
    from relu_explore.sensitivity import score
    net = relufy(teacher, digits.example())
    set_masks(net, allocate(score(net, digits.batch(64, 'train'), method='random'), keep_frac=0.1))
    stale = evaluate(net, digits.valid, device='cpu')['acc']
    w = {k: v.clone() for k, v in net.state_dict().items() if 'running' not in k and 'num_batches' not in k}
    fresh = evaluate(recalibrate_bn(net, digits.train, batches=8, device='cpu'), digits.valid, device='cpu')['acc']
    assert fresh >= stale + 0.2, (stale, fresh)          # with a 6-epoch teacher: 0.11 -> 0.57
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in w.items())

def test_augment_refuses_a_dataset_that_crops_already():
    "augment=True over a dataset that random-crops/flips in its transforms (here under a Subset) would crop twice: refused, with the fix."
    from torchvision import transforms as T
    from torch.utils.data import Subset
    class Imgs(torch.utils.data.Dataset):
        transform = T.Compose([T.RandomCrop(8, padding=4), T.RandomHorizontalFlip()])
        def __len__(self): return 16
        def __getitem__(self, i): return self.transform(torch.randn(1, 8, 8)), i % 4
    dl = DataLoader(Subset(Imgs(), range(8)), batch_size=4)
    with pytest.raises(ValueError, match=r"augment=None or augment=False.*in_memory=True"):
        train(digits_resnet(num_classes=4, width=4), dl, None, epochs=1, augment=True, progress=False)
    assert len(train(digits_resnet(num_classes=4, width=4), dl, None, epochs=1, progress=False)) == 1   # augment=None: its own transforms only


# 6. non-finite losses: caught at their step, the epoch restored at lr x0.1; healthy runs unchanged
import warnings
from relu_explore.distill import StepHook

def _plain_net():
    "A small conv net without normalisation layers (16x16 digits)."
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(),
                         nn.Linear(128, 10))

@pytest.fixture(scope='module')
def digits16(): return digits_data(batch_size=64, upsample=16)

@pytest.fixture(scope='module')
def loud_teacher(digits16):
    "A BN-free teacher trained to 97 %, its last layer scaled x4: logits up to about 100, as long CE training drifts to."
    torch.manual_seed(0)
    t = _plain_net()
    train(t, digits16.train, digits16.valid, epochs=6, lr=0.05, progress=False, device='cpu')
    with torch.no_grad(): t[-1].weight.mul_(4); t[-1].bias.mul_(4)
    return t

def _student(teacher, data, keep=0.3):
    s = relufy(teacher, data.example())
    g = torch.Generator().manual_seed(0)
    set_masks(s, {k: (torch.rand(v.shape, generator=g) < keep).float() for k, v in get_masks(s).items()})
    return s

def test_default_distill_survives_a_bn_free_net_with_a_loud_teacher(digits16, loud_teacher):
    x, _ = digits16.batch(256)
    with torch.no_grad(): assert loud_teacher(x).abs().max() > 60
    s = _student(loud_teacher, digits16)
    before = evaluate(s, digits16.valid, device='cpu')['acc']
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        h = distill(s, loud_teacher, digits16.train, digits16.valid, epochs=4, progress=False, device='cpu')   # defaults: SGD 0.01, KD T=4
    df = h.to_df()
    assert df.train_loss.map(math.isfinite).all() and df.valid_loss.map(math.isfinite).all()
    assert h.last['valid_acc'] > before + 0.02, (before, df.valid_acc.tolist())    # 0.924 -> 0.969 here
    assert 'non-finite loss at step' in h[0]['backoff'] and 'lr x0.1' in h[0]['backoff']
    assert any('restored the start of the epoch' in str(i.message) for i in w)
    # the run without the per-step check (the loop as it was) stops with the error that names the fix
    with pytest.raises(FloatingPointError, match='Lower lr'):
        distill(_student(loud_teacher, digits16), loud_teacher, digits16.train, digits16.valid, epochs=4, progress=False,
                device='cpu', backoffs=None)

def test_default_train_of_the_bn_free_net_finishes_and_learns(digits16):
    torch.manual_seed(1)
    h = train(_plain_net(), digits16.train, digits16.valid, epochs=4, progress=False, device='cpu')   # defaults: SGD 0.1, cosine
    assert h.to_df().train_loss.map(math.isfinite).all() and h.last['valid_acc'] > 0.5, h.to_df()

def test_a_healthy_run_is_bit_identical_with_and_without_the_check(digits):
    runs = []
    for b in (3, None):
        torch.manual_seed(0)
        m = tiny_net()
        h = train(m, digits.train, digits.valid, epochs=2, progress=False, device='cpu', backoffs=b)
        runs.append((m.state_dict(), h.to_df().drop(columns=['img_s', 'seconds'])))
    assert _same_weights(runs[0][0], runs[1][0])
    assert runs[0][1].equals(runs[1][1]) and 'backoff' not in runs[0][1]

def test_a_run_that_still_diverges_names_the_fix(digits16):
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step \d+ of 22 after 1 lr back-off\(s\).*Lower lr \(now 1e\+03\)"):
        train(_plain_net(), digits16.train, None, epochs=1, lr=1e4, progress=False, device='cpu', backoffs=1)
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step \d+ of 22\. Lower lr \(now 1e\+04\)"):
        train(_plain_net(), digits16.train, None, epochs=1, lr=1e4, progress=False, device='cpu', backoffs=0)
    g = torch.Generator().manual_seed(0)                 # weights blown up (finite loss) by the end of an epoch: no lower lr helps
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1, stride=2), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with pytest.raises(FloatingPointError, match=r"at step 1 of 4: the loss is not finite before any update of the epoch"):
        train(m, DataLoader(TensorDataset(x, y), batch_size=16), None, epochs=3, lr=1e3, progress=False, device='cpu')
    class Nop(StepHook): pass
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match='with hooks a run stops at the first non-finite loss'):
        train(_plain_net(), digits16.train, None, epochs=1, lr=1e4, progress=False, device='cpu', hooks=[Nop()])

def test_ddp_processes_back_off_together(tmp_path):
    "Under torchrun a non-finite loss restores every process: they end with the same weights and the same note."
    script = tmp_path / 'ddp.py'; script.write_text(DDP_SCRIPT); (tmp_path / 'ddp').mkdir()
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(script),
                        str(tmp_path / 'ddp'), '8', '0', '3000'], capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / 'ddp' / f'rank{i}.pt', weights_only=True) for i in (0, 1))
    assert _same_weights(r0['sd'], r1['sd']) and all(torch.isfinite(v).all() for v in r0['sd'].values())
    assert r0['backoff'] == r1['backoff'] and any('non-finite loss at step' in (b or '') for b in r0['backoff']), r0['backoff']

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_check_is_on_the_device_and_changes_nothing_healthy(digits, digits16, loud_teacher):
    "On CUDA the fused step skips a flagged update (found_inf); a healthy run is bit-identical to one without the check."
    runs, flags = [], (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False    # two runs may differ otherwise
    try:
        for b in (3, None):
            torch.manual_seed(0)
            m = tiny_net()
            train(m, digits.train, None, epochs=2, progress=False, backoffs=b, compile=False)
            runs.append({k: v.cpu() for k, v in m.state_dict().items()})
    finally: torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    assert _same_weights(*runs)
    s = _student(loud_teacher, digits16)
    before = evaluate(s, digits16.valid)['acc']
    h = distill(s, loud_teacher, digits16.train, digits16.valid, epochs=4, progress=False)
    assert h.to_df().train_loss.map(math.isfinite).all() and h.last['valid_acc'] > before

@pytest.mark.slow
def test_bench_guard_rows_on_cpu():
    "bench/distill.py --guard: the check on and off side by side in one process, its cost and its own work."
    r = subprocess.run([sys.executable, str(ROOT / 'bench' / 'distill.py'), '--guard', '--rounds', '2', '--epochs', '2', '--steps', '2',
                        '--batch', '4', '--width', '8'], capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [l for l in r.stdout.split('\n') if l.startswith('| o')]
    assert [l.split('|')[1].strip() for l in rows] == ['off (backoffs=None)', 'on (backoffs=3, the default)'], r.stdout
    assert all(float(l.split('|')[2]) > 0 and int(l.split('|')[5]) == 4 for l in rows), r.stdout
    assert 'cost of the check:' in r.stdout and "the check's own work" in r.stdout
