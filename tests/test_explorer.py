"""The Explorer driven headless: set attributes and widget values, check masks, counts, cost, charts and results."""
import copy, threading
import pandas as pd, pytest, torch, torch.nn as nn
import torch.utils.data as tud
import fastcore.test as fct
from relu_explore.data import digits_data, Data
from relu_explore.models import digits_resnet, tiny_net
from relu_explore.sites import relufy, relu_count, get_masks, set_masks, get_sites
from relu_explore.cost import cost_table
from relu_explore.distill import evaluate
from relu_explore.explorer import Explorer, explore, error_widget

@pytest.fixture(scope='module')
def data(): return digits_data()

@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return digits_resnet().eval()

@pytest.fixture
def ex(model, data): return Explorer(model, data, methods=('random', 'activation'), budget=400, acc_delay=None, eval_n=128)

def _datasets(chart): return chart.to_dict()['datasets']

def test_budget_attribute_drives_everything(ex):
    masks0, cost0 = ex.masks, ex.cost
    layers0, heat0 = _datasets(ex.charts['layers']), _datasets(ex.charts['heatmap'])
    spec0 = ex.chart_widgets['heatmap'].spec
    ex.budget = 1500
    assert ex.relus == relu_count(ex.net) == 1500
    assert int(sum(m.sum() for m in ex.masks.values())) == 1500
    assert sum(int((ex.masks[k] != masks0[k]).sum()) for k in ex.masks) == 1100   # random global top-k: nested sets
    assert (ex.controls['count'].value, round(ex.controls['slider'].value)) == (1500, 1500)
    assert '1,500' in ex.controls['readout'].value
    # cost: same as pricing the net directly, and different from before
    pd.testing.assert_frame_equal(ex.cost, cost_table(ex.net, ex.protocols))
    assert set(ex.cost.relus) == {1500} and (ex.cost.online_relu_ms.fillna(0) >= cost0.online_relu_ms.fillna(0)).all()
    assert ex.cost.online_relu_ms.notna().any() and (ex.cost.online_relu_ms != cost0.online_relu_ms).any()
    assert '1,500' in ex.controls['cost'].value
    # charts: the Altair charts and the specs the chart widgets show
    kept = [r for r in next(iter(_datasets(ex.charts['layers']).values())) if r['status'] == 'kept']
    assert sum(r['relus'] for r in kept) == 1500
    assert _datasets(ex.charts['layers']) != layers0 and _datasets(ex.charts['heatmap']) != heat0
    assert ex.chart_widgets['heatmap'].spec != spec0
    assert ex.chart_widgets['layers'].spec['datasets'] == _datasets(ex.charts['layers'])
    assert set(ex.timings) >= {'allocate', 'set_masks+count', 'cost', 'charts', 'total'}

def test_widgets_drive_the_attributes(ex):
    ex.controls['count'].value = 777
    assert ex.budget == ex.relus == relu_count(ex.net) == 777
    ex.controls['slider'].value = 10 ** 3.2
    assert ex.budget == round(10 ** 3.2) == ex.controls['count'].value == ex.relus
    ex.controls['strategy'].value = 'per_layer'
    assert ex.strategy == 'per_layer' and ex.relus <= ex.budget
    ex.controls['site'].value = ex.sites[-1]
    assert ex.site == ex.sites[-1] and ex.charts['heatmap'].to_dict()['title'].startswith(ex.sites[-1])

def test_method_scores_once_and_changes_masks(ex, monkeypatch):
    import relu_explore.explorer as E
    calls = []
    real = E.score
    monkeypatch.setattr(E, 'score', lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    ex.budget = 1000
    rnd, heat = ex.masks, _datasets(ex.charts['heatmap'])
    ex.method = 'activation'
    assert ex.controls['method'].value == 'activation' and ex.relus == 1000
    assert sum(int((ex.masks[k] != rnd[k]).sum()) for k in ex.masks) > 0
    assert _datasets(ex.charts['heatmap']) != heat
    ex.controls['method'].value = 'random'; ex.controls['method'].value = 'activation'
    assert calls == ['activation']                     # random was scored at construction, activation once
    # scores are taken with every ReLU kept, whatever the masks are when a method is first picked
    ex2 = Explorer(ex.teacher, ex.data, methods=('random', 'activation'), budget=50, acc_delay=None, eval_n=16)
    ex2.method = 'activation'
    for k in ex.scores: torch.testing.assert_close(ex2.scores[k], ex.scores[k])

def test_site_pick_from_the_layer_chart(ex):
    site = ex.sites[3]
    ex.chart_widgets['layers']._vl_selections = {'site_pick': {'value': {'vlPoint': {'or': [{'site': site}]}}, 'store': []}}
    assert ex.site == site == ex.controls['site'].value
    ex.chart_widgets['layers']._vl_selections = {'site_pick': {'value': {}, 'store': []}}   # re-render clears it: no change
    assert ex.site == site

def test_accuracy_without_retraining(ex, model, data):
    x, y = data.batch(128)
    full = (model(x).argmax(1) == y).float().mean().item()
    assert ex.accuracy(full=True) == pytest.approx(full)
    ex.budget = ex.total
    assert ex.accuracy() == pytest.approx(full)
    ex.budget = 1
    net = copy.deepcopy(ex.net)
    assert ex.accuracy() == pytest.approx((net(x).argmax(1) == y).float().mean().item())

def test_debounced_accuracy_readout(model, data):
    ex = Explorer(model, data, methods=('random',), budget=300, acc_delay=0.05, eval_n=64)
    for b in (400, 500, 600): ex.budget = b
    ex._timer.join(30)
    assert ('random', 'global', 600) in ex._acc_cache and 'full' in ex._acc_cache
    assert f"<b>{ex.accuracy():.1%}</b>" in ex.controls['acc'].value

@pytest.fixture
def small(data):
    "The digits with 128 training and 64 validation images: one distillation epoch takes a moment."
    (xt, yt), (xv, yv) = data.batch(128, 'train'), data.batch(64, 'valid')
    dl = lambda x, y: tud.DataLoader(tud.TensorDataset(x, y), batch_size=32)
    return Data(dl(xt, yt), dl(xv, yv), 10, data.input_shape, 'digits')

def test_distil_point_adds_a_row_and_redraws_the_frontier(model, small):
    ex = Explorer(model, small, methods=('random',), budget=400, acc_delay=None, eval_n=64)
    ex.budget = 800
    row = ex.distil_point(epochs=1, background=False)
    assert len(ex.results) == 1 and row['relus'] == 800 and 0 <= row['acc'] <= 1
    assert ex.results.iloc[0][['method', 'strategy', 'budget']].tolist() == ['random', 'global', 800]
    assert relu_count(ex.net) == 800                         # the explorer's net is not the one trained
    spec = ex.charts['frontier'].to_dict()
    assert any(800 in [r.get('relus') for r in rows] for rows in spec['datasets'].values())
    ex.budget = 200
    t = ex.distil_point(epochs=1, background=True)
    assert isinstance(t, threading.Thread)
    t.join(120)
    assert sorted(ex.results.relus.tolist()) == [200, 800]
    assert ex.controls['progress'].value == 1 and 'done' in ex.controls['log'].value and not ex.controls['distil'].disabled

def test_relufied_net_in(model, data):
    net = relufy(model, data.example(2))
    set_masks(net, {k: torch.zeros_like(v) for k, v in get_masks(net).items()})
    ex = Explorer(net, data, methods=('random',), budget=100, acc_delay=None, eval_n=16)
    assert ex.net is net and relu_count(net) == 100
    assert all(m.kept == m.total for m in get_sites(ex.teacher).values())

def test_published_overlay_only_when_dataset_and_model_match():
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    dl = tud.DataLoader(tud.TensorDataset(x, y), batch_size=4)
    d = Data(dl, dl, 10, (1, 8, 8), 'cifar10')
    ex = Explorer(tiny_net(), d, methods=('random',), acc_delay=None, model_name='ResNet18')
    assert ex.published is not None and len(ex.published) and set(ex.published.dataset) == {'CIFAR-10'}
    assert any('published' in str(l) for l in ex.charts['frontier'].to_dict()['layer'])
    assert Explorer(tiny_net(), d, methods=('random',), acc_delay=None).published is None
    assert Explorer(tiny_net(), d, methods=('random',), acc_delay=None, model_name='NoSuchNet').charts['frontier'] is None

class GeluNet(nn.Module):
    def __init__(self):
        super().__init__(); self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(144, 10)
    def forward(self, x): return self.fc(nn.functional.gelu(self.conv(x)).flatten(1))

def test_bad_model_raises_in_scripts_and_shows_in_the_widget(data):
    with pytest.raises(ValueError, match='no ReLU call'): Explorer(GeluNet(), data)
    w = explore(GeluNet(), data)
    assert type(w).__name__ == 'HTML' and 'rx-error' in w.value and 'no ReLU call' in w.value
    assert isinstance(explore(digits_resnet(), data, methods=('random',), acc_delay=None), Explorer)

def test_bad_arguments_name_the_fix(ex, model, data):
    fct.test_fail(lambda: setattr(ex, 'budget', 0), contains='outside 1')
    fct.test_fail(lambda: setattr(ex, 'budget', 10**9), contains='outside 1')
    fct.test_fail(lambda: setattr(ex, 'method', 'nope'), contains='pick from')
    fct.test_fail(lambda: setattr(ex, 'strategy', 'nope'), contains='pick one of')
    fct.test_fail(lambda: setattr(ex, 'site', 'nope'), contains='pick one of')
    fct.test_fail(lambda: Explorer(model, data, methods=('nope',)), contains='pick from')
    fct.test_fail(lambda: Explorer(model, {'x': 1}), contains='digits_data()')
    fct.test_fail(lambda: Explorer(model, data, published='yes'), contains="'auto'")
    assert 'Boom' in error_widget(RuntimeError('Boom')).value

def test_widget_errors_go_to_the_status_line(ex):
    ex.score_opts['activation'] = {'no_such_option': 1}
    before = ex.method
    ex.controls['method'].value = 'activation'
    assert 'rx-error' in ex.controls['status'].value and 'no_such_option' in ex.controls['status'].value
    assert ex.method == before == ex.controls['method'].value
    ex.controls['count'].value = 321                      # the next good change clears the error
    assert ex.controls['status'].value == '' and ex.budget == 321

def test_updates_run_single_threaded_and_restore_the_setting(ex, monkeypatch):
    import relu_explore.explorer as E
    seen, real = [], E.allocate
    monkeypatch.setattr(E, 'allocate', lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ex.budget = 999
        ex.update_threads = None; ex.budget = 998
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally: torch.set_num_threads(old)


def test_accuracy_readout_can_recompute_batchnorm(data):
    "bn_images: the readout recomputes BatchNorm statistics for the masked net (the model's own stay for all ReLUs kept)."
    from relu_explore.distill import train
    torch.manual_seed(0)
    m = digits_resnet()
    train(m, data.train, data.valid, epochs=4, progress=False)
    plain = Explorer(m, data, methods=('random',), budget=410, acc_delay=None, eval_n=256)
    bn = Explorer(m, data, methods=('random',), budget=410, acc_delay=None, eval_n=256, bn_images=256)
    stale, fresh = plain.accuracy(), bn.accuracy()
    assert fresh >= stale + 0.15, (stale, fresh)
    assert bn.accuracy(full=True) == plain.accuracy(full=True)          # measured after a recalibration: own statistics back
    bn._show_acc()
    assert 'BatchNorm statistics from 256 training images' in bn.controls['acc'].value
    fct.test_fail(lambda: Explorer(m, data, bn_images=-1), contains='bn_images=-1')


def test_slider_snap_of_a_typed_budget_is_not_a_move(ex):
    "The log slider (step 0.01 in log10) snaps 333 to 10**2.52 = 331.1 and may echo it back: the typed 333 must stay."
    import math
    ex.controls['count'].value = 333
    assert ex.budget == 333
    ex.controls['slider'].value = 10 ** (round(math.log10(333), 2))      # the frontend's snapped echo
    assert ex.budget == 333 and ex.controls['count'].value == 333
    ex.controls['slider'].value = 10 ** (round(math.log10(333), 2) + 0.01)   # one step right: a real move
    assert ex.budget == round(10 ** 2.53)

def test_plain_tensors_and_loaders_go_in(model, data):
    "Explorer(model, (x, y)): as_data holds out 20 % (stratified, seeded); a loader pair goes in as it is; dict batches are refused."
    x, y = data.train_ds.tensors
    ex = Explorer(model, (x, y), methods=('random',), budget=300, acc_delay=None, eval_n=64)
    assert ex.relus == relu_count(ex.net) == 300 and ex.data.num_classes == 10 and abs(len(ex.data.valid_ds) - 0.2 * len(x)) < 1
    assert 0 <= ex.accuracy() <= 1
    ex2 = Explorer(model, (data.train, data.valid), methods=('random',), budget=300, acc_delay=None, eval_n=64)
    assert ex2.data.train is data.train and ex2.data.input_shape == (1, 8, 8)
    dicts = tud.DataLoader([{'image': x[i], 'label': int(y[i])} for i in range(8)], batch_size=4)
    fct.test_fail(lambda: Explorer(model, (dicts, dicts)), contains='yields dicts')
    fct.test_fail(lambda: Explorer(model, [x[i] for i in range(4)]), contains='relu_explore takes a relu_explore Data')
