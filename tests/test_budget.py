"""Allocation strategies: exact budgets, shapes, determinism, tie rule, known answers, errors.

Property loops (seeded):
* `test_properties_small`: 1,000 random (scores, budget) pairs on a 7-site set of ResNet-like
  shapes (1,132 elements; channel costs 64, 16 and 9, so whole channels leave gaps): global,
  per_layer and channel (exact=False) on every pair, determinism (a second call) on every 10th.
* `test_properties_resnet18_structure`: 200 pairs on the 17 ResNet18 sites with fewer channels and
  smaller maps (8,704 elements), same checks.
* `test_global_resnet18_property`: random budgets on the full CIFAR ResNet18 sites (557,056
  elements), scores redrawn every 10 budgets (half of the score sets with heavy ties): 100 budgets
  in the default run, 1,000 in `test_global_resnet18_property_1000` (marked slow, 15-30 s on a busy
  2-core machine).
All tests here run torch on one thread: the tensors are small, and on a shared 2-core machine a
second torch thread waiting for a time slice makes every op (score generation, checks) slower.
"""
import math, warnings
import numpy as np, pandas as pd, pytest, torch
from relu_explore.budget import (allocate, list_strategies, register_strategy, masks_summary, deepreduce_candidates,
                                 Allocation)

def resnet18_shapes(widths=(64, 128, 256, 512), sizes=(32, 16, 8, 4)):
    "Site names and mask shapes of a CIFAR ResNet18 (stem + 8 BasicBlocks x 2 ReLUs)."
    shapes = {'relu': (widths[0], sizes[0], sizes[0])}
    for i, (c, s) in enumerate(zip(widths, sizes), 1):
        for b in range(2): shapes[f'layer{i}.{b}.relu'] = shapes[f'layer{i}.{b}.relu_1'] = (c, s, s)
    return shapes

R18 = resnet18_shapes()
SMALL17 = resnet18_shapes(widths=(4, 8, 16, 32), sizes=(16, 8, 4, 2))   # channel costs 256, 64, 16, 4
SMALL = {'relu': (4, 8, 8), 'layer1.0.relu': (4, 8, 8), 'layer1.0.relu_1': (4, 8, 8), 'layer2.0.relu': (8, 4, 4),
         'layer2.0.relu_1': (8, 4, 4), 'layer3.0.relu': (6, 3, 3), 'layer3.0.relu_1': (6, 3, 3)}

def rand_scores(shapes, gen, ties):
    "Uniform scores, or integer scores in 0..3 (many ties) when `ties`."
    if ties: return {k: torch.randint(0, 4, s, generator=gen).float() for k, s in shapes.items()}
    return {k: torch.rand(s, generator=gen) for k, s in shapes.items()}

def nsum(masks): return sum(int(m.sum()) for m in masks.values())
def flat(d): return torch.cat([v.reshape(-1) for v in d.values()])

def reachable_channel_counts(shapes):
    "All counts reachable with whole channels, by a plain boolean subset-sum DP (independent of the library)."
    total = sum(math.prod(s) for s in shapes.values())
    r = np.zeros(total + 1, bool); r[0] = True
    for s in shapes.values():
        cost = math.prod(s[1:])
        for _ in range(s[0]): r[cost:] |= r[:-cost].copy()
    return np.flatnonzero(r)

def test_r18_total(): assert sum(math.prod(s) for s in R18.values()) == 557_056 and len(R18) == 17

def test_registry():
    assert {'global', 'per_layer', 'channel', 'layer', 'deepreduce'} <= set(list_strategies())

def check_properties(shapes, n, seed):
    gen = torch.Generator().manual_seed(seed)
    total = sum(math.prod(s) for s in shapes.values())
    reach = reachable_channel_counts(shapes)
    bgen = np.random.default_rng(seed)
    for it in range(n):
        sc = rand_scores(shapes, gen, ties=it % 2 == 1)
        b = int(bgen.integers(1, total + 1))
        res = {}
        for strat in ('global', 'per_layer'):
            a = res[strat] = allocate(sc, budget=b, strategy=strat)
            assert nsum(a) == b == a.kept and a.exact
            if it % 10 == 0:                                         # shapes, dtype, 0/1 values, determinism
                assert {k: tuple(m.shape) for k, m in a.items()} == shapes
                assert all(m.dtype == torch.float32 and bool(((m == 0) | (m == 1)).all()) for m in a.values())
                again = allocate(sc, budget=b, strategy=strat)
                assert all(torch.equal(a[k], again[k]) for k in a)
        f, keep = flat(sc), flat(res['global']).bool()             # global: kept scores dominate removed ones
        if b < total: assert f[keep].min() >= f[~keep].max()
        for k, m in res['per_layer'].items():                        # per_layer: top-k within each site
            s, mk = sc[k].flatten(), m.flatten().bool()
            if 0 < mk.sum() < mk.numel(): assert s[mk].min() >= s[~mk].max()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')                          # budgets below the cheapest channel keep 0 and warn
            c = allocate(sc, budget=b, strategy='channel', exact=False)
            c2 = allocate(sc, budget=b, strategy='channel', exact=False) if it % 10 == 0 else c
        assert nsum(c) == c.kept <= b
        assert c.kept == reach[reach <= b].max()                     # the largest reachable count not above b
        if it % 10 == 0:
            assert all(bool((m == m[:, :1, :1]).all()) for m in c.values())   # whole channels
            assert {k: tuple(m.shape) for k, m in c.items()} == shapes
            assert all(torch.equal(c[k], c2[k]) for k in c)

def test_properties_small(): check_properties(SMALL, 1000, 0)

def test_properties_resnet18_structure(): check_properties(SMALL17, 200, 3)

def check_global_resnet18(n):
    gen = torch.Generator().manual_seed(1)
    bgen = np.random.default_rng(1)
    for it in range(n):
        if it % 10 == 0: sc = rand_scores(R18, gen, ties=(it // 10) % 2 == 1)
        b = int(bgen.integers(1, 557_057))
        a = allocate(sc, budget=b)
        assert nsum(a) == b
        if it % 10 == 0:                                             # shapes, determinism, dominance (costlier checks)
            assert {k: tuple(m.shape) for k, m in a.items()} == R18
            again = allocate(sc, budget=b)
            assert all(torch.equal(a[k], again[k]) for k in a)
            f, keep = flat(sc), flat(a).bool()
            assert f[keep].min() >= f[~keep].max()

def test_global_resnet18_property(): check_global_resnet18(100)

@pytest.mark.slow
def test_global_resnet18_property_1000(): check_global_resnet18(1000)

def test_per_layer_channel_resnet18():
    gen = torch.Generator().manual_seed(2)
    bgen = np.random.default_rng(2)
    for it in range(20):
        sc = rand_scores(R18, gen, ties=it % 2 == 1)
        b = int(bgen.integers(1, 557_057))
        assert nsum(allocate(sc, budget=b, strategy='per_layer')) == b
        c = allocate(sc, budget=b, strategy='channel', exact=False)
        assert nsum(c) == c.kept == b // 16 * 16                     # channel costs 1024/256/64/16: every multiple of 16

def test_tie_rule_all_equal():
    "All-equal scores: the first `budget` elements in site order, row-major within a site."
    sc = {k: torch.zeros(s) for k, s in R18.items()}
    a = allocate(sc, budget=70_000)
    assert int(a['relu'].sum()) == 65_536
    first = a['layer1.0.relu'].flatten()
    assert first[:4464].all() and not first[4464:].any()
    assert all(int(a[k].sum()) == 0 for k in list(R18)[2:])
    p = allocate(sc, budget=100, strategy='per_layer', profile={k: 1.0 for k in R18})
    assert all(bool(m.flatten()[:int(m.sum())].all()) for m in p.values())   # within a site: lowest indices first

def test_global_known_answer():
    sc = {'a': torch.tensor([[0.1, 0.9], [0.5, 0.3]]), 'b': torch.tensor([0.8, 0.2, 0.5])}
    a = allocate(sc, budget=3)
    torch.testing.assert_close(a['a'], torch.tensor([[0., 1.], [1., 0.]]))
    torch.testing.assert_close(a['b'], torch.tensor([1., 0., 0.]))        # the 0.5 tie goes to the earlier site 'a'
    assert isinstance(a, Allocation) and a.strategy == 'global' and a.budget == 3

def test_per_layer_known_answer():
    sc = {'a': torch.arange(10.), 'b': torch.arange(10.), 'c': torch.arange(20.)}
    a = allocate(sc, budget=12, strategy='per_layer', profile={'a': 1., 'b': 1., 'c': 2.})
    assert a.info['counts'] == {'a': 3, 'b': 3, 'c': 6}
    torch.testing.assert_close(a['a'], (torch.arange(10) >= 7).float())
    f = allocate(sc, budget=12, strategy='per_layer', profile={'a': 1., 'b': 1., 'c': 1.}, profile_mode='fraction')
    assert f.info['counts'] == {'a': 3, 'b': 3, 'c': 6}                  # equal fractions: counts follow sizes
    cap = allocate(sc, budget=25, strategy='per_layer', profile={'a': 10., 'b': 1., 'c': 1.})
    assert cap.info['counts'] == {'a': 10, 'b': 7, 'c': 8}               # 'a' capped; 7.5 + 7.5 floored, remainder to the largest site
    d = allocate(sc, budget=20, strategy='per_layer')                    # default profile = mean score: 4.5, 4.5, 9.5
    assert d.info['counts'] == {'a': 5, 'b': 4, 'c': 11}                 # 4.86, 4.86, 10.27 floored; +1 to 'c' (largest), then 'a'

def test_channel_layer_known_answer():
    sc = {'a': torch.tensor([[[1., 1.]], [[5., 5.]], [[2., 2.]]]), 'b': torch.tensor([[[3.]], [[0.]]])}   # (3,1,2), (2,1,1)
    c = allocate(sc, budget=3, strategy='channel')
    torch.testing.assert_close(c['a'][:, 0, 0], torch.tensor([0., 1., 0.]))
    torch.testing.assert_close(c['b'].flatten(), torch.tensor([1., 0.]))
    c = allocate(sc, budget=5, strategy='channel')                       # 5 = 2 + 2 + 1: the two best channels of 'a' + the best of 'b'
    torch.testing.assert_close(c['a'][:, 0, 0], torch.tensor([0., 1., 1.]))
    with pytest.raises(ValueError, match="6 \\(below\\) and 8 \\(above\\)"): allocate(sc, budget=7, strategy='layer')
    l = allocate(sc, budget=7, strategy='layer', exact=False)
    assert l.kept == 6 and not l.exact and l.info['reachable_above'] == 8
    assert int(l['a'].sum()) == 6 and int(l['b'].sum()) == 0

def test_channel_repair():
    "Greedy takes the most important (costly) channel and then cannot finish; the repair still hits the budget."
    sc = {'big': torch.full((1, 5), 9.), 'small': torch.tensor([[1., 1., 1.], [2., 2., 2.]])}   # channel costs 5, 3, 3
    c = allocate(sc, budget=6, strategy='channel')
    assert c.kept == 6 and int(c['big'].sum()) == 0
    assert allocate(sc, budget=8, strategy='channel')['big'].sum() == 5

def test_channel_1d_sites():
    sc = {'fc': torch.tensor([0.3, 0.1, 0.9])}
    torch.testing.assert_close(allocate(sc, budget=2, strategy='channel')['fc'], torch.tensor([1., 0., 1.]))

def test_channel_exact_error_message():
    sc = {k: torch.rand(s) for k, s in R18.items()}
    with pytest.raises(ValueError) as e: allocate(sc, budget=50_001, strategy='channel')
    msg = str(e.value)
    assert '50,000 (below) and 50,016 (above)' in msg and 'exact=False' in msg and "strategy='global'" in msg

def test_deepreduce_published_counts():
    "DeepReDuce's C100_230K and C100_115K ResNet18 models (S1 culled first, then S4; bottom thinning)."
    sc = {k: torch.rand(s) for k, s in R18.items()}
    crit = {'S1': 0., 'S4': 1., 'S2': 2., 'S3': 3.}
    a = allocate(sc, budget=229_376, strategy='deepreduce', criticality=crit)
    assert a.info['culled'] == ['S1'] and not a.info['thinned']
    b = allocate(sc, budget=114_688, strategy='deepreduce', criticality=crit)
    assert b.info['thinned'] and sorted(k for k in b if b[k].sum() > 0) == sorted(
        f'layer{i}.{j}.relu' for i in (2, 3, 4) for j in (0, 1))
    c = allocate(sc, budget=100_000, strategy='deepreduce', criticality=crit, exact=False)
    assert c.kept == 98_304 and c.info['culled'] == ['S1', 'S4']          # S2 and S3 thinned
    df = deepreduce_candidates(sc, criticality=crit)
    assert len(df) == 10 and df.relus.iloc[0] == 557_056 and df.relus.iloc[-1] == 0
    tab = pd.DataFrame({'site': list(R18), 'stage': ['S1'] * 5 + ['S2'] * 4 + ['S3'] * 4 + ['S4'] * 4})
    assert allocate(sc, budget=114_688, strategy='deepreduce', criticality=crit, stages=tab).kept == 114_688

def test_deepreduce_custom_thin():
    sc = {k: torch.rand(s) for k, s in R18.items()}
    a = allocate(sc, budget=557_056 - 65_536, strategy='deepreduce', thin=['layer1.0.relu'])
    assert a.info['thinned'] and a['layer1.0.relu'].sum() == 0

def test_keep_frac_and_summary():
    sc = {k: torch.rand(s) for k, s in SMALL17.items()}
    a = allocate(sc, keep_frac=0.3, strategy='per_layer')
    assert a.kept == round(0.3 * 8704)
    df = masks_summary(a)
    assert list(df.columns) == ['site', 'total', 'kept', 'keep_frac'] and df.kept.sum() == a.kept
    assert np.allclose(df.keep_frac, df.kept / df.total)

def test_register_strategy():
    @register_strategy('_first_k')
    def first_k(scores, budget, exact=True, offset=0):
        keep = torch.zeros(sum(v.numel() for v in scores.values())); keep[offset:offset + budget] = 1
        sizes = [v.numel() for v in scores.values()]
        return {k: p.view(v.shape) for (k, v), p in zip(scores.items(), keep.split(sizes))}
    try:
        a = allocate({'x': torch.rand(4), 'y': torch.rand(2)}, budget=3, strategy='_first_k', offset=2)
        torch.testing.assert_close(a['x'], torch.tensor([0., 0., 1., 1.]))
        with pytest.raises(ValueError, match="takes no option 'profile'"):
            allocate({'x': torch.rand(4)}, budget=1, strategy='_first_k', profile={})
    finally:
        from relu_explore import budget as B
        B._STRATEGIES.pop('_first_k', None)

@pytest.mark.parametrize('kw,msg', [
    (dict(budget=0), 'at least 1'),
    (dict(budget=-5), 'at least 1'),
    (dict(budget=10_000), 'total of 8,704'),
    (dict(budget=100.0), 'keep_frac='),
    (dict(), 'exactly one of'),
    (dict(budget=10, keep_frac=0.5), 'exactly one of'),
    (dict(keep_frac=0.0), '(0, 1]'),
    (dict(budget=10, strategy='topk'), "'global'"),
    (dict(budget=10, strategy='per_layer', profile={'relu': 1.}), 'missing site'),
    (dict(budget=10, strategy='global', profile={}), "takes no option"),
])
def test_errors(kw, msg):
    sc = {k: torch.rand(s) for k, s in SMALL17.items()}
    with pytest.raises(ValueError) as e: allocate(sc, **kw)
    assert msg in str(e.value), str(e.value)

def test_score_errors():
    with pytest.raises(ValueError, match='scores is empty'): allocate({}, budget=1)
    with pytest.raises(ValueError, match='not a Tensor'): allocate({'a': np.ones(3)}, budget=1)
    with pytest.raises(ValueError, match='nan_to_num'): allocate({'a': torch.tensor([1., float('nan')])}, budget=1)
    with pytest.raises(ValueError, match='must be a dict'): allocate([torch.ones(3)], budget=1)

def test_scores_untouched():
    sc = {k: torch.rand(s) for k, s in SMALL17.items()}
    before = {k: v.clone() for k, v in sc.items()}
    for s in ('global', 'per_layer'): allocate(sc, budget=1000, strategy=s)
    assert all(torch.equal(sc[k], before[k]) for k in sc)

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_same_as_cpu():
    sc = {k: torch.rand(s) for k, s in R18.items()}
    for s in ('global', 'per_layer'):
        cpu, gpu = allocate(sc, budget=12_345, strategy=s), allocate({k: v.cuda() for k, v in sc.items()}, budget=12_345, strategy=s)
        assert all(gpu[k].is_cuda and torch.equal(cpu[k], gpu[k].cpu()) for k in sc)

def test_end_to_end_cifar_resnet18(tmp_path):
    "On the real relufied CIFAR ResNet18: site names/shapes as assumed above, relu_count == budget, masks save."
    from relu_explore.models import cifar_resnet18
    from relu_explore.sites import relufy, get_masks, set_masks, relu_count, site_table, save_masks, load_masks
    net = relufy(cifar_resnet18(), torch.randn(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in get_masks(net).items()} == R18
    sc = {k: torch.rand(s) for k, s in R18.items()}
    for strat in ('global', 'per_layer', 'channel'):
        set_masks(net, allocate(sc, budget=50_000, strategy=strat))
        assert relu_count(net) == 50_000
    crit = {'S1': 0., 'S4': 1., 'S2': 2., 'S3': 3.}
    a = allocate(sc, budget=114_688, strategy='deepreduce', stages=site_table(net), criticality=crit)
    set_masks(net, a)
    assert relu_count(net) == 114_688
    save_masks(a, tmp_path / 'm.safetensors')                  # one buffer per mask (safetensors refuses shared memory)
    assert all(torch.equal(v, a[k]) for k, v in load_masks(tmp_path / 'm.safetensors').items())

def test_deepreduce_thinning_wrn_22_8_second_bn_relu_of_each_block():
    "Bottom thinning on the relufied pre-activation WRN-22-8 drops `relu2` of all nine blocks and nothing else."
    from relu_explore.models import wrn_22_8
    from relu_explore.sites import relufy, get_masks, site_table
    net = relufy(wrn_22_8(), torch.randn(2, 3, 32, 32))
    ones = {k: torch.ones(v.shape) for k, v in get_masks(net).items()}
    tab = site_table(net)
    assert dict(zip(tab.site, tab.stage))['layer2.0.relu1'] == 'S1'      # a downsampling block straddles two stages
    df = deepreduce_candidates(ones, stages=tab, criticality={'S1': 0., 'S2': 1., 'S3': 2.})
    thinned_all = df[(df.culled.map(len) == 0) & df.thinned].iloc[0]
    dropped = [k for k in ones if k not in thinned_all.sites]
    assert dropped == [f'layer{i}.{j}.relu2' for i in (1, 2, 3) for j in (0, 1, 2)]
    assert thinned_all.relus == 1_392_640 - sum(ones[k].numel() for k in dropped)
    top = deepreduce_candidates(ones, stages=tab, criticality={'S1': 0., 'S2': 1., 'S3': 2.}, thin='top')
    kept = top[(top.culled.map(len) == 0) & top.thinned].iloc[0].sites
    assert [k for k in ones if k not in kept] == [f'layer{i}.{j}.relu1' for i in (1, 2, 3) for j in (0, 1, 2)]

def test_deepreduce_reshaped_published_c100_counts():
    "The published DeepReDuce C100 points below 115K ReLUs (ALGORITHMS.md §1.6) are candidates of the reshaped ResNet18s, count for count."
    from relu_explore.budget import deepreduce_reshaped
    from relu_explore.models import cifar_resnet18, reshape_model
    from relu_explore.sites import relufy, get_masks, relu_total
    base = cifar_resnet18(num_classes=100)
    variants = {}
    for r in (1., .5):                                   # width before resolution: the recipe's order, so ties go to alpha
        for a in (1., .5):
            net = relufy(reshape_model(base, a, r), torch.randn(2, 3, 32, 32))
            variants[(a, r)] = {k: tuple(v.shape) for k, v in get_masks(net).items()}
            assert relu_total(net) == 557_056 * a * r * r
    df = deepreduce_reshaped(variants, criticality={'S1': 0., 'S4': 1., 'S2': 2., 'S3': 3.})
    idx = df.set_index(['alpha', 'rho', 'culled', 'thinned']).relus
    published = {'C100_57K': (.5, 1., ('S1',), True, 57_344), 'C100_49K': (.5, 1., ('S1', 'S4'), True, 49_152),
                 'C100_29K': (1., .5, ('S1',), True, 28_672), 'C100_14K': (.5, .5, ('S1',), True, 14_336),
                 'C100_12K': (.5, .5, ('S1', 'S4'), True, 12_288), 'C100_115K': (1., 1., ('S1',), True, 114_688)}
    for name, (a, r, cu, th, n) in published.items(): assert idx[(a, r, cu, th)] == n, name
    fits = df[df.relus <= 57_344]
    best = fits.loc[fits.relus.idxmax()]
    assert (best.alpha, best.rho, best.culled, best.thinned) == (.5, 1., ('S1',), True)
