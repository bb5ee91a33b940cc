"The main job: relu_explore_demo end to end, resumable after SIGKILL, clear errors on bad input."
import os, subprocess, sys
from pathlib import Path
import pytest
from relu_explore.frontier import load_results
from conftest import kill_after_rows

ARGS = ['--budgets', '0.5,0.25,0.1,0.05', '--epochs', '1', '--teacher_epochs', '2', '--no_charts']

def _demo(out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    exe = Path(sys.executable).parent / 'relu_explore_demo'           # the console script users run
    return subprocess.Popen([str(exe), '--out', str(out), *ARGS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

def test_demo_sigkill_resume(tmp_path):
    out = tmp_path / 'demo'
    p = _demo(out)
    before = kill_after_rows(p, out, 2)
    assert before is not None and 2 <= len(before) < 4, "kill the demo after its second point, before the last"
    kept = before.set_index('point_key')
    stamps = {f: f.stat().st_mtime_ns for f in (out / 'points').rglob('*.safetensors')}
    p = _demo(out); log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    after = load_results(out).set_index('point_key')
    assert len(after) == 4 and after.index.is_unique                       # completed the rest, no duplicates
    for k in kept.index:                                                   # finished points neither redone nor rewritten
        assert after.loc[k, 'finished'] == kept.loc[k, 'finished'] and after.loc[k, 'acc'] == kept.loc[k, 'acc']
    for f, t in stamps.items():
        if any(f.parent.name.startswith(k.replace('|', '_')) for k in kept.index): assert f.stat().st_mtime_ns == t
    assert 'reusing the teacher' in log
    assert 'stage times (s):' in log
    assert sorted(after.budget) == sorted(after.budget.unique())

def test_demo_refuses_other_config(tmp_path):
    from relu_explore.cli import run_demo
    out = tmp_path / 'o'
    run_demo(out, budgets='0.5', epochs=1, teacher_epochs=1, charts=False, progress=False)
    with pytest.raises(ValueError, match='append=True'):
        run_demo(out, budgets='0.5', epochs=2, teacher_epochs=1, charts=False, progress=False)

def test_demo_bad_input(tmp_path):
    from relu_explore.cli import run_demo
    with pytest.raises(ValueError, match='digits_resnet'):
        run_demo(tmp_path / 'a', budgets='0.5', model='digits_resnett', charts=False, progress=False)
    with pytest.raises(ValueError, match='outside 1..4,096'):
        run_demo(tmp_path / 'b', budgets='5000', epochs=1, teacher_epochs=1, charts=False, progress=False)
    with pytest.raises(ValueError, match='outside 1..4,096'):
        run_demo(tmp_path / 'c', budgets='0', epochs=1, teacher_epochs=1, charts=False, progress=False)


def test_sweep_cli_on_a_local_cifar_copy(tmp_path):
    "relu_explore_sweep --dataset cifar10 reads a local copy (in memory: the GPU path), stores each point, resumes."
    import pickle, numpy as np
    folder = tmp_path / 'data' / 'cifar-10-batches-py'; folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(folder / f, 'wb') as fh:
            pickle.dump({'data': rng.integers(0, 256, (8, 3072), dtype=np.uint8), 'labels': rng.integers(0, 10, 8).tolist()}, fh)
    with open(folder / 'batches.meta', 'wb') as fh: pickle.dump({'label_names': [f'c{i}' for i in range(10)]}, fh)
    exe = Path(sys.executable).parent / 'relu_explore_sweep'
    cmd = [str(exe), str(tmp_path / 'runs'), '--model', 'cifar_resnet18', '--dataset', 'cifar10', '--root', str(tmp_path / 'data'),
           '--teacher_epochs', '0', '--epochs', '0', '--budgets', '0.5,1000']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    df = load_results(tmp_path / 'runs')
    assert sorted(df.relus.tolist()) == [1000, 557_056 // 2] and set(df.dataset) == {'cifar10'}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and len(load_results(tmp_path / 'runs')) == 2
