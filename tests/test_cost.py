"PI cost model: MAC counts on CIFAR ResNet18, the figures quoted in PI_COST.md, 3PC traffic, networks, registry, errors."
import math, pytest, torch, torch.nn as nn
import numpy as np
import fastcore.test as fct
from relu_explore.cost import (pi_cost, PICost, cost_table, count_macs, list_protocols, list_networks, Protocol,
                               register_protocol, get_protocol, COEF_UNITS, NETWORKS, _PROTOCOLS)
from relu_explore.sites import relufy, get_masks, set_masks, relu_count, site_table, get_sites
from relu_explore.models import cifar_resnet18

R18_SHAPES = [(64, 32, 32)] * 5 + [(128, 16, 16)] * 4 + [(256, 8, 8)] * 4 + [(512, 4, 4)] * 4

def masks_with(budget, shapes=R18_SHAPES, seed=0):
    "Masks of the given site shapes with exactly `budget` ones, spread at random."
    n = [int(np.prod(s)) for s in shapes]
    flat = torch.zeros(sum(n))
    flat[torch.randperm(sum(n), generator=torch.Generator().manual_seed(seed))[:budget]] = 1
    return {f"s{i}": v.view(s) for i, (v, s) in enumerate(zip(flat.split(n), shapes))}

def hook_macs(model, x):
    "Independent count: forward hooks on Conv2d/Linear, MACs = output elements x input channels / groups x kernel area."
    tot = {'conv': 0, 'linear': 0}
    def conv(m, i, o): tot['conv'] += o[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    def lin(m, i, o): tot['linear'] += o[0].numel() * m.in_features
    hs = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else lin)
          for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad(): model(x[:1])
    for h in hs: h.remove()
    return tot

@pytest.fixture(scope='module')
def r18():
    torch.manual_seed(0)
    return cifar_resnet18().eval()

@pytest.fixture(scope='module')
def r18_macs(r18): return count_macs(r18, (3, 32, 32))

@pytest.fixture(scope='module')
def r18_net(r18): return relufy(r18, torch.randn(2, 3, 32, 32))

@pytest.fixture
def net(r18_net):
    "The shared relufied ResNet18 with all masks at 1 again after the test."
    yield r18_net
    set_masks(r18_net, {k: torch.ones_like(v) for k, v in get_masks(r18_net).items()})

# ---------------------------------------------------------------- MACs
def test_count_macs_cifar_resnet18(r18, r18_macs):
    ref = hook_macs(r18, torch.zeros(1, 3, 32, 32))
    assert r18_macs['total'] == ref['conv'] + ref['linear']
    # PI_COST.md's M = 555.4 M counts the convolutions; the 512x10 classifier adds 5,120 MACs
    assert ref['linear'] == 512 * 10
    assert abs(ref['conv'] - 555.4e6) / 555.4e6 < 1e-3
    assert abs(r18_macs['total'] - 555.4e6) / 555.4e6 < 1e-3
    assert sum(r18_macs['per_module'].values()) == r18_macs['total']
    assert sum(r18_macs['per_op'].values()) == r18_macs['total']

def test_count_macs_relufied_net_matches_model(net, r18_macs):
    assert count_macs(net)['total'] == r18_macs['total']   # input shape recorded by relufy
    set_masks(net, {k: torch.zeros_like(v) for k, v in get_masks(net).items()})
    assert count_macs(net)['total'] == r18_macs['total']   # masks change no MAC

def _check_tv(name):
    tv = pytest.importorskip('torchvision')
    m = tv.models.get_model(name, weights=None)
    ref = hook_macs(m, torch.zeros(1, 3, 64, 64))
    assert count_macs(m, (3, 64, 64))['total'] == ref['conv'] + ref['linear'], name

@pytest.mark.parametrize('name', ['mobilenet_v2', 'squeezenet1_0'])
def test_count_macs_other_architectures(name): _check_tv(name)

@pytest.mark.slow
@pytest.mark.parametrize('name', ['vgg11', 'densenet121', 'regnet_x_400mf', 'resnext50_32x4d'])
def test_count_macs_other_architectures_slow(name): _check_tv(name)

def test_count_macs_restores_mode_and_handles_batchnorm_train():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(4), nn.Linear(4, 2))
    m.train(); m[1].eval()
    out = count_macs(m, (3, 5, 5))   # batch of 1 through BatchNorm1d would fail in train mode
    assert out['total'] == 9 * 4 * 27 + 4 * 2
    assert m.training and not m[1].training and m[4].training

# ---------------------------------------------------------------- net input
def test_pi_cost_of_relufied_cifar_resnet18(net, r18_macs):
    tab = site_table(net)
    assert [tuple(int(i) for i in s.strip('()').split(',')) for s in tab['shape']] == R18_SHAPES
    c = pi_cost(net)
    assert c.relus == relu_count(net) == 557_056
    assert c.macs == r18_macs['total']
    assert c.per_site.site.tolist() == tab.site.tolist()
    # same costs as the equivalent masks dict with the same MACs
    d = pi_cost(get_masks(net), macs=r18_macs)
    for f in ['online_ms', 'offline_ms', 'comm_offline_mb']:
        assert math.isclose(getattr(c, f), getattr(d, f), rel_tol=1e-12)

def test_cost_table_with_net(net):
    m = get_masks(net)
    set_masks(net, {k: (torch.rand_like(v) < 0.1).float() for k, v in m.items()})
    t = cost_table(net, network='wan')
    assert t.protocol.tolist() == [p for p, q in _PROTOCOLS.items() if q.usable]
    assert (t.relus == relu_count(net)).all() and (t.network == 'wan').all()

# ---------------------------------------------------------------- DELPHI figures of PI_COST.md
# §1.1: (ReLUs, MACs, client online total s, offline ReLU phase s, offline linear phase s)
G23 = {'ResNet-18/CIFAR-10': (557_056, 555.4e6, 14.35, 31.19, 301.0),
       'ResNet-32/CIFAR-10': (303_104, 68.9e6, 8.29, 15.93, 42.3),
       'VGG-16/CIFAR-10': (284_672, 313.2e6, 6.96, 15.48, 237.3),
       'ResNet-18/TinyImageNet': (2_228_224, 2221.7e6, 54.92, 128.83, 1116.3),
       'ResNet-32/TinyImageNet': (1_212_416, 275.4e6, 32.88, 67.20, 120.4),
       'VGG-16/TinyImageNet': (1_114_112, 1252.8e6, 27.55, 60.60, 577.5)}

@pytest.mark.parametrize('name', list(G23))
def test_delphi_online_matches_g23_logs(name):
    R, M, online_s, relu_off_s, _ = G23[name]
    c = pi_cost({'all': torch.ones(R)}, 'delphi', macs=M, per_site=False)
    assert abs(c.online_ms / 1000 - online_s) / online_s < 0.10
    assert abs(c.offline_relu_ms / 1000 - relu_off_s) / relu_off_s < 0.10   # the ReLU offline phase alone

def test_delphi_resnet18_full_and_worked_example():
    M = 555.4e6
    full = pi_cost(masks_with(557_056), 'delphi', macs=M)
    assert abs(full.online_ms - 14_350) / 14_350 < 0.10
    assert abs(full.offline_ms - (31_190 + 301_000)) / 332_190 < 0.10
    assert abs(full.comm_offline_relu_mb - 8_850) / 8_850 < 0.01         # 8.85 GB of garbled circuits (§1.3)
    c = pi_cost(masks_with(50_000), 'delphi', macs=M)                    # §5 worked example
    assert abs(c.online_ms - 1_900) / 1_900 < 0.10
    assert abs(c.online_relu_ms - 1_250) / 1_250 < 0.10 and abs(c.online_linear_ms - 670) / 670 < 0.10
    assert abs(c.offline_relu_ms - 2_800) / 2_800 < 0.10 and abs(c.offline_linear_ms - 289_000) / 289_000 < 0.10
    assert abs(c.comm_offline_mb - 800) / 800 < 0.10
    # 557K -> 50K ReLUs lowers online latency about 7x, not the 11x of a ReLU-only model
    assert 6 < full.online_ms / c.online_ms < 8.5
    assert 557_056 / 50_000 > 11
    assert math.isnan(c.comm_online_mb) and 'comm_offline_mb' in c.lower_bound

def test_delphi_gc_transfer_over_500mbps():
    "§1.3: 15.9 KB/ReLU over 500 Mbps is ~0.25 ms per ReLU, ~142 s per ResNet-18/CIFAR inference."
    c = pi_cost({'a': torch.ones(557_056)}, 'delphi', network=dict(bandwidth_mbps=500, rtt_ms=0), macs=555.4e6)
    assert abs(c.offline_network_ms / 557_056 - 0.25) / 0.25 < 0.05
    assert abs(c.offline_network_ms / 1000 - 142) / 142 < 0.05

# ---------------------------------------------------------------- 3PC traffic (§2)
@pytest.mark.parametrize('proto,dense_b', [('porthos', 536), ('securenn', 704)])
def test_3pc_dense_layer_bytes(proto, dense_b):
    c = pi_cost(masks_with(557_056), proto)
    assert math.isclose(c.comm_online_relu_mb * 1e6 / 557_056, dense_b, rel_tol=1e-12)
    assert math.isclose(c.per_site.comm_online_mb.sum(), c.comm_online_relu_mb, rel_tol=1e-12)

@pytest.mark.parametrize('proto,drelu_b', [('porthos', 496), ('securenn', 664)])
def test_3pc_partial_and_removed_layers(proto, drelu_b):
    keep = torch.zeros(128, 16, 16); keep.view(-1)[:1000] = 1
    m = {'dense': torch.ones(64, 32, 32), 'gone': torch.zeros(256, 8, 8), 'part': keep}
    c = pi_cost(m, proto)
    ps = c.per_site.set_index('site')
    assert ps.loc['gone', 'comm_online_mb'] == 0 and ps.loc['gone', 'act_mb'] == 0     # identity layer: 0 bytes
    exp_part = 1000 * (drelu_b + 16) + 128 * 16 * 16 * 24                                # DReLU + 2R + 3A elements
    assert math.isclose(ps.loc['part', 'comm_online_mb'] * 1e6, exp_part, rel_tol=1e-12)
    assert math.isclose(ps.loc['part', 'act_mb'] * 1e6, 128 * 16 * 16 * 24, rel_tol=1e-12)
    assert c.relu_layers == 2 and c.act_elements == 64 * 32 * 32 + 128 * 16 * 16
    assert math.isnan(c.online_ms) and math.isnan(c.offline_ms)    # no latency is sourced for 3PC
    # removing a whole layer saves more than removing the same number of ReLUs spread over layers
    spread = pi_cost({'a': (torch.arange(4096) % 2 == 0).float(), 'b': (torch.arange(4096) % 2 == 0).float()}, proto)
    packed = pi_cost({'a': torch.ones(4096), 'b': torch.zeros(4096)}, proto)
    assert spread.relus == packed.relus and packed.comm_online_mb < spread.comm_online_mb

# ---------------------------------------------------------------- networks
def test_network_terms():
    m = masks_with(50_000)
    base = pi_cost(m, 'porthos')
    for nw in ['lan', 'wan']:
        bw, rtt = NETWORKS[nw]['bandwidth_mbps'], NETWORKS[nw]['rtt_ms']
        c = pi_cost(m, 'porthos', network=nw)
        assert c.network == nw
        assert math.isclose(c.online_network_ms, 8e-3 * base.comm_online_relu_mb * 1e6 / bw + 17 * rtt, rel_tol=1e-12)
        assert 'online_ms' in c.lower_bound   # the 3PC compute time is unknown
    assert list_networks().network.tolist() == list(NETWORKS)
    d = pi_cost(m, 'delphi', network='wan', macs=555.4e6)
    nd = pi_cost(m, 'delphi', macs=555.4e6)
    assert math.isclose(d.online_ms - nd.online_ms, 17 * 40, rel_tol=1e-9)   # d_on unknown: only RTTs are added online
    assert d.offline_ms > nd.offline_ms

def test_cost_grows_with_budget():
    prev = None
    for b in [0, 1, 1000, 50_000, 557_056]:
        c = pi_cost(masks_with(b), 'delphi', macs=555.4e6, network='lan', per_site=False)
        if prev is not None: assert c.online_ms > prev.online_ms and c.offline_ms > prev.offline_ms
        prev = c
    z = pi_cost(masks_with(0), 'delphi', macs=555.4e6)
    assert z.online_relu_ms == 0 and z.offline_relu_ms == 0 and z.online_ms == z.online_linear_ms

def test_only_counts_matter_not_positions():
    a, b = masks_with(12_345, seed=1), masks_with(12_345, seed=2)
    b = {k: v.flip(-1) for k, v in b.items()}
    ca, cb = pi_cost(a, 'delphi', macs=1e6), pi_cost(b, 'delphi', macs=1e6)
    assert ca.relus == cb.relus == 12_345 and math.isclose(ca.online_ms, cb.online_ms, rel_tol=1e-12)

# ---------------------------------------------------------------- registry and outputs
def test_list_protocols_marks_unsourced():
    lp = list_protocols().set_index('protocol')
    assert not lp.loc['gazelle', 'sourced'] and 'Protocol(' in lp.loc['gazelle', 'sources']
    assert not lp.loc['cryptflow2', 'sourced']          # anchored: every coefficient assumed
    for p in ['delphi', 'porthos', 'securenn', 'cheetah']: assert lp.loc[p, 'sourced']
    ll = list_protocols(long=True)
    cf = ll[ll.protocol == 'cryptflow2'].set_index('coefficient')
    assert set(cf.status) == {'assumed'} and 'anchored' in cf.loc['l_on', 'source'] and 'ANCHORED' in lp.loc['cryptflow2', 'description']
    ch = ll[ll.protocol == 'cheetah'].set_index('coefficient')
    assert ch.loc['d_on', 'status'] == 'sourced' and 'measured' in ch.loc['d_on', 'source']
    assert (ch.drop('d_on').status == 'assumed').all()
    ll = list_protocols(long=True)
    assert set(ll.columns) >= {'protocol', 'coefficient', 'value', 'unit', 'status', 'sourced', 'source'}
    d = ll[ll.protocol == 'delphi'].set_index('coefficient')
    assert d.loc['a_on', 'value'] == 0.025 and 'Garimella' in d.loc['a_on', 'source'] and d.loc['a_on', 'sourced']
    assert d.loc['d_on', 'status'] == 'unknown' and d.loc['rounds', 'status'] == 'assumed'

def test_register_protocol_and_use_by_name():
    p = Protocol('test-measured', dict(a_on=0.01, b_on=0.0, a_off=0.0, b_off=0.0, d_on=0.001, e_on=0.0, d_off=0.0,
                                       l_on=0.0, l_off=0.0, c_on=0.0, rounds=2), sources=dict(a_on='unit test'))
    try:
        register_protocol(p)
        c = pi_cost(masks_with(1000), 'test-measured', network=dict(bandwidth_mbps=8, rtt_ms=5), macs=1e6)
        assert not c.lower_bound
        assert math.isclose(c.online_ms, 1000 * 0.01 + 1000 * 0.001 * 1e3 + 2 * 17 * 5, rel_tol=1e-12)
        assert 'test-measured' in cost_table(masks_with(1000), macs=1e6).protocol.tolist()
        fct.test_fail(lambda: register_protocol(p), contains='overwrite=True')
        register_protocol(p, overwrite=True)
    finally:
        _PROTOCOLS.pop('test-measured', None)

def test_picost_outputs():
    c = pi_cost(masks_with(50_000), 'delphi', macs=555.4e6)
    assert isinstance(c, PICost)
    df = c.to_df()
    assert df.shape[0] == 1 and {'online_ms', 'offline_ms', 'comm_online_mb', 'comm_offline_mb', 'macs'} <= set(df.columns)
    r = repr(c)
    assert 'delphi' in r and '50,000/557,056' in r and len(r.splitlines()) <= 5
    assert set(c.per_site.columns) >= {'site', 'total', 'kept', 'online_ms', 'comm_online_mb', 'act_mb'}
    assert math.isclose(c.per_site.offline_ms.sum(), c.offline_relu_ms, rel_tol=1e-12)
    assert pi_cost(masks_with(10), per_site=False).per_site is None

# ---------------------------------------------------------------- errors
def test_errors_name_the_fix():
    m = masks_with(100)
    fct.test_fail(lambda: pi_cost(m, 'bogus'), contains="known protocols are ['delphi'")
    fct.test_fail(lambda: pi_cost(m, 'gazelle'), contains='register_protocol')
    fct.test_fail(lambda: pi_cost(m, 'gazelle'), contains="Protocol('gazelle-measured'")
    fct.test_fail(lambda: pi_cost(m, network='satellite'), contains="use one of ['lan', 'wan']")
    fct.test_fail(lambda: pi_cost(m, network={'bw': 3}), contains="needs 'bandwidth_mbps'")
    fct.test_fail(lambda: pi_cost({'a': torch.tensor([0., 0.3, 1.])}), contains='0/1 tensors')
    fct.test_fail(lambda: pi_cost({'a': torch.tensor([0., 2.])}), contains='threshold soft masks')
    fct.test_fail(lambda: pi_cost({'a': 1}), contains='not a tensor')
    fct.test_fail(lambda: pi_cost(nn.Linear(2, 2)), contains='relufy')
    fct.test_fail(lambda: count_macs(nn.Linear(2, 2)), contains='input_shape=')
    fct.test_fail(lambda: Protocol('x', dict(a_on=float('nan'))), contains='finite number')
    fct.test_fail(lambda: cost_table(m, protocols=['gazelle']), contains='register_protocol')

def test_masks_without_macs_report_linear_unknown():
    c = pi_cost(masks_with(1000), 'delphi')
    assert math.isnan(c.macs) and math.isnan(c.online_linear_ms) and math.isnan(c.offline_linear_ms)
    assert c.online_relu_ms == 1000 * 0.025
    assert 'online_ms' in c.lower_bound and any('macs=' in n for n in c.notes)


# ---------------------------------------------------------------- anchored protocols (PI_COST.md §3.1)
@pytest.fixture(scope='module')
def r50():
    torchvision = pytest.importorskip('torchvision')
    return relufy(torchvision.models.resnet50().eval(), torch.zeros(1, 3, 224, 224))

def test_anchor_network_is_counted_not_typed(r50):
    from relu_explore.cost import RESNET50_ANCHOR
    assert (relu_count(r50), count_macs(r50)['total'], len(get_sites(r50))) == \
           (RESNET50_ANCHOR['relus'], RESNET50_ANCHOR['macs'], RESNET50_ANCHOR['relu_layers'])
    assert (RESNET50_ANCHOR['bandwidth_mbps'], RESNET50_ANCHOR['rtt_ms']) == \
           (NETWORKS['wan']['bandwidth_mbps'], NETWORKS['wan']['rtt_ms'])

@pytest.mark.parametrize('protocol,seconds,gb', [('cheetah', 150, 2.3), ('cryptflow2', 150 * 5.6, 2.3 * 12.9)])
def test_anchored_protocols_reproduce_the_quoted_resnet50_figures(r50, protocol, seconds, gb):
    c = pi_cost(r50, protocol, network='wan', per_site=False)
    assert abs(c.total_ms / 1000 - seconds) <= 0.1 * seconds, c
    assert abs(c.total_mb / 1000 - gb) <= 0.1 * gb, c
    assert not c.lower_bound and c.relus == 9_608_704

def test_cheetah_relu_traffic_is_the_spu_measurement():
    from relu_explore.cost import CHEETAH_RELU_MB
    from relu_explore.secure import MEASURED_PI
    assert get_protocol('cheetah').coefficients['d_on'] == CHEETAH_RELU_MB == MEASURED_PI['cheetah-measured']['coefficients']['d_on']

def test_anchored_cost_falls_with_relus_but_not_below_the_linear_part():
    full, tenth = (pi_cost(masks_with(n), 'cheetah', network='wan', macs=555.4e6, per_site=False) for n in (557_056, 55_706))
    assert tenth.online_relu_ms < full.online_relu_ms and tenth.total_mb < full.total_mb
    assert math.isclose(tenth.online_linear_ms, full.online_linear_ms, rel_tol=1e-12) and tenth.online_linear_ms > 0
