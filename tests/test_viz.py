"Charts of relu_explore.viz, checked through their Vega-Lite specs (`to_dict()`), plus saving and rendering."
import json, warnings
import numpy as np, pandas as pd, pytest, torch
import torch.nn as nn, torch.nn.functional as F
import fastcore.test as fct
import altair as alt
from relu_explore.sites import relufy, site_table, get_masks, set_masks
from relu_explore.viz import (chart_rows, plot_layers, plot_sensitivity, plot_site_heatmap, plot_frontier,
                              save_chart, enable_offline_rendering)

class Net(nn.Module):
    "One ReLU module called twice, a functional ReLU and a ReLU after the linear layer."
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Linear(6, 5)
        self.relu = nn.ReLU()
    def forward(self, x):
        x = self.relu(self.c1(x)); x = self.relu(self.c2(x)); x = F.relu(x + 1)
        return F.relu(self.fc(x.mean((2, 3))))

@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    net = relufy(Net(), torch.randn(2, 3, 8, 8))
    m = get_masks(net)
    g = torch.Generator().manual_seed(1)
    return set_masks(net, {s: (torch.rand(v.shape, generator=g) < 0.3).float() for s, v in m.items()})

def _data(spec, view): return pd.DataFrame(spec['datasets'][view.get('data', spec.get('data'))['name']])

# ---------------------------------------------------------------- plot_layers
def test_layers_from_real_site_table(net):
    tab = site_table(net)
    d = plot_layers(tab).to_dict()
    assert d['mark']['type'] == 'bar'
    assert d['encoding']['x'] == {**d['encoding']['x'], 'field': 'site', 'type': 'nominal', 'sort': tab.site.tolist()}
    assert d['encoding']['y']['field'] == 'relus' and d['encoding']['y']['stack'] == 'zero'
    assert d['encoding']['color']['field'] == 'status'
    assert {t['field'] for t in d['encoding']['tooltip']} == {'site', 'stage', 'total', 'kept', 'keep_pct'}
    rows = _data(d, d)
    assert len(rows) == 2 * len(tab) == chart_rows(d)
    kept = rows[rows.status == 'kept'].set_index('site')
    assert kept.relus.loc[tab.site].tolist() == tab.kept.tolist()
    removed = rows[rows.status == 'removed'].set_index('site')
    assert (kept.relus + removed.relus).loc[tab.site].tolist() == tab.total.tolist()
    assert f"{int(tab.kept[tab.per_image].sum()):,} of {int(tab.total[tab.per_image].sum()):,} kept" in d['title']

def test_layers_selection_is_readable_by_jupyterchart(net):
    ch = plot_layers(site_table(net))
    d = ch.to_dict()
    (p,) = d['params']
    assert p['name'] == 'site_pick' and p['select'] == {'type': 'point', 'fields': ['site']}
    assert d['encoding']['opacity']['condition']['param'] == 'site_pick'
    jc = alt.JupyterChart(ch)
    assert jc.selections.site_pick.name == 'site_pick' and jc.selections.site_pick.value == []

def test_layers_keeps_call_order_not_alphabetical():
    tab = pd.DataFrame(dict(site=['z', 'a', 'm'], total=[4, 4, 4], kept=[1, 2, 3]))
    assert plot_layers(tab).to_dict()['encoding']['x']['sort'] == ['z', 'a', 'm']

def test_layers_with_cost(net):
    tab = site_table(net)
    cost = pd.DataFrame(dict(site=tab.site[:2], relu_ms=[1.5, 0.5]))
    d = plot_layers(tab, cost).to_dict()
    top, bottom = d['vconcat']
    assert bottom['mark']['type'] == 'bar' and bottom['encoding']['y']['field'] == 'relu_ms'
    assert bottom['encoding']['x']['sort'] == tab.site.tolist()
    assert _data(d, bottom).relu_ms.tolist() == [1.5, 0.5]
    assert [p['name'] for p in d['params']] == ['site_pick']
    assert d['resolve']['scale']['x'] == 'shared'

def test_layers_errors(net):
    tab = site_table(net)
    fct.test_fail(lambda: plot_layers(tab[['site', 'total']]), contains="site_table(net)")
    fct.test_fail(lambda: plot_layers(tab, pd.DataFrame(dict(site=['x'], relu_ms=[1.]))), contains="not in site_table")
    big = pd.DataFrame(dict(site=[f's{i}' for i in range(2501)], total=1, kept=1))
    fct.test_fail(lambda: plot_layers(big), contains="5,000")

# ---------------------------------------------------------------- plot_sensitivity
def test_sensitivity_normalised_per_method(net):
    sites = list(get_masks(net))
    g = torch.Generator().manual_seed(0)
    a = {s: torch.rand(m.shape, generator=g) for s, m in get_masks(net).items()}
    b = {s: 1000 * v for s, v in a.items()}                          # same ranking, other scale
    d = plot_sensitivity({'a': a, 'b': b}).to_dict()
    assert d['mark']['type'] == 'rect'
    enc = d['encoding']
    assert (enc['x']['field'], enc['x']['type'], enc['x']['sort']) == ('site', 'nominal', sites)
    assert (enc['y']['field'], enc['color']['field'], enc['color']['scale']['domain']) == ('method', 'norm', [0, 1])
    rows = _data(d, d)
    assert len(rows) == 2 * len(sites)
    na, nb = (rows[rows.method == k].set_index('site').norm.loc[sites].values for k in 'ab')
    np.testing.assert_allclose(na, nb, atol=1e-6)                    # scaling per method removes the scale
    sums = np.array([float(a[s].double().sum()) for s in sites])
    np.testing.assert_allclose(na, (sums - sums.min()) / (sums.max() - sums.min()), atol=1e-6)

def test_sensitivity_long_dataframe_sites_in_first_appearance_order():
    df = pd.DataFrame(dict(method=['m', 'm', 'n', 'n', 'm'], site=['b', 'a', 'a', 'c', 'b'], value=[1., 2, 3, 4, 5]))
    d = plot_sensitivity(df).to_dict()
    assert d['encoding']['x']['sort'] == ['b', 'a', 'c']
    rows = _data(d, d).set_index(['method', 'site'])
    assert rows.value.loc[('m', 'b')] == 6.0 and len(rows) == 4     # repeated rows are summed

def test_sensitivity_errors():
    fct.test_fail(lambda: plot_sensitivity({'s': torch.ones(3)}), contains="wrap one method's scores")
    fct.test_fail(lambda: plot_sensitivity(pd.DataFrame(dict(method=['a'], site=['s']))), contains="method, site, value")

# ---------------------------------------------------------------- plot_site_heatmap
def test_big_site_under_limit_and_correct_reductions():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(512, 32, 32, generator=g)
    m = (torch.rand(512, 32, 32, generator=g) < 0.25).float()
    ch = plot_site_heatmap({'layer4.1.relu': s}, 'layer4.1.relu', mask={'layer4.1.relu': m})
    d = ch.to_dict()                                   # would raise MaxRowsError past 5,000 rows in one dataset
    assert d['title'] == 'layer4.1.relu (512, 32, 32)'
    heat, bars, kept = d['hconcat']
    assert [v['mark']['type'] for v in d['hconcat']] == ['rect', 'bar', 'rect']
    for v in (heat, kept):
        assert {k: (v['encoding'][k]['field'], v['encoding'][k]['type']) for k in 'xy'} == \
               {'x': ('col', 'ordinal'), 'y': ('row', 'ordinal')}
    assert heat['encoding']['color']['field'] == 'score' and kept['encoding']['color']['field'] == 'kept'
    assert bars['encoding']['x']['field'] == 'channel' and bars['encoding']['y']['field'] == 'score'
    assert chart_rows(d) == 32 * 32 + 512 <= 5000
    px = _data(d, heat).sort_values(['row', 'col'])
    np.testing.assert_allclose(px.score.values, s.mean(0).flatten().numpy(), rtol=1e-5)
    np.testing.assert_allclose(px.kept.values, m.mean(0).flatten().numpy(), rtol=1e-5)
    np.testing.assert_allclose(_data(d, bars).score.values, s.mean((1, 2)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(_data(d, bars).kept.values, m.mean((1, 2)).numpy(), rtol=1e-5)

def test_large_map_is_average_pooled():
    s = torch.zeros(3, 128, 96); s[:, :64] = 1.0       # top half ones
    d = plot_site_heatmap({'s': s}, 's', channel_bars=False).to_dict()
    assert d['mark']['type'] == 'rect' and 'avg-pooled to 64×64' in d['title']
    px = _data(d, d)
    assert len(px) == 64 * 64
    assert sorted(px.row.unique())[:3] == [0, 2, 4]   # labels are the first input row of each pooled cell
    assert px[px.row < 64].score.eq(1).all() and px[px.row >= 64].score.eq(0).all()
    assert len(px.col.unique()) == 64

def test_many_channels_grouped():
    s = torch.arange(2048.)[:, None, None].expand(2048, 4, 4)
    d = plot_site_heatmap({'s': s}, 's').to_dict()
    bars = _data(d, d['hconcat'][1])
    assert len(bars) == 512 and bars.channel.iloc[:2].tolist() == [0, 4]
    np.testing.assert_allclose(bars.score.values[:2], [1.5, 5.5])    # mean of channels 0-3, 4-7
    assert chart_rows(d) <= 5000

def test_feature_site_bars(net):
    tab = site_table(net)
    fsite = tab.site[tab['shape'].str.count(',') == 1].iloc[-1]    # the (F,) site after the linear layer
    masks = get_masks(net)
    scores = {s: torch.rand(v.shape) for s, v in masks.items()}
    d = plot_site_heatmap(scores, fsite, mask=masks).to_dict()
    assert d['mark']['type'] == 'bar' and d['encoding']['x']['field'] == 'feature'
    assert d['encoding']['color']['field'] == 'kept'
    rows = _data(d, d)
    assert rows.kept.tolist() == masks[fsite].tolist() and len(rows) == masks[fsite].numel()
    assert d['title'] == f"{fsite} {tuple(masks[fsite].shape)}"

def test_site_heatmap_errors():
    sc = {'a': torch.rand(2, 4, 4)}
    fct.test_fail(lambda: plot_site_heatmap(sc, 'b'), contains="pass one of them")
    fct.test_fail(lambda: plot_site_heatmap(sc, 'a', mask=torch.ones(2, 4, 5)), contains="same site")

# ---------------------------------------------------------------- plot_frontier
def _results():
    return pd.DataFrame(dict(method=['x', 'x', 'x', 'y', 'y'], budget=[10, 20, 30, 10, 20], relus=[10, 20, 30, 10, 20],
                             acc=[0.5, 0.6, 0.55, 0.4, 0.7], model='m', dataset='d'))

def test_frontier_layers_and_front():
    pub = pd.DataFrame(dict(method=['P', 'P', 'Q'], paper=['p1', 'p1', 'q1'], relus=[15, 40, 25], acc=[0.52, 0.62, 0.58],
                            source=['s1', 's1', 's2'], model='m', dataset='d'))
    d = plot_frontier(_results(), pub).to_dict()
    layers = d['layer']
    grey = [l for l in layers if l['mark'].get('color') == '#8c8c8c']
    assert len(grey) == 1                                               # exactly one published layer, in grey
    (p,) = grey
    assert p['mark']['type'] == 'point' and p['encoding']['shape']['field'] == 'published'
    assert 'color' not in p['encoding']
    assert len(_data(d, p)) == 3
    assert {'source', 'paper'} <= {t['field'] for t in p['encoding']['tooltip']}
    ours = [l for l in layers if l is not p]
    assert sorted(l['mark']['type'] for l in ours) == ['line', 'point']
    for l in ours:
        assert l['encoding']['color']['field'] == 'method'
        assert l['encoding']['x']['scale']['type'] == 'log'
        assert l['encoding']['y']['axis']['format'] == '.0%'
    rows = _data(d, ours[0])
    assert rows.on_front.tolist() == [True, True, False, True, True]    # x@30 is dominated by x@20 only

def test_frontier_uses_given_on_front_and_linear_axis():
    r = _results().assign(on_front=[True, False, False, False, True])
    d = plot_frontier(r, log_x=False).to_dict()
    assert len(d['layer']) == 2
    assert _data(d, d['layer'][0]).on_front.tolist() == r.on_front.tolist()
    assert d['layer'][0]['encoding']['x']['scale'] == {'zero': False}

def test_frontier_with_shipped_published_points():
    fr = pytest.importorskip('relu_explore.frontier')
    pub = fr.published_frontiers()
    d = plot_frontier(_results().assign(relus=[25_000, 50_000, 100_000, 30_000, 60_000]), pub).to_dict()
    p = d['layer'][0]
    assert len(_data(d, p)) == len(pub) and chart_rows(d) == len(pub) + 5

def test_frontier_marks_points_picked_on_the_test_set():
    fr = pytest.importorskip('relu_explore.frontier')
    pub = fr.published_frontiers('CIFAR-100', model='ResNet18')
    d = plot_frontier(_results().assign(relus=[25_000, 50_000, 100_000, 30_000, 60_000]), pub).to_dict()
    p = d['layer'][0]
    fill = p['encoding']['fill']
    assert fill['field'] == 'selection' and fill['title'] == 'reported epoch'          # a legend of its own
    fills = dict(zip(fill['scale']['domain'], fill['scale']['range']))
    assert fills['test-set best'] == 'transparent' and 'transparent' not in (fills['last'], fills['unknown'])
    assert p['mark']['stroke'] == '#8c8c8c'                                             # hollow points keep a grey outline
    rows = _data(d, p)
    assert set(rows[rows.method == 'SNL'].selection) == {'test-set best'}
    assert set(rows[rows.method == 'DeepReDuce'].selection) == {'unknown'}
    assert 'selection' in {t['field'] for t in p['encoding']['tooltip']}
    own = pd.DataFrame(dict(method=['P'], relus=[15], acc=[0.5]))                      # no column: 'unknown'
    d2 = plot_frontier(_results(), own).to_dict()
    assert _data(d2, d2['layer'][0]).selection.tolist() == ['unknown']
    fct.test_fail(lambda: plot_frontier(_results(), own.assign(selection='best epoch')), contains="'test-set best'")

def test_frontier_errors():
    fct.test_fail(lambda: plot_frontier(_results().assign(relus=-1)), contains="log_x=False")
    fct.test_fail(lambda: plot_frontier(_results(), pd.DataFrame(dict(method=['P']))), contains="published_frontiers")

# ---------------------------------------------------------------- save_chart and rendering
@pytest.fixture(scope='module')
def small_chart(): return plot_frontier(_results())

def test_save_html_is_self_contained(small_chart, tmp_path):
    p = save_chart(small_chart, tmp_path / 'f.html')
    html = p.read_text()
    assert p == tmp_path / 'f.html' and 'cdn.jsdelivr' not in html and '<html' in html.lower()
    assert 'vegaEmbed' in html

def test_save_png_svg_json(small_chart, tmp_path):
    png = save_chart(small_chart, tmp_path / 'deep' / 'f.PNG').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    w = int.from_bytes(png[16:20], 'big')
    assert w > 2 * 480                                                  # scale_factor=2
    svg = save_chart(small_chart, tmp_path / 'f.svg').read_text()
    assert svg.lstrip().startswith('<svg') and svg.rstrip().endswith('</svg>')
    spec = json.loads(save_chart(small_chart, tmp_path / 'f.json').read_text())
    assert spec['layer'][1]['mark']['type'] == 'point'

def test_save_errors(small_chart, tmp_path):
    fct.test_fail(lambda: save_chart(small_chart, tmp_path / 'f.jpg'), contains=".html, .png, .svg, .json")
    fct.test_fail(lambda: save_chart({'a': 1}, tmp_path / 'f.svg'), contains="Altair chart")

@pytest.fixture
def keep_renderer():
    name = alt.renderers.active
    yield
    alt.renderers.enable(name)

def test_offline_rendering(keep_renderer):
    assert enable_offline_rendering() == 'jupyter'
    assert alt.JupyterChart._is_offline

def test_offline_rendering_falls_back_to_svg(keep_renderer, monkeypatch):
    def boom(*a, **k): raise ImportError("no vl-convert")
    monkeypatch.setattr(alt.JupyterChart, 'enable_offline', boom)
    with pytest.warns(UserWarning, match="static SVG"):
        assert enable_offline_rendering() == 'svg'

def test_import_does_not_import_altair():
    import subprocess, sys
    code = "import sys, relu_explore.viz; print('altair' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == 'False'
