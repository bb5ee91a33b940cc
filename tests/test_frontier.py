"Results store: persistence, resume after SIGKILL, several workers (SQLite, PostgreSQL), refusals, Pareto, published points."
import os, signal, sqlite3, subprocess, sys, textwrap, time, uuid
from pathlib import Path
import numpy as np, pandas as pd, pytest
import fastcore.test as fct
from relu_explore.frontier import (ResultsStore, load_results, sweep_points, pareto_front, on_front,
                                   published_frontiers, config_hash)

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(model='tiny_net', dataset='digits', method='fake', strategy='global', epochs=1, seed=0)

def fake_values(p):
    "Deterministic figures of a fake point."
    return dict(relus=p['budget'], acc=round(0.5 + 0.4 * (1 - np.exp(-p['budget'] / 3000)), 6))

def make_points(n):
    return [dict(point_key=f"fake|{1000 * (i + 1)}|seed0", method='fake', budget=1000 * (i + 1), seed=0) for i in range(n)]

# A worker process: sweeps n points, appending each run_point call to a log (O_APPEND lines).
WORKER = textwrap.dedent('''
    import os, sys, time
    import numpy as np
    from relu_explore.frontier import ResultsStore, sweep_points
    out, log, n, delay, study = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    def run_point(p):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, (p['point_key'] + '\\n').encode()); os.close(fd)
        time.sleep(delay)
        return dict(relus=p['budget'], acc=round(0.5 + 0.4 * (1 - np.exp(-p['budget'] / 3000)), 6)), {}
    points = [dict(point_key=f"fake|{1000 * (i + 1)}|seed0", method='fake', budget=1000 * (i + 1), seed=0) for i in range(n)]
    cfg = dict(model='tiny_net', dataset='digits', method='fake', strategy='global', epochs=1, seed=0)
    store = ResultsStore(out, config=cfg, study_name=study, heartbeat=0.2, grace=3.0)
    sweep_points(points, run_point, store, progress=False)
''')

def start_worker(tmp_path, out, log, n, delay, study='relu_explore'):
    script = tmp_path / 'worker.py'
    if not script.exists(): script.write_text(WORKER)
    env = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    return subprocess.Popen([sys.executable, str(script), str(out), str(log), str(n), str(delay), study],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

def finish(proc, timeout=120):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.decode()[-3000:]

def log_lines(p): return Path(p).read_text().split() if Path(p).exists() else []

def expected_rows(n):
    return {(p['point_key'], p['budget'], fake_values(p)['acc']) for p in make_points(n)}

def rows(df): return set(zip(df.point_key, df.relus, df.acc.round(6)))


def test_each_point_on_disk_when_it_finishes(tmp_path):
    out, seen = tmp_path / 'run', []
    def run_point(p):
        prev = load_results(out) if (out / 'results.db').exists() else pd.DataFrame(columns=['point_key'])
        assert len(prev) == len(seen)  # everything finished so far is already on disk
        return fake_values(p), {}
    def on_point(df):
        disk = load_results(out)  # a separate reader...
        other = ResultsStore(out, config=CFG).to_df()  # ...and a second store on the same file
        assert list(disk.point_key) == list(df.point_key) == list(other.point_key)
        seen.append(df.point_key.iloc[-1])
    pts = make_points(4)
    df = sweep_points(pts, run_point, ResultsStore(out, config=CFG), progress=False, on_point=on_point)
    assert seen == [p['point_key'] for p in pts]
    assert rows(df) == expected_rows(4)
    assert set(df.config_hash) == {config_hash(CFG)}
    assert df.model.tolist() == ['tiny_net'] * 4 and df.budget.tolist() == [1000, 2000, 3000, 4000]
    assert df.finished.is_monotonic_increasing and (df.finished >= df.started).all()


def test_resume_after_sigkill(tmp_path):
    n, out = 8, tmp_path / 'run'
    proc = start_worker(tmp_path, out, tmp_path / 'log_a', n, 0.3)
    t0 = time.time()
    while True:
        assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
        assert time.time() - t0 < 90, 'the first worker stored nothing in 90 s'
        if (out / 'results.db').exists():
            try: stored = set(load_results(out).point_key)
            except Exception: stored = set()  # store still being created
            if len(stored) >= 2: break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    done_at_kill = set(load_results(out).point_key)  # nothing can be added after the kill
    assert 2 <= len(done_at_kill) < n
    finish(start_worker(tmp_path, out, tmp_path / 'log_b', n, 0.0))
    after = log_lines(tmp_path / 'log_b')
    assert not done_at_kill & set(after)  # finished points were not recomputed
    assert len(after) == len(set(after))
    assert set(log_lines(tmp_path / 'log_a')) | set(after) == {p['point_key'] for p in make_points(n)}
    df = load_results(out)
    assert len(df) == n and df.point_key.is_unique  # nothing lost, nothing duplicated
    # the same set as an uninterrupted run
    ref = sweep_points(make_points(n), lambda p: (fake_values(p), {}), ResultsStore(tmp_path / 'ref', config=CFG), progress=False)
    assert rows(df) == rows(ref) == expected_rows(n)


def _two_workers(tmp_path, out, study='relu_explore', n=10):
    procs = [start_worker(tmp_path, out, tmp_path / 'log', n, 0.1, study) for _ in range(2)]
    for p in procs: finish(p)
    calls = log_lines(tmp_path / 'log')
    assert sorted(calls) == sorted(p['point_key'] for p in make_points(n))  # each point run exactly once
    return calls


def test_two_workers_sqlite(tmp_path):
    out = tmp_path / 'shared'
    _two_workers(tmp_path, out)
    df = load_results(out)
    assert len(df) == 10 and df.point_key.is_unique and rows(df) == expected_rows(10)
    assert df.worker.nunique() == 2  # both workers did some of the work
    con = sqlite3.connect(f"file:{out / 'results.db'}?mode=ro", uri=True)
    assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 10  # one trial per point
    assert set(r[0] for r in con.execute("SELECT status FROM relu_explore_claims")) == {'done'}
    con.close()


PG_URL = os.environ.get('RELU_EXPLORE_PG_URL')

@pytest.mark.skipif(not PG_URL, reason='set RELU_EXPLORE_PG_URL=postgresql://user:pw@127.0.0.1/db to test a shared PostgreSQL store')
def test_two_workers_postgresql(tmp_path):
    import optuna, sqlalchemy as sa
    study = f'test_{uuid.uuid4().hex[:8]}'
    try:
        _two_workers(tmp_path, PG_URL, study)
        df = load_results(PG_URL, study_name=study)
        assert len(df) == 10 and df.point_key.is_unique and rows(df) == expected_rows(10)
        assert len(ResultsStore(PG_URL, study_name=study).study.trials) == 10
    finally:
        st = ResultsStore(PG_URL, study_name=study).storage
        optuna.delete_study(study_name=study, storage=st)
        with st.engine.begin() as c: c.execute(sa.text("DELETE FROM relu_explore_claims WHERE study = :s"), dict(s=study))
        st.engine.dispose()


def test_foreign_files_refused_untouched(tmp_path):
    junk = tmp_path / 'results.db'
    junk.write_bytes(os.urandom(4096))
    before = junk.read_bytes()
    fct.test_fail(lambda: ResultsStore(tmp_path), contains='not an SQLite database')
    fct.test_fail(lambda: ResultsStore(junk), contains='left untouched')
    fct.test_fail(lambda: load_results(tmp_path), contains='not an SQLite database')
    assert junk.read_bytes() == before
    other = tmp_path / 'app.db'
    con = sqlite3.connect(other); con.execute('CREATE TABLE users (name TEXT)'); con.execute("INSERT INTO users VALUES ('x')")
    con.commit(); con.close()
    before = other.read_bytes()
    fct.test_fail(lambda: ResultsStore(other, config=CFG), contains="not a results store (no Optuna")
    fct.test_fail(lambda: ResultsStore(f'sqlite:///{other}'), contains='not a results store')
    fct.test_fail(lambda: load_results(other), contains='not a results store')
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['app.db', 'results.db']  # no journal or new file left


def test_missing_store_not_created(tmp_path):
    fct.test_fail(lambda: load_results(tmp_path / 'nope'), contains='no results store')
    fct.test_fail(lambda: load_results(tmp_path / 'nope.db'), contains='run a sweep')
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError): load_results(tmp_path / 'nope')


def test_config_mismatch_and_append(tmp_path):
    s = ResultsStore(tmp_path, config=CFG)
    s.record('fake|1000|seed0', dict(relus=1000, acc=0.6))
    new = {**CFG, 'epochs': 5, 'strategy': 'senet'}
    fct.test_fail(lambda: ResultsStore(tmp_path, config=new), contains="epochs: stored 1, given 5; strategy: stored 'global', given 'senet'")
    fct.test_fail(lambda: ResultsStore(tmp_path, config=new), contains='append=True')
    a = ResultsStore(tmp_path, config=new, append=True)
    a.record('fake|2000|seed0', dict(relus=2000, acc=0.7))
    df = load_results(tmp_path)
    assert df.config_hash.tolist() == [config_hash(CFG), config_hash(new)]
    assert df.model.tolist() == ['tiny_net'] * 2  # standard columns filled from the config
    assert ResultsStore(tmp_path).config == CFG  # the store keeps the configuration that made it
    assert set(a.study.user_attrs['configs']) == {config_hash(CFG), config_hash(new)}


def test_claims_stale_failed_and_idempotent_record(tmp_path):
    w1 = ResultsStore(tmp_path, heartbeat=0.05, grace=0.3)
    w2 = ResultsStore(tmp_path, heartbeat=0.05, grace=0.3)
    c1 = w1.claim('k')
    assert c1 is not None and w2.claim('k') is None  # fresh heartbeat: another worker has it
    time.sleep(0.4)
    c2 = w2.claim('k')  # stale: taken over
    assert c2.attempt == 2 and w1.claim('k') is None
    with pytest.raises(RuntimeError):
        with w2.running('j') as cl: raise RuntimeError('boom')
    with w1.running('j') as cl: assert cl.attempt == 2  # a failed point is re-run
    assert w2.record('k', dict(relus=5, acc=0.5)) is True
    assert w1.record('k', dict(relus=5, acc=0.9)) is False  # already complete: no duplicate
    assert len(w1.study.trials) == 1 and load_results(tmp_path).acc.tolist() == [0.5]
    assert w1.claim('k') is None


def test_heartbeat_keeps_long_point(tmp_path):
    a = ResultsStore(tmp_path, heartbeat=0.05, grace=0.3)
    with a.running('long') as cl:
        time.sleep(0.8)  # well past grace: only the heartbeat thread keeps the claim alive
        assert ResultsStore(tmp_path, heartbeat=0.05, grace=0.3).claim('long') is None
        assert not cl.lost
    assert not [t for t in __import__('threading').enumerate() if t.name.startswith('relu_explore heartbeat')]


def test_pareto_known_answer():
    df = pd.DataFrame(dict(
        name =['p', 'q', 'r', 's', 't', 'u', 'v', 'w'],
        relus=[5000, 1000, 1000, 3000, 3000, 2000, 6000, 4000],
        acc  =[0.90, 0.50, 0.50, 0.85, 0.80, 0.70, 0.90, 0.85]))
    # q/r identical (first kept); t: same x as s, lower y; v: same y as p, more x; w: same y as s, more x
    front = pareto_front(df)
    assert front.name.tolist() == ['q', 'u', 's', 'p']
    assert front.relus.is_monotonic_increasing and front.acc.is_monotonic_increasing
    assert on_front(df).tolist() == [True, True, False, True, False, True, False, False]
    assert pareto_front(df.sample(frac=1, random_state=0)).name.tolist() in (['q', 'u', 's', 'p'], ['r', 'u', 's', 'p'])
    # brute force agrees on random tables
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = pd.DataFrame(dict(relus=rng.integers(0, 6, 30), acc=rng.integers(0, 6, 30) / 10))
        dom = [any((d.relus <= x) & (d.acc >= y) & ((d.relus < x) | (d.acc > y))) for x, y in zip(d.relus, d.acc)]
        got = set(zip(pareto_front(d).relus, pareto_front(d).acc))
        assert got == set((x, y) for (x, y), dm in zip(zip(d.relus, d.acc), dom) if not dm)
        assert len(pareto_front(d)) == len(got)


def test_published_snl_cifar10_resnet18():
    df = published_frontiers('CIFAR-10', model='ResNet18', method='SNL')
    named = df[df.model == 'ResNet18']
    assert len(named) == 10 and set(df.method) == {'SNL'} and set(df.dataset) == {'CIFAR-10'}
    assert named.relus.tolist() == (named.relus_k * 1000).round().astype(int).tolist()
    assert named.iloc[0][['relus', 'acc']].tolist() == [12900, pytest.approx(0.8823)]
    assert named.source.str.contains('SNL').all() and named.paper.str.contains('2202.02340').all()
    assert len(published_frontiers('cifar10', 'resnet18', 'snl')) == len(df)
    fct.test_fail(lambda: published_frontiers(method='SENet2'), contains='known values')


def test_published_selection_and_caveats():
    "Points whose code keeps the best test epoch are marked; points of weaker standing say so in method and source."
    from relu_explore.frontier import SELECTIONS
    pub = published_frontiers()
    assert pub.selection.isin(SELECTIONS).all() and pub.columns[-2:].tolist() == ['relus', 'acc']
    by = pub.groupby('method').selection.agg(set)
    for m in ['SNL', 'SNL (third-party rerun)', 'AutoReP', 'AutoReP (development log)', 'Sphynx']:
        assert by[m] == {'test-set best'}, m
    for m in ['DeepReDuce', 'baseline', 'CryptoNAS', 'SNIP', 'Knapsack (draft)']:
        assert by[m] == {'unknown'}, m
    rerun = published_frontiers('CIFAR-100', 'resnet18', 'SNL (third-party rerun)')
    assert len(rerun) == 10 and rerun.relus.tolist()[:2] == [5859, 6896] and (rerun.relus < 491_520).all()
    assert rerun.source.str.startswith('third-party rerun of the official code').all()
    ks = published_frontiers(method='Knapsack (draft)')
    assert ks.relus.tolist() == [16710, 33420, 50140, 66850, 83560, 100270]      # 3..18% of 557,056
    assert ks.source.str.startswith('draft, not peer reviewed').all()
    dev = published_frontiers('CIFAR-10', method='AutoReP (development log)')
    assert len(dev) == 6 and dev.source.str.startswith('development log, not peer reviewed').all()
    assert len(published_frontiers(method='SNL')) == 35                          # the exact filter leaves the rerun out
