"""relu_explore.secure: graph checks and refusals (no SPU needed), and real two-party runs under SPU.

The SPU tests skip where SPU is not installed (the main virtualenv). Run them in the SPU virtualenv:
    python3 -m venv .venv-pi && . .venv-pi/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 -e ".[pi]" "pandas<3.1" pytest
    pytest tests/test_secure.py -q            # + -m slow for the Cheetah run
"""
import subprocess, sys
import numpy as np, pandas as pd, pytest, torch, torch.nn as nn, torch.nn.functional as F
import fastcore.test as fct
from relu_explore.sites import relufy, thin, get_masks, set_masks, relu_count
from relu_explore.models import digits_resnet, tiny_net, cifar_resnet18
from relu_explore.budget import allocate
from relu_explore.cost import count_macs, pi_cost, get_protocol
from relu_explore.secure import (plan_pi, to_jax, measure_pi, spu_available, parse_spu_profile, fit_pi_cost,
                                 register_measured_protocols, MEASURED_PI, SIM_LIMITS)

needs_spu = pytest.mark.skipif(not spu_available(), reason='SPU/JAX not installed: they live in a separate virtualenv '
                               '(numpy<2); see the module docstring for the install line')

class TwoSite(nn.Module):
    "Toy net with two ReLU sites: conv-ReLU-conv-ReLU-linear on (N, 1, 6, 6)."
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 5)
    def forward(self, x):
        x = F.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.flatten(1))

def _half(net, frac, seed=0):
    g = torch.Generator().manual_seed(seed)
    set_masks(net, allocate({k: torch.rand(m.shape, generator=g) for k, m in get_masks(net).items()}, keep_frac=frac))
    return net

@pytest.fixture
def x(): return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))

# ---------- no SPU needed ----------

def test_import_does_not_load_jax_or_spu():
    code = "import sys, relu_explore.secure; print('jax' in sys.modules, 'spu' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['False', 'False']

def test_plan_counts_match_sites_and_macs(x):
    net = _half(relufy(digits_resnet().eval(), x), 0.3)
    for n in (net, thin(net)):
        p = plan_pi(n, x)
        assert p.relus == relu_count(net) and p.total_relus == 4096
        assert p.macs == count_macs(net)['total']
        assert 'affine' not in p.ops  # every BN folded into its conv
        assert p.sites.kept.sum() == p.relus
        torch.testing.assert_close(torch.from_numpy(p.reference), net.eval()(x), atol=1e-5, rtol=1e-5)

def test_unfoldable_batchnorm_is_an_affine_step(x):
    class BNAfterAdd(nn.Module):
        def __init__(self):
            super().__init__(); self.c, self.bn = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)
        def forward(self, x): return self.bn(self.c(x) + x).relu()
    m = BNAfterAdd().eval(); m.bn.running_mean.fill_(0.3)
    assert plan_pi(m, x).ops['affine'] == 1

def test_refuses_unsupported_ops_before_spu(x):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__(); self.c, self.act = nn.Conv2d(1, 2, 3), nn.SiLU()
        def forward(self, x): return torch.tanh(self.act(self.c(x))).max(1)[0]
    for f in (plan_pi, measure_pi):   # measure_pi refuses with the same error, not an ImportError
        with pytest.raises(ValueError) as e: f(Bad(), x)
        msg = str(e.value)
        assert 'torch.nn.SiLU' in msg and 'tanh' in msg and 'Tensor.max' in msg and 'Supported:' in msg

def test_refuses_too_large_before_spu():
    big = torch.randn(2, 3, 32, 32)
    for f in (plan_pi, measure_pi):
        fct.test_fail(lambda: f(cifar_resnet18(), big), contains='Too large for the two-party simulation')
    net = relufy(digits_resnet(), torch.randn(2, 1, 8, 8))
    batch = SIM_LIMITS['relus'] // 4096 + 1   # just over the ReLU limit
    fct.test_fail(lambda: plan_pi(net, torch.randn(batch, 1, 8, 8)), contains='max_relus=')
    assert plan_pi(net, torch.randn(batch, 1, 8, 8), max_relus=10**7, max_macs=10**9).batch == batch

def test_maxpool_counts_comparisons(x):
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1), nn.Flatten(), nn.Linear(32, 3))
    p = plan_pi(m, x)
    assert (p.relus, p.comparisons) == (128, 32 * 8)

@pytest.mark.skipif(spu_available(), reason='SPU is installed here')
def test_missing_spu_names_the_extra(x):
    fct.test_fail(lambda: measure_pi(thin(relufy(digits_resnet(), x)), x), contains='pip install')
    fct.test_fail(lambda: measure_pi(thin(relufy(digits_resnet(), x)), x), contains='relu_explore[pi]')

def test_parse_profile_takes_the_last_run():
    run = ("[info] [api.cc:172] [Profiling] SPU execution f completed, input processing took 1e-06s, execution took {t}s, output\n"
           "[info] [api.cc:220] HLO profiling: total time 1\n"
           "[info] [api.cc:223] - pphlo.less, executed 2 times, duration 0.5s, send bytes {b} recv bytes 7, send actions 3, recv actions 4\n"
           "[info] [api.cc:233] Link details: total send bytes {b}, recv bytes 7, send actions 3, recv actions 4\n")
    p = parse_spu_profile(run.format(t=1.5, b=10) + run.format(t=2.5, b=99))
    assert p['sent_bytes'] == (99, 7) and p['messages'] == (3, 4) and p['execution_s'] == 2.5
    assert p['ops'].send_bytes.tolist() == [99]

def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    R, M = rng.uniform(1e3, 1e5, 8), rng.uniform(1e5, 1e7, 8)
    runs = pd.DataFrame(dict(relus_run=R, macs_run=M, seconds=(0.02 * R + 1e-4 * M + 50) / 1e3, mb=5e-5 * R + 2e-6 * M))
    f = fit_pi_cost(runs)
    np.testing.assert_allclose([f['coefficients'][k] for k in ('a_on', 'b_on', 'c_on', 'd_on', 'l_on')],
                               [0.02, 1e-4, 50, 5e-5, 2e-6], rtol=1e-6, atol=1e-9)
    assert f['traffic_const_mb'] < 1e-6 and f['latency_max_rel_err'] < 1e-6

def test_measured_protocols_registered_and_fall_with_relus(x):
    register_measured_protocols()
    full = relufy(digits_resnet(), x)
    few = _half(relufy(digits_resnet(), x), 0.1)
    for name in MEASURED_PI:
        p = get_protocol(name)
        assert p.coefficients['a_on'] > 0 and p.coefficients['d_on'] > 0 and 'fit error' in p.sources['a_on']
        c_full, c_few = pi_cost(full, name), pi_cost(few, name)
        assert c_few.online_ms < c_full.online_ms and c_few.comm_online_mb < c_full.comm_online_mb

# ---------- SPU ----------

@needs_spu
def test_to_jax_plaintext_matches_torch(x):
    pn = relufy(tiny_net(), x, replacement='poly')
    with torch.no_grad():
        for m in pn.modules():
            if isinstance(getattr(m, 'poly', None), nn.Parameter): m.poly.add_(0.1 * torch.randn_like(m.poly))
    set_masks(pn, {k: (torch.rand(m.shape) < 0.3).float() for k, m in get_masks(pn).items()})
    pool = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    for net in (_half(relufy(digits_resnet().eval(), x), 0.5), pn, thin(pn), pool):
        p = plan_pi(net, x)
        for w in ('secret', 'public'):
            fn, params = to_jax(p, w)
            np.testing.assert_allclose(np.asarray(fn(x.numpy(), *params)), p.reference, atol=1e-4, rtol=1e-4)

@needs_spu
def test_two_site_toy_under_semi2k():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 6, 6)
    net = relufy(TwoSite().eval(), x)
    full = measure_pi(net, x, protocol='semi2k')
    assert full.relus == 3 * 36 + 2 * 16 and full.batch == 4
    np.testing.assert_allclose(full.output, full.reference, atol=1e-2, rtol=0)
    assert full.rel_error < 1e-3 and full.argmax_agree == 1.0
    assert full.sent_mb[0] > 0 and full.sent_mb[1] > 0 and min(full.messages) > 0
    half = measure_pi(_half(net, 0.5), x, protocol='semi2k')
    assert half.relus == round(0.5 * full.relus)
    np.testing.assert_allclose(half.output, half.reference, atol=1e-2, rtol=0)
    assert half.mb < full.mb
    set_masks(net, {k: torch.zeros(m.shape) for k, m in get_masks(net).items()})
    none = measure_pi(net, x, protocol='semi2k')   # linear net: no comparison at all
    assert none.relus == 0 and none.mb < half.mb
    assert not none.per_op.op.str.contains('less').any()

@needs_spu
@pytest.mark.slow
def test_two_site_toy_under_cheetah():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 6, 6)
    r = measure_pi(relufy(TwoSite().eval(), x), x, protocol='cheetah')
    np.testing.assert_allclose(r.output, r.reference, atol=1e-2, rtol=0)
    assert r.protocol == 'cheetah' and r.mb > 0
