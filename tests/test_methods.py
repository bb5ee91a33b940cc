"Recipes on the digits: exact budgets (DeepReDuce: its documented tolerance), each method against random masks with the same distillation, sweeps."
import warnings, pytest, torch
import fastcore.test as fct
from relu_explore.data import digits_data
from relu_explore.models import digits_resnet
from relu_explore.distill import train, evaluate
from relu_explore.sites import relu_count, relu_total, get_sites, relufy
from relu_explore.budget import deepreduce_candidates
from relu_explore.methods import (run_recipe, list_recipes, register_recipe, MethodResult, PRESETS, compare_recipes,
                                  method_run_point, hysteresis_gate, dapa_coeffs)

@pytest.fixture(scope='module')
def digits(): return digits_data(batch_size=64)

@pytest.fixture(scope='module')
def teacher(digits):
    torch.manual_seed(0)
    t = digits_resnet()
    train(t, digits.train, digits.valid, epochs=6, progress=False)
    return t

@pytest.fixture(scope='module')
def runs(digits, teacher):
    "Results by (name, keep_frac, extra options), computed once per module (digits preset, seed 0)."
    cache = {}
    def get(name, frac, **kw):
        key = (name, frac, tuple(sorted(kw.items())))
        if key not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                cache[key] = run_recipe(name, teacher, digits, keep_frac=frac, preset='digits', seed=0, device='cpu', **kw)
        return cache[key]
    return get

def test_teacher_is_trained(digits, teacher):
    assert evaluate(teacher, digits.valid, device='cpu')['acc'] > 0.95

def test_registry():
    assert {'deepreduce', 'senet', 'snl', 'autorep', 'random'} <= set(list_recipes())
    assert set(PRESETS['digits']) <= set(list_recipes())

@pytest.mark.parametrize('name', ['random', 'senet', 'snl', 'autorep'])
def test_exact_budget_at_10_percent(name, runs, teacher, digits):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    r = runs(name, 0.1)
    assert isinstance(r, MethodResult)
    total = relu_total(relufy(teacher, digits.example()))
    assert r.total == total and r.budget == round(0.1 * total)
    assert r.relus == relu_count(r.net)
    if name == 'autorep': assert r.relus <= r.budget                              # its trained gates m: at most the budget
    else: assert r.relus == r.budget
    assert r.relus_no_stem == relu_count(r.net, include_stem=False) < r.relus      # the stem keeps some ReLUs
    for m in get_sites(r.net).values():                                            # binary, plain buffers
        assert not m.mask.requires_grad and set(m.mask.unique().tolist()) <= {0., 1.}
    assert r.acc == evaluate(r.net, digits.valid, device='cpu')['acc']
    for k, v in teacher.state_dict().items(): torch.testing.assert_close(v, before[k])   # the teacher is untouched

def test_deepreduce_tolerance_at_10_percent(runs):
    "DeepReDuce keeps the largest candidate within the budget; on the two-stage digits net that is no ReLU at all at 10%."
    r = runs('deepreduce', 0.1)
    c = r.notes['candidates']
    assert r.relus <= r.budget
    assert r.relus == c.relus[c.relus <= r.budget].max() == r.notes['reachable_below']
    assert r.notes['reachable_above'] == c.relus[c.relus >= r.budget].min()
    nonzero = c.relus[c.relus > 0].min()
    if nonzero > r.budget: assert r.relus == 0       # below its smallest non-empty candidate only the linear net remains

def test_deepreduce_warns_when_nothing_fits(teacher, digits):
    with pytest.warns(UserWarning, match='every ReLU is removed'):
        r = run_recipe('deepreduce', teacher, digits, keep_frac=0.05, epochs=0, device='cpu')
    assert r.relus == 0

def test_deepreduce_culls_least_critical_first(runs):
    r = runs('deepreduce', 0.6)
    crit = r.notes['criticality']
    if r.notes['culled']: assert r.notes['culled'][0] == min(crit, key=crit.get)
    assert r.relus <= r.budget and r.relus > 0

# Each method against random masks with the same final distillation (same loss, epochs, lr and seed), at 10%
# of the ReLUs. Margins measured on this CPU setup over seeds 0-2 (method minus random, accuracy points):
# senet +0.7..+2.4, snl +0.9..+2.2 (gate phase without weight decay, as SNL's code), autorep +0.4..+2.2 (its
# trained gates m, against random masks at its own count with as many epochs in all: the gate phase, plus the
# KD after a cut). The margins below are set under the smallest of those.
# What the margins do not say: random masks given as many training epochs as a method uses in total (mask
# search included) match SENet and beat SNL on the digits, and random masks with AutoReP's polynomial
# replacement match AutoReP (see the compare_methods tutorial).
SAME_DISTILLATION = {
    'senet': (dict(loss='senet', beta=62.5, gamma=0.1, alpha=0.9), 0.005),
    'snl': (dict(loss='snl'), 0.005),
    'autorep': (dict(loss='snl'), 0.),
}

@pytest.mark.parametrize('name', list(SAME_DISTILLATION))
def test_beats_random_with_the_same_distillation_at_10_percent(name, runs, teacher, digits):
    opts, margin = SAME_DISTILLATION[name]
    r = runs(name, 0.1)
    if name == 'autorep':
        base = run_recipe('random', teacher, digits, r.relus, preset='digits', seed=0, device='cpu', epochs=r.notes['train_epochs'], **opts)
    else: base = runs('random', 0.1, epochs=3, **opts)
    assert base.relus == r.relus
    assert r.acc >= base.acc + margin, f"{name} {r.acc:.4f} vs random {base.acc:.4f} (+{margin} wanted)"

def test_deepreduce_against_random_at_its_own_count(runs, teacher, digits):
    "At iso-ReLU (its own candidate) DeepReDuce is at least as good as random masks, within one point."
    r = runs('deepreduce', 0.5)
    base = run_recipe('random', teacher, digits, r.relus, preset='digits', seed=0, device='cpu')
    assert r.acc >= base.acc - 0.01, (r.acc, base.acc)

def test_same_seed_same_result(teacher, digits):
    "A seed fixes the result, whatever the data loaders went through before (here: one extra pass over a batch)."
    a = run_recipe('random', teacher, digits, keep_frac=0.1, epochs=1, seed=3, device='cpu', replacement='poly')
    next(iter(digits.train))
    b = run_recipe('random', teacher, digits, keep_frac=0.1, epochs=1, seed=3, device='cpu', replacement='poly')
    assert a.acc == b.acc
    for (k, m), m2 in zip(get_sites(a.net).items(), get_sites(b.net).values()): torch.testing.assert_close(m.mask, m2.mask)

def test_snl_lambda_schedule(runs):
    ph = runs('snl', 0.1).notes['mask_phase']
    assert (ph.lam.diff().dropna() >= 0).all()
    assert runs('snl', 0.1).notes['reached'] == (ph['count'].iloc[-1] <= runs('snl', 0.1).budget)

def test_hysteresis_and_dapa():
    a = torch.tensor([-0.1, 0.0, 0.1], requires_grad=True)
    assert hysteresis_gate(a, torch.ones(3), 0.05).tolist() == [0., 1., 1.]
    assert hysteresis_gate(a, torch.zeros(3), 0.05).tolist() == [0., 0., 1.]
    w = dapa_coeffs(torch.tensor([0.]), torch.tensor([2.]))[0]            # scale: relu(2u) fit = 2·fit(u) in x
    torch.testing.assert_close(w, torch.tensor([0.1995 / 2, 0.5, 0.1995 * 2]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match='std must be positive'): dapa_coeffs(torch.tensor([0.]), torch.tensor([0.]))

def test_compare_and_sweep_points(teacher, digits, tmp_path):
    from relu_explore.frontier import ResultsStore, sweep_points
    df = compare_recipes(teacher, digits, [0.25, 300], methods=['random'], epochs=0, device='cpu')
    assert df.relus.tolist() == [round(0.25 * df.total[0]), 300] and df.budget.tolist() == df.relus.tolist()
    store = ResultsStore(tmp_path, config=dict(model='digits_resnet', dataset='digits', method='recipes'), heartbeat=0.2, grace=3.0)
    points = [dict(point_key=f'random|{b}', method='random', budget=b) for b in (200, 400)]
    out = sweep_points(points, method_run_point(teacher, digits, epochs=0, device='cpu', artifacts=tmp_path / 'a'), store, progress=False)
    assert sorted(out.relus.tolist()) == [200, 400]
    assert (tmp_path / 'a' / 'random_200' / 'masks.safetensors').exists()

def test_bad_inputs(teacher, digits):
    with pytest.raises(ValueError, match='unknown recipe'): run_recipe('deepreduse', teacher, digits, 10)
    with pytest.raises(ValueError, match='exactly one of budget'): run_recipe('random', teacher, digits, 10, keep_frac=0.1)
    with pytest.raises(ValueError, match='is a float'): run_recipe('random', teacher, digits, 0.1)
    with pytest.raises(ValueError, match='above the total'): run_recipe('random', teacher, digits, 10**7)
    net = relufy(teacher, digits.example())
    with pytest.raises(ValueError, match='already relufied'): run_recipe('snl', net, digits, 10)
    with pytest.raises(TypeError, match='relu_explore Data'): run_recipe('senet', teacher, digits.train, 10)
    with pytest.raises(ValueError, match="init='x'"): run_recipe('senet', teacher, digits, 10, init='x')

def test_register_custom_recipe(teacher, digits):
    @register_recipe('_test_all_first')
    def first(model, data, budget=None, epochs=0, seed=0, *, keep_frac=None, device='cpu'):
        from relu_explore.methods import _start, _keep_top, _finish, _per_image
        net, b, total = _start(model, data, budget, keep_frac)
        sites = _per_image(net)
        _keep_top(net, {k: torch.ones(m.shape) * (len(sites) - i) for i, (k, m) in enumerate(sites.items())}, b)
        return _finish('_test_all_first', net, data, b, total, {}, device, seed, epochs)
    try:
        r = run_recipe('_test_all_first', teacher, digits, 1024)
        assert r.relus == 1024 and r.notes['options']['preset'] is None
        assert get_sites(r.net)['relu'].kept == 1024                       # the first site filled first
    finally:
        from relu_explore import methods
        methods._RECIPES.pop('_test_all_first', None)


DDP_GUARD = '''
import os, sys, torch, torch.distributed as dist
from relu_explore.models import digits_resnet
from relu_explore.data import digits_data
from relu_explore.methods import run_recipe
torch.set_num_threads(1)
rank = int(sys.argv[1])
dist.init_process_group('gloo', init_method='tcp://127.0.0.1:' + sys.argv[2], rank=rank, world_size=2)
try:
    for name in ('snl', 'senet'):
        try: run_recipe(name, digits_resnet(), digits_data(), keep_frac=0.1, epochs=0)
        except RuntimeError as e: assert 'one process per GPU' in str(e), e; print('refused', name)
finally: dist.destroy_process_group()
'''

def test_callback_driven_recipes_refuse_multi_process(tmp_path):
    "SNL's λ schedule and SENet's reselection run in process 0's callbacks: under torchrun they would diverge, so they refuse."
    import socket, subprocess, sys
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = str(s.getsockname()[1]); s.close()
    script = tmp_path / 'guard.py'; script.write_text(DDP_GUARD)
    ps = [subprocess.Popen([sys.executable, str(script), str(r), port], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in ps]
    for p, (out, err) in zip(ps, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.split() == ['refused', 'snl', 'refused', 'senet'], out


# ---------------------------------------------------------------- DeepReDuce as the paper runs it
class PlantedStages(torch.nn.Module):
    """Two stages whose ReLUs matter differently once retrained, while the trained-as-is net hides it.

    S1 (16x16, `relu1`): channels (x, -x) -> ReLU -> summed: |x| per pixel. S2 (1x1 after global pooling, `relu2`):
    channels (m - 1/2, 1/2 - m) -> ReLU -> read as their sum |m - 1/2|. Class 1 images have |x| = 1.5, class 0 |x| = 1,
    with exactly half of the pixels negative, so any linear function of the image is constant over the data.
    * Keeping only S1 and retraining: |x| per pixel, then a linear read-out of m = mean |x| separates the classes.
    * Keeping only S2 and retraining: S2 sees a linear function of the image, constant over the data: chance.
    * With the teacher's weights, linearising either stage makes the output constant (x + (-x) = 0, z + (-z) = 0):
      every stage-only net and the no-ReLU net are exactly at chance, a tie.
    """
    def __init__(self, c1=4, c2=4):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, padding_mode='circular', bias=False)
        self.relu1, self.conv2, self.pool = nn.ReLU(), nn.Conv2d(c1, 1, 1, bias=False), nn.AdaptiveAvgPool2d(1)
        self.conv3, self.relu2, self.fc = nn.Conv2d(1, c2, 1), nn.ReLU(), nn.Linear(c2, 2)
        with torch.no_grad():
            for p in self.parameters(): p.mul_(0.1)          # small weights where the construction leaves them free
            self.conv1.weight.zero_(); self.conv1.weight[0, 0, 1, 1], self.conv1.weight[1, 0, 1, 1] = 1., -1.
            self.conv2.weight.zero_(); self.conv2.weight[0, :2] = 1.
            self.conv3.weight.zero_(); self.conv3.bias.zero_()
            self.conv3.weight[0, 0], self.conv3.bias[0], self.conv3.weight[1, 0], self.conv3.bias[1] = 1., -.5, -1., .5
            self.fc.weight.zero_(); self.fc.bias.zero_(); self.fc.weight[1, :2], self.fc.bias[1] = 10., -7.5
    def forward(self, x):
        h = self.conv2(self.relu1(self.conv1(x)))
        return self.fc(self.relu2(self.conv3(self.pool(h))).flatten(1))

def planted_data(n_train=256, n_valid=256):
    from torch.utils.data import TensorDataset, DataLoader
    from relu_explore.data import Data
    def make(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 2
        sign = torch.stack([torch.randperm(256, generator=g) % 2 for _ in range(n)]).float() * 2 - 1   # half the pixels negative
        return (sign * (1 + 0.5 * y[:, None])).view(n, 1, 16, 16), y
    (xt, yt), (xv, yv) = make(n_train, 0), make(n_valid, 1)
    train = DataLoader(TensorDataset(xt, yt), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    return Data(train, DataLoader(TensorDataset(xv, yv), batch_size=256), 2, (1, 16, 16), 'planted')

def test_deepreduce_paper_preset_trains_stage_only_nets():
    "The paper preset retrains each stage-only net (with KD) before rating it; 0 epochs would rate the dense weights."
    p = PRESETS['paper']['deepreduce']
    assert p['crit_epochs'] >= 100 and p['thin'] == 'bottom' and (p['T'], p['lam']) == (4., .9)
    assert tuple(p['alphas']) == (1., .5) and tuple(p['rhos']) == (1., .5)

def test_deepreduce_planted_critical_stage():
    "Only trained stage-only nets find the planted critical stage S1; untrained ones tie at chance and cull S1 first."
    data, teacher = planted_data(), PlantedStages()
    assert evaluate(teacher, data.valid, device='cpu')['acc'] == 1.0
    kw = dict(budget=1024, epochs=3, lr=0.01, alphas=(1.,), rhos=(1.,), device='cpu')   # a hand-built net: no reshaping
    trained = run_recipe('deepreduce', teacher, data, preset='paper', **{**kw, 'crit_epochs': 3})
    ps = trained.notes['per_stage'].set_index('stage')
    assert ps.acc['S1'] == 1.0 and ps.acc['S2'] == 0.5 and ps.acc_none['S1'] == 0.5
    assert max(trained.notes['criticality'], key=trained.notes['criticality'].get) == 'S1'
    assert trained.notes['culled'] == ['S2'] and trained.relus == 1024 and trained.acc > 0.9
    untrained = run_recipe('deepreduce', teacher, data, preset='paper', **{**kw, 'crit_epochs': 0})
    assert set(untrained.notes['per_stage'].acc) == {0.5} and set(untrained.notes['criticality'].values()) == {0.}
    assert untrained.notes['culled'] == ['S1'] and untrained.relus == 4          # the tie culls S1: the wrong stage
    assert untrained.acc == 0.5

def test_deepreduce_reshaped_candidate_is_a_new_network(teacher, digits):
    "At 10% no unreshaped candidate keeps a ReLU; with alpha, rho in {1, 0.5} the recipe trains a reshaped net within budget."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        r = run_recipe('deepreduce', teacher, digits, keep_frac=0.1, preset='digits', epochs=1, alphas=(1., .5), rhos=(1., .5), device='cpu')
    c = r.notes['candidates']
    assert c[(c.alpha == 1) & (c.rho == 1) & (c.relus <= r.budget)].relus.max() == 0
    assert 0 < r.relus <= r.budget and r.relus == c.relus[c.relus <= r.budget].max() == relu_count(r.net)
    assert (r.notes['alpha'], r.notes['rho']) != (1., 1.) and r.total == relu_total(relufy(teacher, digits.example()))
    assert r.notes['init'] == ('teacher' if r.notes['alpha'] == 1. else 'scratch')
    assert r.acc == evaluate(r.net, digits.valid, device='cpu')['acc']
    with pytest.raises(TypeError, match='builder='):
        run_recipe('deepreduce', torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10)),
                   digits, keep_frac=0.1, epochs=0, alphas=(1., .5), device='cpu')


# SNL and AutoReP as their official code runs them; honest selection.

def _with_train(digits, dl):
    "`digits` with another training loader."
    from dataclasses import replace
    return replace(digits, train=dl)

def test_autorep_trains_on_augmented_batches(teacher, digits):
    "An in-memory loader marked device_augment is cropped and flipped in AutoReP's gate phase too (it trains in distill's loop)."
    from torch.utils.data import DataLoader, TensorDataset
    x, y = digits.train.dataset.tensors
    dl = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    dl.device_augment = True
    known = {bytes(v.numpy().tobytes()) for v in x[:256]}
    seen = []
    h = teacher.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()) if a[0].shape[0] > 2 else None)
    try: run_recipe('autorep', teacher, _with_train(digits, dl), keep_frac=0.1, preset='digits', epochs=1, ft_epochs=0, cut_epochs=0, device='cpu')
    finally: h.remove()
    imgs = torch.cat(seen)
    assert len(imgs) == 256                                             # one epoch of training batches reached the teacher...
    changed = sum(bytes(v.numpy().tobytes()) not in known for v in imgs)
    assert changed > 0.9 * len(imgs), changed                           # ...and nearly all of them were cropped/flipped

def test_autorep_above_budget_is_cut_and_distilled(teacher, digits):
    "No penalty: the gates stay open, the phase ends above the budget; it is recorded, cut to B and distilled even with ft_epochs=0."
    r = run_recipe('autorep', teacher, digits, keep_frac=0.1, epochs=1, lam=0., ft_epochs=0, cut_epochs=2, device='cpu')
    assert r.notes['reached'] is False and r.notes['count_at_end'] > r.budget
    assert r.relus == r.budget                                          # the cut keeps exactly B (the open gates with the highest scores)
    assert r.notes['ft_epochs_run'] == 2 and len(r.notes['history']) == 2 and r.notes['train_epochs'] == 3
    assert 'acc_before_ft' in r.notes

def test_autorep_within_budget_keeps_the_trained_gates(runs):
    r = runs('autorep', 0.1)
    ph = r.notes['mask_phase']
    assert r.notes['count_at_end'] == ph['count'].iloc[-1]
    if r.notes['reached']: assert r.relus == r.notes['count_at_end'] <= r.budget and r.notes['ft_epochs_run'] == 0

def test_autorep_coefficients_are_the_codes():
    "approx_2rd_torch with the floored variance in σ's place, w0/5, w2/10, times scale_x2 in the forward: at (0, 1) ≈ (0.0020, 0.5, 0.0399)."
    from relu_explore.methods import autorep_coeffs
    phi0 = 0.3989422804014327
    torch.testing.assert_close(autorep_coeffs(torch.tensor([0.]), torch.tensor([1.]))[0],
                               torch.tensor([0.1 * phi0 / 2 / 10, 0.5, phi0 / 2 / 5]), atol=1e-7, rtol=0)
    torch.testing.assert_close(autorep_coeffs(torch.tensor([0.]), torch.tensor([0.0025])), autorep_coeffs(torch.tensor([0.]), torch.tensor([0.5])))
    torch.testing.assert_close(dapa_coeffs(torch.tensor([0.]), torch.tensor([1.]))[0], torch.tensor([2 * phi0 / 4, 0.5, 2 * phi0 / 4]))  # closed form kept

def test_autorep_refreshes_the_coefficients_from_running_statistics(teacher, digits):
    "With lr 0 the coefficients after the refresh window are autorep_coeffs of the sites' running input statistics."
    from relu_explore.methods import autorep_coeffs
    r = run_recipe('autorep', teacher, digits, keep_frac=0.5, epochs=1, lr=0., lam=0., refresh_every=1, refresh_until=3,
                   cut_epochs=0, device='cpu')
    assert r.notes['dapa_refreshes'] == 3
    for k, m in get_sites(r.net).items():
        mean, var = r.notes['dapa_stats'][k]
        torch.testing.assert_close(m.poly.detach(), autorep_coeffs(mean, var))

def test_snl_gate_phase_adam_has_no_weight_decay(teacher, digits, monkeypatch):
    "SNL's gate phase is Adam(net.parameters(), lr): no weight decay on any group (distill's default 5e-4 is off)."
    import importlib
    D = importlib.import_module('relu_explore.distill')
    made, orig = [], D._make_optimizer
    def spy(*a, **k):
        o = orig(*a, **k); made.append(o); return o
    monkeypatch.setattr(D, '_make_optimizer', spy)
    run_recipe('snl', teacher, digits, keep_frac=0.1, preset='digits', epochs=1, mask_epochs=1, device='cpu')
    adam, sgd = made
    assert isinstance(adam, torch.optim.Adam) and [g['weight_decay'] for g in adam.param_groups] == [0.] * len(adam.param_groups)
    assert sum(p.numel() for g in adam.param_groups for p in g['params']) > sum(p.numel() for p in teacher.parameters())  # gates in it
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]['weight_decay'] == 5e-4              # the fine-tuning keeps 5e-4

def test_snl_warmup_counts_epochs_from_zero(teacher, digits):
    "A stalled count grows λ once SNL's 0-based epoch index reaches warmup (`epoch >= 5`); a phase that ends above B is cut."
    r = run_recipe('snl', teacher, digits, keep_frac=0.1, epochs=0, lam=1e-9, mask_lr=1e-9, mask_epochs=4, warmup=2, lam_growth=2., device='cpu')
    assert r.notes['mask_phase']['lam'].tolist() == [1e-9, 1e-9, 1e-9, 2e-9]
    assert r.notes['reached'] is False and r.relus == r.budget

def test_snl_threshold_binarisation(runs):
    "binarize='threshold' is SNL's rule: gates above eps at the stop, so the count is the stop's, at most the budget."
    r = runs('snl', 0.1, binarize='threshold')
    assert r.notes['reached'] and r.relus == r.notes['count_at_stop'] <= r.budget

def test_result_is_the_last_epoch_with_the_best_beside(teacher, digits):
    "acc is the last epoch's validation accuracy; acc_best/best_epoch come from the history; the row names the variant."
    from relu_explore.models import CifarResNet, CifarBasicBlock
    r = run_recipe('random', teacher, digits, keep_frac=0.1, epochs=4, lr=0.2, device='cpu')
    h, row = r.notes['history'], r.to_row()
    assert row['selected'] == 'last' and row['acc'] == r.acc
    assert abs(r.acc - h['valid_acc'].iloc[-1]) < 1e-9
    assert row['acc_best'] == h['valid_acc'].max() and row['best_epoch'] == int(h['epoch'][h['valid_acc'].idxmax()])
    assert row['stem_relu'] is True
    torch.manual_seed(0)
    stemless = CifarResNet(CifarBasicBlock, [1, 1], 10, 8, 1, stem_relu=False)
    assert run_recipe('random', stemless, digits, keep_frac=0.5, epochs=0, device='cpu').to_row()['stem_relu'] is False

def test_paper_presets_are_the_codes():
    snl, ar = PRESETS['paper']['snl'], PRESETS['paper']['autorep']
    assert (snl['mask_epochs'], snl['binarize'], snl['lam'], snl['warmup'], snl['mask_lr']) == (2000, 'threshold', 1e-5, 5, 1e-3)
    assert (ar['lam'], ar['epochs'], ar['scale_x2'], ar['var_min'], ar['ft_epochs']) == (140., 200, 0.1, 0.5, 0)
    import inspect
    from relu_explore.methods import snl_recipe, autorep_recipe
    for name, fn in (('snl', snl_recipe), ('autorep', autorep_recipe)):     # the cpu preset names real options
        assert set(PRESETS['cpu'][name]) <= set(inspect.signature(fn).parameters)


# ---------------------------------------------------------------- SENet as its code lineage runs it
def test_senet_paper_preset_follows_the_lineage():
    "Stage 2 from scratch with a random spatial mask for 150 epochs; stage 3 the CIFAR-10 command's weights and step schedule."
    p = PRESETS['paper']['senet']
    assert (p['init'], p['loc_weights'], p['loc_epochs'], p['loc_lr']) == ('random', 'scratch', 150, .05)
    assert (p['epochs'], p['sched'], p['lr'], p['gamma'], p['alpha'], p['beta'], p['T']) == (240, 'step', .01, .1, .5, 1000., 4.)
    assert [round(f * 240) for f in p['milestones']] == [150, 180, 210]
    assert p['sparse_epochs'] > 0 and p['density'] == .1 and p['eta'] == 'inverse'

def test_senet_paper_preset_starts_stage2_from_random_spatial_mask_and_fresh_weights(teacher, digits):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        r = run_recipe('senet', teacher, digits, keep_frac=0.1, preset='paper', epochs=0, loc_epochs=1, sparse_epochs=1, beta='auto',
                       device='cpu')
    assert r.relus == r.budget
    start = r.notes['start'].set_index('site')
    assert (start.partial <= 1).all()                         # whole spatial positions (all channels), but the last one
    assert start.kept.to_dict() == r.notes['counts']
    scored = run_recipe('senet', teacher, digits, keep_frac=0.1, preset='digits', epochs=0, loc_epochs=0, device='cpu')
    assert scored.notes['start'].partial.sum() > 10 * len(start)   # the scored start picks single elements
    t = teacher.state_dict()                                  # stage 2 trained a fresh net: no weight is the teacher's
    assert not any(torch.equal(v, t[k]) for k, v in r.net.state_dict().items() if k in t and k.endswith('.weight') and v.numel() > 64)
    assert r.notes['sparse'].density.tolist() == [0.1]

def test_senet_stage1_densities_from_sparse_training(teacher, digits):
    "sparse_epochs > 0: d_l are the kept fractions of a copy trained at d (global magnitude masks), not of the dense weights."
    from relu_explore.sensitivity import score, layer_density, sparse_train
    import copy
    net = relufy(teacher, digits.example())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    one = score(net, digits.train, 'senet', secondary=None, max_batches=2).extra['table'].set_index('site').density
    s = score(net, digits.train, 'senet', secondary=None, sparse_epochs=2, seed=0)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())       # trained on a copy
    work = copy.deepcopy(net)
    for p in work.parameters(): p.requires_grad_(True)
    sparse_train(work, digits.train, 0.1, 2, seed=0)
    kept = {k: float((m.weight != 0).float().mean()) for k, m in work.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    tab = s.extra['table'].set_index('site')
    assert all(abs(tab.density[k] - kept[tab.layer[k]]) < 1e-6 for k in tab.index)
    size = {k: m.weight.numel() for k, m in work.named_modules() if k in kept}
    assert sum(kept[k] * size[k] for k in kept) == pytest.approx(0.1 * sum(size.values()), rel=1e-3)   # d overall
    assert not all(abs(tab.density[k] - one[k]) < 1e-3 for k in tab.index)           # not the one-shot densities
    assert s.extra['sparse'].density.tolist()[-1] == 0.1

def test_senet_profile_shape_like_the_lineage():
    """Per-stage shares of a 100K budget on the CIFAR ResNet18 (kaiming init, where the layer sizes set d_l): eta = d / d_l with
    counts ∝ eta puts stem + S1 near the lineage's ResNet18/C100 100K list (10.8 %) and S3 + S4 near it (68 %); 1 - d_l does not."""
    from relu_explore.models import cifar_resnet18
    from relu_explore.sensitivity import score
    from relu_explore.budget import allocate
    torch.manual_seed(0)
    net = relufy(cifar_resnet18(num_classes=100), torch.randn(2, 3, 32, 32))
    def shares(eta):
        prof = score(net, None, 'senet', secondary=None, eta=eta).per_layer_profile()
        a = allocate({k: torch.ones(s) for k, s in ((k, m.shape) for k, m in get_sites(net).items())}, 100_000,
                     strategy='per_layer', profile=prof)
        c = a.info['counts']
        st = lambda i: sum(v for k, v in c.items() if k.startswith(f'layer{i}.'))
        return (c['relu'] + st(1)) / 1e5, (st(3) + st(4)) / 1e5
    low, high = shares('inverse')
    assert low < 0.16 and high > 0.62, (low, high)
    low_c, high_c = shares('complement')
    assert low_c > 0.18 and high_c < 0.60, (low_c, high_c)                           # the flat profile of 1 - d_l

def test_senet_step_schedule_drops_at_the_milestones(teacher, digits):
    "sched='step': lr x 0.1 at 5/8, 6/8 and 7/8 of the stage-3 epochs (the lineage's 150, 180, 210 of 240)."
    r = run_recipe('senet', teacher, digits, keep_frac=0.1, preset='digits', epochs=8, loc_epochs=0, sched='step', lr=0.01, device='cpu')
    h = r.notes['history']
    assert h.epoch.tolist() == list(range(1, 9))
    assert h.lr.tolist() == pytest.approx([1e-2] * 5 + [1e-3, 1e-4, 1e-5], rel=1e-9)
    assert r.relus == r.budget
