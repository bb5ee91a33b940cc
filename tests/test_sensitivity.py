"Sensitivity methods: shapes on every model, planted truths, exactness against hand computations, one-pass Taylor, errors."
import copy, math, time
import pytest, torch, torch.nn as nn, torch.nn.functional as F
import numpy as np, pandas as pd
import fastcore.test as fct
from torch.testing import assert_close
from relu_explore.sites import relufy, get_sites, get_masks, set_masks, site_table
from relu_explore.models import tiny_net, dead_channel_net, digits_resnet, cifar_resnet18
from relu_explore.sensitivity import (Scores, score, list_methods, register_method, Sensitivity, TaylorSensitivity,
                                      compare_methods, rank_correlation, feeding_layer, layer_density)

ALL = ['taylor', 'grad_x_act', 'conductance', 'feature_ablation', 'ablation', 'deepreduce', 'senet', 'snl', 'activation', 'random']
CHEAP = ['taylor', 'grad_x_act', 'deepreduce', 'senet', 'activation', 'random']
LIGHT = {'snl': dict(steps=3), 'conductance': dict(n_steps=4)}   # shapes do not depend on these


def _gen(seed): return torch.Generator().manual_seed(seed)

def _batch(shape, n=16, classes=10, seed=0):
    return torch.randn(n, *shape, generator=_gen(seed)), torch.randint(0, classes, (n,), generator=_gen(seed + 1))

def _shapes(net): return {k: tuple(m.shape) for k, m in get_sites(net).items()}

def _state(net):
    "Everything a scoring method must leave as it was."
    return ({k: v.clone() for k, v in get_masks(net).items()}, [m.mask.requires_grad for m in get_sites(net).values()],
            [p.requires_grad for p in net.parameters()], net.training, {k: v.clone() for k, v in net.state_dict().items()})

def _same_state(a, b):
    assert list(a[0]) == list(b[0]) and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1:4] == b[1:4]
    assert all(torch.equal(a[4][k], b[4][k]) for k in a[4])


class AbsNet(nn.Module):
    "Site 'relu_a' computes |x| = relu(x) + relu(-x) (essential); 'relu_b', 'relu_c' see mostly positive inputs, weakly used."
    def __init__(self, t=0.8):
        super().__init__()
        self.conv_a, self.conv_b, self.conv_c = nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv_a.weight.copy_(torch.tensor([1., -1.]).view(2, 1, 1, 1))
            self.conv_b.weight.copy_(torch.tensor([1., -1.]).view(2, 1, 1, 1)); self.conv_b.bias.fill_(1.)
            self.conv_c.weight.copy_(torch.tensor([2., -2.]).view(2, 1, 1, 1)); self.conv_c.bias.fill_(1.)
        self.relu_a, self.relu_b, self.relu_c = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool2, self.pool4, self.t = nn.AvgPool2d(2), nn.AvgPool2d(4), t
    def forward(self, x):
        s = self.relu_a(self.conv_a(x)).sum(1).mean((1, 2))
        b = self.relu_b(self.conv_b(self.pool2(x)))
        c = self.relu_c(self.conv_c(self.pool4(x)))
        z = s - self.t + 0.05 * (b.mean((1, 2, 3)) + c.mean((1, 2, 3)) - 2)
        return torch.stack([-z, z], 1)

def abs_data(n=64, seed=0):
    x = torch.randn(n, 1, 4, 4, generator=_gen(seed))
    return x, (x.abs().mean((1, 2, 3)) > 0.8).long()

class ConstReLUNet(nn.Module):
    "A ReLU on a parameter (input-independent site, no batch dimension) next to an ordinary one."
    def __init__(self):
        super().__init__()
        self.conv, self.scale, self.fc = nn.Conv2d(1, 3, 3, padding=1), nn.Parameter(torch.randn(3, 1, 1)), nn.Linear(3 * 8 * 8, 10)
    def forward(self, x):
        return self.fc((F.relu(self.conv(x)) * self.scale.relu()).flatten(1))


@pytest.fixture(scope='module')
def nets():
    torch.manual_seed(0)
    xd, yd = _batch((1, 8, 8))
    xr, yr = _batch((3, 32, 32), n=2)
    return {'tiny_net': (relufy(tiny_net(), xd[:2]), (xd, yd)),
            'digits_resnet': (relufy(digits_resnet(), xd[:2]), (xd, yd)),
            'cifar_resnet18_w8': (relufy(cifar_resnet18(width=8), xr), (xr, yr))}

@pytest.fixture(scope='module')
def dead():
    x, y = _batch((1, 8, 8), seed=3)
    return relufy(dead_channel_net(), x[:2]), (x, y)

@pytest.fixture(scope='module')
def absnet():
    x, y = abs_data()
    return relufy(AbsNet(), x[:2]), (x, y)


# ---------------------------------------------------------------- 1. shapes, on every model
@pytest.mark.parametrize('method', ALL)
@pytest.mark.parametrize('model', ['tiny_net', 'digits_resnet', 'cifar_resnet18_w8'])
def test_shapes_every_method_every_model(nets, model, method):
    net, batch = nets[model]
    before = _state(net)
    s = score(net, batch, method, **LIGHT.get(method, {}))
    assert isinstance(s, Scores) and s.method == method
    assert {k: tuple(v.shape) for k, v in s.items()} == _shapes(net)
    assert all(v.dtype == torch.float32 and v.device.type == 'cpu' and torch.isfinite(v).all() for v in s.values())
    if method not in ('deepreduce', 'ablation'):            # (an untrained net's accuracy may not move at all)
        assert all(v.abs().sum() > 0 for v in s.values()), f"{method}: a site scored all zeros"
    _same_state(before, _state(net))
    assert all(p.grad is None for p in net.parameters())

@pytest.mark.parametrize('method', CHEAP)
def test_shapes_full_resnet18_batch2(method):
    x, y = _batch((3, 32, 32), n=2)
    net = relufy(cifar_resnet18(), x)
    s = score(net, (x, y), method)
    assert {k: tuple(v.shape) for k, v in s.items()} == _shapes(net)
    assert sum(v.numel() for v in s.values()) == 557_056

@pytest.mark.parametrize('method', ALL)
def test_input_independent_site(method):
    x, y = _batch((1, 8, 8))
    net = relufy(ConstReLUNet(), x[:2])
    assert [m.per_image for m in get_sites(net).values()] == [True, False]
    s = score(net, (x, y), method)
    assert {k: tuple(v.shape) for k, v in s.items()} == _shapes(net)


# ---------------------------------------------------------------- 2. planted truths
# channel-level methods must put the dead channel strictly lowest in its site
@pytest.mark.parametrize('method,opts', [('taylor', {}), ('taylor', dict(per_sample=False)), ('grad_x_act', {}), ('conductance', {}),
                                         ('feature_ablation', {}), ('ablation', dict(granularity='channel')), ('senet', {}),
                                         ('activation', {})])
def test_dead_channel_strictly_lowest(dead, method, opts):
    net, batch = dead
    site, ch = dead_channel_net().dead
    per_ch = score(net, batch, method, **opts)[site].reshape(4, -1).sum(1)
    assert per_ch.argmin().item() == ch and int((per_ch == per_ch.min()).sum()) == 1, per_ch
    assert per_ch[ch].item() == 0.                          # exactly: the dead ReLU has no correction to remove

def test_dead_channel_snl_tied_lowest(dead):
    "SNL under Adam moves every gate ~lr per step by its gradient's sign: the dead gate follows the penalty alone."
    net, batch = dead
    s = score(net, batch, 'snl', steps=20, lr=1e-3, lam=1e-4)['relu']
    p = torch.ones(1, requires_grad=True); o = torch.optim.Adam([p], lr=1e-3)
    for _ in range(20): o.zero_grad(); (1e-4 * p.abs().sum()).backward(); o.step()
    assert_close(s[1], torch.full_like(s[1], p.item()), atol=1e-6, rtol=0)
    drop = 1 - s[1].max()
    assert drop > 0.015 and s[1].max() - s.min() <= 0.1 * drop
    assert s.max() > 1                                      # gates the loss needs rose

def test_dead_channel_site_level_methods_tie(dead):
    "ablation (site) and deepreduce are site-level by design: one value per site (stage)."
    net, batch = dead
    for m in ['ablation', 'deepreduce']:
        s = score(net, batch, m)
        assert all(v.unique().numel() == 1 for v in s.values())

@pytest.mark.parametrize('method', [m for m in ALL if m not in ('random', 'senet')])
def test_essential_site_highest(absnet, method):
    net, batch = absnet
    assert (net(batch[0]).argmax(1) == batch[1]).float().mean() == 1.
    ps = score(net, batch, method).per_site()
    assert ps['sum'].idxmax() == 0 and ps['mean'].idxmax() == 0, ps

def test_essential_site_ground_truth(absnet):
    net, batch = absnet
    t = score(net, batch, 'ablation', signed=True).extra['table']
    assert t.dacc[0] < -0.3 and (t.dacc[1:].abs() < 0.05).all()

def test_senet_planted_pruning_truth(nets):
    net, batch = nets['tiny_net']
    big = copy.deepcopy(net)
    with torch.no_grad(): big.conv2.weight.mul_(100)        # conv2 feeds site 'relu_1'; its weights now survive pruning
    s = score(big, batch, 'senet')
    prof = s.per_layer_profile()
    assert prof['relu_1'] < 0.05 and min(prof, key=prof.get) == 'relu_1'
    assert_close(torch.tensor(s.per_site()['mean'].to_numpy()), torch.tensor(list(prof.values()), dtype=torch.float64), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- exactness against hand computations
def test_taylor_per_sample_equals_per_image_loop(nets):
    net, (x, y) = nets['tiny_net']
    s = score(net, (x, y), 'taylor')
    masks = [m.mask for m in get_sites(net).values()]
    ref = [torch.zeros_like(m) for m in masks]
    for m in masks: m.requires_grad_(True)
    try:
        for i in range(len(x)):
            g = torch.autograd.grad(F.cross_entropy(net(x[i:i+1]), y[i:i+1], reduction='sum'), masks)
            for r, gi in zip(ref, g): r += gi.abs()
    finally:
        for m in masks: m.requires_grad_(False)
    for k, r in zip(s, ref): assert_close(s[k], r, rtol=1e-4, atol=1e-6)
    agg = score(net, (x, y), 'taylor', per_sample=False)
    signed = score(net, (x, y), 'taylor', signed=True)
    for k in s:
        assert_close(agg[k], signed[k].abs())
        assert (agg[k] <= s[k] + 1e-5).all()               # |Σ g| <= Σ |g|

def test_taylor_loader_sums_batches_and_max_batches(nets):
    net, (x, y) = nets['tiny_net']
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    full, first = score(net, dl, 'taylor'), score(net, dl, 'taylor', max_batches=1)
    parts = [score(net, (x[i:i+4], y[i:i+4]), 'taylor') for i in range(0, 16, 4)]
    for k in full:
        assert_close(full[k], sum(p[k] for p in parts), rtol=1e-4, atol=1e-6)
        assert_close(first[k], parts[0][k])

def test_taylor_at_ones(nets):
    net, batch = nets['tiny_net']
    m0 = get_masks(net)
    half = {k: (torch.rand(v.shape, generator=_gen(5)) < 0.5).float() for k, v in m0.items()}
    set_masks(net, half)
    try:
        a, cur = score(net, batch, 'taylor', at='ones'), score(net, batch, 'taylor')
        assert get_masks(net)['relu'].equal(half['relu'])
    finally: set_masks(net, m0)
    b = score(net, batch, 'taylor')
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(cur[k], b[k]) for k in b)

def test_feature_ablation_is_exact_channel_linearisation(dead):
    net, (x, y) = dead
    fa = score(net, (x, y), 'feature_ablation', signed=True, perturbations_per_eval=3)
    site = get_sites(net)['relu2']
    for c in range(site.shape[0]):
        with torch.no_grad():
            z0 = net(x).gather(1, y[:, None])[:, 0]
            site.mask[c] = 0; z1 = net(x).gather(1, y[:, None])[:, 0]; site.mask.fill_(1.)
        assert_close(fa['relu2'][c], torch.full(site.shape[1:], (z0 - z1).sum().item()), rtol=1e-4, atol=1e-5)

def test_grad_x_act_is_gradient_times_relu_correction(dead):
    net, (x, y) = dead
    s = score(net, (x, y), 'grad_x_act', signed=True)
    site = get_sites(net)['relu2']
    site.mask.requires_grad_(True)
    try:                                                    # d z_y / d m = relu(-x) * dz/dy summed over images = Σ g·δ
        g, = torch.autograd.grad(net(x).gather(1, y[:, None]).sum(), [site.mask])
    finally: site.mask.requires_grad_(False)
    assert_close(s['relu2'], g, rtol=1e-4, atol=1e-6)

def test_inplace_sites_captum_and_taylor(nets):
    "digits_resnet's ReLUs were called in place: its sites compute in place, and the scores must still see their inputs."
    net, (x, y) = nets['digits_resnet']
    assert all(getattr(m, 'inplace', True) for m in get_sites(net).values())
    s = score(net, (x, y), 'grad_x_act', signed=True)
    masks = [m.mask for m in get_sites(net).values()]
    for m in masks: m.requires_grad_(True)
    net.eval()                                              # scoring runs in eval mode (BatchNorm running statistics)
    try: g = torch.autograd.grad(net(x).gather(1, y[:, None]).sum(), masks)
    finally:
        net.train()
        for m in masks: m.requires_grad_(False)
    for k, gi in zip(s, g): assert_close(s[k], gi, rtol=1e-3, atol=1e-5)
    assert all(getattr(m, 'inplace', True) for m in get_sites(net).values())     # restored
    fa = score(net, (x, y), 'feature_ablation')
    assert all(v.abs().sum() > 0 for v in fa.values())

def test_ablation_matches_manual(absnet):
    net, (x, y) = absnet
    ab = score(net, (x, y), 'ablation', signed=True)
    with torch.no_grad():
        l0 = F.cross_entropy(net(x), y).item()
        get_sites(net)['relu_b'].mask.zero_(); l1 = F.cross_entropy(net(x), y).item(); get_sites(net)['relu_b'].mask.fill_(1.)
    assert abs(ab['relu_b'][0, 0, 0].item() - (l1 - l0)) < 1e-6
    assert ab.per_site()['mean'].tolist() == pytest.approx(ab.extra['table'].dloss.tolist())

def test_activation_matches_formula(dead):
    net, (x, y) = dead
    s = score(net, x, 'activation')                         # no labels needed
    with torch.no_grad(): h = net.conv1(x)
    neg = (h < 0).float()
    expect = neg.mean(0) * ((-h).clamp(min=0).sum(0) / neg.sum(0).clamp(min=1))   # fraction below 0 x their mean |x|
    assert_close(s['relu'][0], expect[0], rtol=1e-4, atol=1e-6)

def test_deepreduce_formula_and_tables(nets):
    net, (x, y) = nets['tiny_net']
    s = score(net, (x, y), 'deepreduce')
    ps = s.extra['per_stage']
    assert ps.stage.tolist() == ['S1', 'S2', 'head'] and set(s.extra['criticality']) == {'S1', 'S2', 'head'}
    tab = site_table(net)
    for _, r in ps.iterrows():
        sites = tab.site[tab.stage == r.stage].tolist()
        m0 = get_masks(net)
        set_masks(net, {k: (v if k in sites else torch.zeros_like(v)) for k, v in m0.items()})
        with torch.no_grad(): acc = (net(x).argmax(1) == y).float().mean().item()
        set_masks(net, m0)
        assert acc == pytest.approx(r.acc) and r.relus == tab.total[tab.stage == r.stage].sum()
        assert r.criticality == pytest.approx((r.acc - r.acc_none) / math.log(r.relus))
        assert all(torch.allclose(s[k], torch.full_like(s[k], r.criticality)) for k in sites)

def test_deepreduce_retraining_leaves_net_alone(nets):
    net, batch = nets['tiny_net']
    before = _state(net)
    s = score(net, batch, 'deepreduce', train_epochs=1, lr=1e-3)
    _same_state(before, _state(net))
    assert s.extra['train_epochs'] == 1 and len(s.extra['per_stage']) == 3

def test_snl_train_weights_works_on_a_copy(nets):
    net, batch = nets['tiny_net']
    before = _state(net)
    s = score(net, batch, 'snl', steps=3, train_weights=True)
    _same_state(before, _state(net))
    assert len(s.extra['ce']) == 3

@pytest.mark.parametrize('method', ALL)
def test_every_method_takes_max_batches(nets, method):
    "One loader option for all (the CLI passes max_batches=4 whatever the method)."
    net, (x, y) = nets['tiny_net']
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    s = score(net, dl, method, max_batches=1, **LIGHT.get(method, {}))
    assert {k: tuple(v.shape) for k, v in s.items()} == _shapes(net)

def test_random_seeded(nets):
    net, _ = nets['tiny_net']
    a, b, c = score(net, None, 'random'), score(net, None, 'random'), score(net, None, 'random', seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)

def test_feeding_layer_resnet_main_path():
    net = relufy(cifar_resnet18(width=8), torch.randn(2, 3, 32, 32))
    assert feeding_layer(net, 'layer2.0.relu_1') == 'layer2.0.conv2'     # not the downsample conv
    assert feeding_layer(net, 'layer3.1.relu') == 'layer3.1.conv1'
    d = layer_density(net, 0.1)
    n = {k: m.weight.numel() for k, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert sum(d[k] * n[k] for k in d) / sum(n.values()) == pytest.approx(0.1, abs=1e-3)


# ---------------------------------------------------------------- 3. one-pass Taylor on CIFAR ResNet18
def _taylor_one_pass(batch):
    torch.manual_seed(0)
    net = relufy(cifar_resnet18(), torch.randn(2, 3, 32, 32))
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    calls = []
    h = net.register_forward_hook(lambda *a: calls.append(1))
    t = time.perf_counter()
    s = score(net, (x, y), 'taylor')
    dt = time.perf_counter() - t
    h.remove()
    assert len(calls) == 1
    assert sum(v.numel() for v in s.values()) == 557_056
    assert {k: tuple(v.shape) for k, v in s.items()} == _shapes(net)
    assert all(p.grad is None for p in net.parameters()) and not any(m.mask.requires_grad for m in get_sites(net).values())
    return dt

def test_taylor_resnet18_one_forward_batch2(): _taylor_one_pass(2)

@pytest.mark.slow
def test_taylor_resnet18_one_forward_batch256():
    "All 557,056 scores from one forward + backward of a 256-image batch (about 13 s on 2 CPU cores)."
    _taylor_one_pass(256)


# ---------------------------------------------------------------- 4. the digits model, no retraining
@pytest.fixture(scope='module')
def digits_trained():
    from relu_explore.data import digits_data
    torch.manual_seed(0)
    d = digits_data(batch_size=64)
    model = digits_resnet()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(4):
        for x, y in d.train:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    model.eval()
    return relufy(model, d.example(2)), d

def test_digits_taylor_senet_beat_random_at_25pct(digits_trained):
    "At 25% kept (global top-k, no retraining): taylor and senet at least 20 points above random (measured ~87%, ~75%, ~16%)."
    net, d = digits_trained
    res = compare_methods(net, d.batch(256, 'train'), keep_fracs=[0.25], methods=['random', 'taylor', 'senet'], eval_data=d.valid)
    acc = res.set_index('method').acc
    full = compare_methods(net, d.batch(256, 'train'), keep_fracs=[1.0], methods=['random'], eval_data=d.valid).acc.item()
    assert full > 0.9
    assert acc['taylor'] >= acc['random'] + 0.20 and acc['senet'] >= acc['random'] + 0.20, acc
    assert res.keep_frac.tolist() == [0.25] * 3 and res.relus.tolist() == [1024] * 3

def test_compare_methods_bn_recalibration(digits_trained):
    "bn_batches recomputes BatchNorm statistics before each evaluation and puts the net's own back afterwards."
    net, d = digits_trained
    before = {k: v.clone() for k, v in net.state_dict().items() if 'running' in k}
    kw = dict(keep_fracs=[0.1], methods=['random'], eval_data=d.valid)
    stale = compare_methods(net, d.batch(256, 'train'), **kw).acc.item()
    fresh = compare_methods(net, d.batch(256, 'train'), bn_batches=1, **kw).acc.item()
    assert fresh >= stale + 0.15, (stale, fresh)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    fct.test_fail(lambda: compare_methods(net, d.batch(64), bn_batches=-1, **kw), contains='bn_batches=-1')

def test_digits_senet_per_layer_strategy(digits_trained):
    net, d = digits_trained
    s = score(net, d.batch(256, 'train'), 'senet')
    res = compare_methods(net, d.batch(256, 'train'), keep_fracs=[0.25], methods={'senet': s, 'random': 'random'},
                          strategy='per_layer', eval_data=d.valid, profile=None)
    assert res.set_index('method').acc['senet'] > res.set_index('method').acc['random']


# ---------------------------------------------------------------- views, registry, comparison
def test_scores_views():
    s = Scores({'a': torch.arange(6.).view(2, 3), 'b': torch.ones(4)}, 'demo', dict(x=1))
    assert s.per_site().columns.tolist() == ['site', 'sum', 'mean', 'max'] and s.per_site()['sum'].tolist() == [15., 4.]
    assert s.to_df().value.tolist() == [15., 4.] and s.to_df().method.unique().tolist() == ['demo']
    assert s.to_df('channel').value.tolist() == [3., 12., 1., 1., 1., 1.]
    assert len(s.to_df('element')) == 10
    fct.test_fail(lambda: s.to_df('element', max_rows=3), contains='max_rows')
    fct.test_fail(lambda: s.to_df('pixel'), contains="'site', 'channel' or 'element'")
    assert isinstance(s, dict) and s.extra == dict(x=1)

def test_scores_plot(dead):
    pytest.importorskip('altair')
    net, batch = dead
    s = score(net, batch, 'taylor')
    spec = s.plot().to_dict()
    assert spec['mark']['type'] == 'rect'
    assert s.plot(site='relu') is not None

def test_registry_custom_method(nets):
    class Ones(Sensitivity):
        def __init__(self, value:float=1.): self.value = value
        def __call__(self, net, data): return Scores({k: torch.full(m.shape, self.value) for k, m in get_sites(net).items()}, 'ones')
    register_method('ones_test', Ones)
    try:
        net, batch = nets['tiny_net']
        assert 'ones_test' in list_methods()
        assert score(net, batch, 'ones_test', value=2.)['relu'].unique().tolist() == [2.]
    finally:
        from relu_explore import sensitivity
        sensitivity._METHODS.pop('ones_test')

def test_data_object_and_loader_inputs(nets):
    from relu_explore.data import digits_data
    d = digits_data(batch_size=128)
    net = relufy(tiny_net(), d.example(2))
    a = score(net, d, 'activation', max_batches=1)          # a `Data`: its validation loader
    b = score(net, d.valid, 'activation', max_batches=1)
    assert all(torch.equal(a[k], b[k]) for k in a)

def test_compare_methods_and_rank_correlation(absnet):
    net, batch = absnet
    before = _state(net)
    res = compare_methods(net, batch, budgets=[8, 32], methods=['random', 'taylor', 'ablation'], eval_data=abs_data(256, 1))
    _same_state(before, _state(net))
    assert res.columns.tolist() == ['method', 'budget', 'relus', 'keep_frac', 'acc', 'loss']
    assert res.budget.tolist() == [8, 32] * 3 and res.relus.tolist() == [8, 32] * 3
    t = res.set_index(['method', 'budget']).acc
    assert t['taylor', 32] == 1.0 and t['taylor', 32] > t['random', 32]
    pytest.importorskip('altair')
    from relu_explore.sensitivity import plot_comparison
    spec = plot_comparison(res).to_dict()
    assert spec['layer'][-1]['encoding']['x']['field'] == 'relus' and spec['layer'][-1]['encoding']['y']['field'] == 'acc'
    rc = rank_correlation({m: score(net, batch, m) for m in ['taylor', 'ablation', 'activation']})
    assert rc.shape == (3, 3) and rc.loc['taylor', 'ablation'] == pytest.approx(1.0)


# ---------------------------------------------------------------- 5. errors that name the fix
def test_errors(nets):
    net, (x, y) = nets['tiny_net']
    fct.test_fail(lambda: score(net, (x, y), 'tayler'), contains="Did you mean 'taylor'")
    fct.test_fail(lambda: score(net, (x, y), 'nope'), contains="Known methods: ['taylor'")
    fct.test_fail(lambda: score(tiny_net(), (x, y)), contains="call `net = relufy(model, example)`")
    fct.test_fail(lambda: score(net, (torch.randn(4, 3, 32, 32), y[:4])), contains="input_shape(net) = (1, 8, 8)")
    fct.test_fail(lambda: score(net, (x[0], y[:1])), contains="Add the batch dimension")
    fct.test_fail(lambda: score(net, (x.long(), y)), contains="pass float inputs")
    fct.test_fail(lambda: score(net, (x, y.float())), contains="integer tensor of shape (16,)")
    for m in ['taylor', 'ablation', 'deepreduce', 'snl', 'grad_x_act', 'conductance', 'feature_ablation', 'senet']:
        fct.test_fail(lambda: score(net, x, m), contains="needs labels")
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:0], y[:0]), batch_size=4)
    fct.test_fail(lambda: score(net, empty, 'taylor'), contains="empty DataLoader")
    fct.test_fail(lambda: score(net, None, 'taylor'), contains="needs data")
    fct.test_fail(lambda: score(net, (x, y), 'taylor', per_pixel=True), contains="its options are")
    fct.test_fail(lambda: score(net, (x, y), 'ablation', granularity='pixel'), contains="'site' or 'channel'")
    fct.test_fail(lambda: score(net, (x, y), 'senet', density=0), contains="in (0, 1]")
    fct.test_fail(lambda: score(net, (x, y), 'taylor', max_batches=0), contains="positive number of batches")
    fct.test_fail(lambda: Scores({'a': torch.ones(2)}, 'taylor').per_layer_profile(), contains="method='senet'")
    fct.test_fail(lambda: compare_methods(net, (x, y)), contains="exactly one")
    fct.test_fail(lambda: compare_methods(net, (x, y), budgets=[10], methods=['nope']), contains="Known methods")
    fct.test_fail(lambda: rank_correlation({'a': {}}), contains="at least two")
    fct.test_fail(lambda: rank_correlation({'a': {'s': torch.ones(1)}, 'b': {'t': torch.ones(1)}}), contains="other sites")


@pytest.mark.cuda
def test_cuda_net_scores_on_cpu():
    if not torch.cuda.is_available(): pytest.skip('no CUDA GPU')
    x, y = _batch((1, 8, 8))
    net = relufy(tiny_net(), x[:2]).cuda()
    for m in ['taylor', 'grad_x_act', 'feature_ablation', 'ablation', 'senet', 'activation', 'snl']:
        s = score(net, (x, y), m)                           # CPU batches are moved to the net's device
        assert all(v.device.type == 'cpu' for v in s.values()) and {k: tuple(v.shape) for k, v in s.items()} == _shapes(net)
