"Sweeps on the digits model: SIGKILL at random moments, resume, same final set as an uninterrupted run."
import os, random, signal, subprocess, sys, time, textwrap
from pathlib import Path
import pytest, torch
from relu_explore.frontier import load_results

SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from safetensors.torch import load_file
    from relu_explore.data import digits_data
    from relu_explore.models import digits_resnet
    from relu_explore.sweeps import sweep
    data = digits_data(batch_size=64)
    teacher = digits_resnet(width=8); teacher.load_state_dict(load_file(sys.argv[2]))
    sweep(teacher, data, budgets=[0.5, 0.3, 0.2, 0.1, 0.05, 0.02], store=sys.argv[1], epochs=1, seed=0,
          model_name='digits_resnet', dataset='digits', progress=False)
''')

def _teacher(path):
    from relu_explore.data import digits_data
    from relu_explore.models import digits_resnet
    from relu_explore.distill import train
    from safetensors.torch import save_file
    torch.manual_seed(0)
    data = digits_data(batch_size=64); m = digits_resnet(width=8)
    train(m, data.train, data.valid, epochs=2, lr=0.05, progress=False)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))

def _run(script, out, teacher):
    return subprocess.Popen([sys.executable, str(script), str(out), str(teacher)], env=dict(os.environ, OMP_NUM_THREADS='1'),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

@pytest.mark.slow
def test_sweep_survives_ten_random_kills(tmp_path):
    script, teacher = tmp_path / 'run.py', tmp_path / 'teacher.safetensors'
    script.write_text(SCRIPT); _teacher(teacher)
    ref = _run(script, tmp_path / 'ref', teacher); assert ref.wait(600) == 0, ref.stderr.read()[-2000:]
    rng, out, seen = random.Random(0), tmp_path / 'killed', []
    for i in range(10):
        p = _run(script, out, teacher)
        time.sleep(rng.uniform(2.0, 8.0))                          # imports take a few seconds: kills land all over a run
        p.send_signal(signal.SIGKILL); p.wait()
        try: seen.append(len(load_results(out)))
        except (FileNotFoundError, KeyError): seen.append(0)   # killed before the store or its study existed
        assert seen == sorted(seen), f"a finished point was lost: counts after each kill {seen}"
    p = _run(script, out, teacher); assert p.wait(600) == 0, p.stderr.read()[-2000:]
    a, b = load_results(tmp_path / 'ref').set_index('point_key'), load_results(out).set_index('point_key')
    assert b.index.is_unique and sorted(a.index) == sorted(b.index)          # nothing lost, nothing duplicated
    for k in a.index:                                                        # same seeds => same masks and accuracies
        assert a.loc[k, 'relus'] == b.loc[k, 'relus'] and a.loc[k, 'acc'] == b.loc[k, 'acc'], k
        from safetensors.torch import load_file
        ma, mb = load_file(a.loc[k, 'artifact_masks']), load_file(b.loc[k, 'artifact_masks'])
        assert all(torch.equal(ma[s], mb[s]) for s in ma)
    print('finished points after each kill:', seen)

def test_warm_start(tmp_path):
    "A warm-started point starts from the finished point at the next larger budget, and its row says so."
    from relu_explore.data import digits_data
    from relu_explore.models import digits_resnet
    from relu_explore.distill import train
    from relu_explore.sweeps import sweep
    torch.manual_seed(0)
    data = digits_data(batch_size=64); m = digits_resnet(width=8)
    train(m, data.train, data.valid, epochs=1, lr=0.05, progress=False)
    df = sweep(m, data, budgets=[0.5, 0.1], store=tmp_path, epochs=1, warm_start=True, progress=False).set_index('budget')
    big, small = df.index.max(), df.index.min()
    assert df.loc[big, 'warm_start_from'] == 'teacher'
    assert df.loc[small, 'warm_start_from'] == df.loc[big, 'point_key']

def test_sweep_takes_a_loader_pair(tmp_path):
    "sweep(model, (train_loader, valid_loader), ...) goes through as_data: rows stored, dataset label from the data; dict batches refused."
    import fastcore.test as fct
    from torch.utils.data import DataLoader, TensorDataset
    from relu_explore.data import digits_data
    from relu_explore.models import tiny_net
    from relu_explore.sweeps import sweep
    d = digits_data(batch_size=64)
    (xt, yt), (xv, yv) = d.train_ds.tensors, d.valid_ds.tensors
    tl, vl = DataLoader(TensorDataset(xt[:256], yt[:256]), batch_size=64, shuffle=True), DataLoader(TensorDataset(xv[:128], yv[:128]), batch_size=64)
    torch.manual_seed(0)
    m = tiny_net()
    df = sweep(m, (tl, vl), budgets=[0.5, 0.1], store=tmp_path / 'pair', epochs=1, progress=False)
    assert sorted(df.relus.tolist()) == sorted(df.budget.tolist()) and len(df) == 2 and set(df.dataset) == {'tensors'}
    assert len(load_results(tmp_path / 'pair')) == 2
    dicts = DataLoader([{'image': xt[i], 'label': int(yt[i])} for i in range(8)], batch_size=4)
    fct.test_fail(lambda: sweep(m, (dicts, dicts), budgets=[0.5], store=tmp_path / 'dicts', progress=False), contains='yields dicts')
