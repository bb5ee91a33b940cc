"""README's "Scaling out" commands, run as they are written there: torchrun over two processes, and two sweep workers sharing one store."""
import os, re, shlex, shutil, subprocess, sys, uuid
from pathlib import Path
import pytest, torch
from relu_explore.frontier import load_results, ResultsStore

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get('RELU_EXPLORE_PG_URL')
README_URL = 'postgresql://relu:relu@DBHOST:5432/relu_explore'

def _section_commands():
    "The lines of the bash blocks in README.md's '## Scaling out' section."
    md = (ROOT / 'README.md').read_text()
    sec = md[md.index('## Scaling out'):]
    sec = sec[:sec.index('\n## ', 3)]
    return [l.strip() for b in re.findall(r'```bash\n(.*?)```', sec, re.S) for l in b.strip().splitlines()]

def _command(prefix):
    lines = [l for l in _section_commands() if l.startswith(prefix)]
    assert len(lines) == 1, f"README's Scaling out section should hold one `{prefix} ...` line, found {lines}"
    return shlex.split(lines[0])

def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    for k in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'): env.pop(k, None)
    return env

def _script(name):
    p = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(p).exists(): pytest.skip(f"the console script {name} is not installed (pip install -e .)")
    return p

def test_readme_torchrun_line_runs_on_two_processes():
    cmd = _command('torchrun')
    assert cmd[1:] == ['--standalone', '--nproc_per_node=2', 'bench/ddp_train.py']
    r = subprocess.run([_script('torchrun')] + cmd[1:], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r'2 process\(es\); teacher valid acc ([\d.]+); student with ([\d,]+) of ([\d,]+) ReLUs: valid acc ([\d.]+)', r.stdout)
    assert m, r.stdout[-2000:]
    assert float(m.group(1)) > 0.5 and 0 < float(m.group(4)) <= 1

def _two_workers(store, cwd):
    "Run the README's relu_explore_sweep line twice at once with `store` for the database URL; (stdout, stdout)."
    cmd = _command('relu_explore_sweep')
    assert cmd[1] == README_URL
    args = [_script('relu_explore_sweep'), str(store)] + cmd[2:]
    procs = [subprocess.Popen(args, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, o in zip(procs, outs): assert p.returncode == 0, o[-3000:]
    return cmd, outs

def _check(df, cmd):
    budgets = cmd[cmd.index('--budgets') + 1].split(',')
    assert len(df) == len(budgets) and df.point_key.is_unique                  # every point stored exactly once
    assert (df.relus == df.budget).all() and df.acc.between(0, 1).all()

def test_readme_sweep_line_two_workers_share_a_sqlite_store(tmp_path):
    cmd, _ = _two_workers(tmp_path / 'store', tmp_path)
    _check(load_results(tmp_path / 'store'), cmd)

@pytest.mark.skipif(not PG_URL, reason='set RELU_EXPLORE_PG_URL=postgresql://user:pw@127.0.0.1/db (CI: .ci/postgres.sh) to test it')
def test_readme_sweep_line_two_workers_share_a_postgresql_store(tmp_path):
    "The README command as written (default study name): the test owns the database's 'relu_explore' study while it runs."
    import optuna, sqlalchemy as sa
    def clean():
        st = ResultsStore(PG_URL).storage
        try: optuna.delete_study(study_name='relu_explore', storage=st)
        except KeyError: pass
        with st.engine.begin() as c: c.execute(sa.text("DELETE FROM relu_explore_claims WHERE study = 'relu_explore'"))
        st.engine.dispose()
    clean()
    try:
        cmd, _ = _two_workers(PG_URL, tmp_path)
        _check(load_results(PG_URL), cmd)
    finally: clean()
