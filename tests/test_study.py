"The methods study: bench/methods_cifar_cpu.py (= relu_explore_sweep --recipe) on a tiny CIFAR copy, killed and resumed."
import os, subprocess, sys
from pathlib import Path
import pytest
from relu_explore.frontier import load_results
from conftest import kill_after_rows
from test_data import _write_fake_cifar10

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--width', '4', '--n_train', '120', '--valid_split', '0.2', '--teacher_epochs', '1', '--recipe', 'random,taylor,random_long',
        '--preset', 'digits', '--seeds', '0', '--budgets', '0.02', '--epochs', '3', '--threads', '1']

def _bench(root, out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    return subprocess.Popen([sys.executable, str(ROOT / 'bench' / 'methods_cifar_cpu.py'), '--root', str(root), '--out', str(out),
                             *TINY, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)

@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp('c10')
    _write_fake_cifar10(root, n=40)
    return root

def test_study_bench_sigkill_resume(cifar, tmp_path):
    out = tmp_path / 'study'
    p = _bench(cifar, out)
    before = kill_after_rows(p, out, 2)          # the teacher's row and a first point
    assert before is not None and 2 <= len(before) < 4, "kill after the first point, before the last"
    kept = before.set_index('point_key')
    masks = {f: f.stat().st_mtime_ns for f in (out / 'points').rglob('masks.safetensors')}
    p = _bench(cifar, out); log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    after = load_results(out).set_index('point_key')
    assert len(after) == 4 and after.index.is_unique                       # the rest done, nothing twice
    assert sorted(after.method) == ['dense', 'random', 'random_long', 'taylor']
    for k in kept.index:                                                   # finished points neither redone nor rewritten
        assert after.loc[k, 'finished'] == kept.loc[k, 'finished'] and after.loc[k, 'acc'] == kept.loc[k, 'acc']
    for f, t in masks.items(): assert f.stat().st_mtime_ns == t
    pts = after[after.method != 'dense']
    long = pts[pts.method == 'random_long'].iloc[0]
    assert long.train_epochs == pts[pts.method != 'random_long'].train_epochs.max()
    assert after.test_acc.between(0, 1).all() and pts.relus.eq(pts.budget).all()
    # the table of this configuration, from the store alone
    p = _bench(cifar, out, '--table'); log, _ = p.communicate(timeout=300)
    assert p.returncode == 0, log[-3000:]
    table = log.split('gain over')[0]
    assert table.count('| random_long |') == 1 and '| taylor |' in table and 'teacher (' in table
    assert 'gain over `random_long`' in log and 'n/a (one seed)' in log            # one seed: no verdict

def test_study_cli_errors(cifar, tmp_path):
    from relu_explore.cli import sweep_cli
    with pytest.raises(ValueError, match='held-out --valid_split'):
        sweep_cli(str(tmp_path / 'a'), dataset='cifar10', root=str(cifar), recipe='random', test=True)
    with pytest.raises(ValueError, match='unknown recipe'):
        sweep_cli(str(tmp_path / 'b'), dataset='cifar10', root=str(cifar), valid_split='0.2', recipe='nope', width=4, model='cifar_resnet18',
                  teacher_epochs=1, budgets='0.5')
