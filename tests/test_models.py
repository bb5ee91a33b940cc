"Model zoo: ReLU counts (forward hooks and a TorchFunctionMode, independent of relufy), shapes, names, get_model."
import sys, warnings, pytest, torch, torch.nn as nn, torch.nn.functional as F
import torchvision
import fastcore.test as fct
from torch.overrides import TorchFunctionMode
from relu_explore.models import (tiny_net, dead_channel_net, digits_resnet, cifar_resnet18, cifar_resnet34, cifar_resnet50,
                                 wrn_22_8, cifar_vgg16, get_model, list_models, CifarResNet, WideResNet)
from conftest import count_relu_elements as count_by_mode


def count_relu_elements(model, x):
    "ReLU elements per image from forward hooks on nn.ReLU modules: every call's output numel / batch."
    n, calls = [0], [0]
    def hook(m, i, o): n[0] += o.numel() // x.shape[0]; calls[0] += 1
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    model.eval()
    try:
        with torch.no_grad(): model(x)
    finally:
        for h in hs: h.remove()
    return n[0]


def meta(fn, *a, **kw):
    with torch.device('meta'): return fn(*a, **kw)


def x32(n=1, device='meta', c=3, s=32): return torch.zeros(n, c, s, s, device=device)


# independent closed-form counts (He et al. CIFAR ResNet with stride on the 3x3 conv)
def resnet_basic_count(layers, width=64, res=32, stem=True):
    total, r = (width * res * res if stem else 0), res
    for i, n in enumerate(layers):
        r = r if i == 0 else r // 2
        total += 2 * n * width * 2 ** i * r * r
    return total


def resnet_bottleneck_count(layers, width=64, res=32, stem=True):
    total, r = (width * res * res if stem else 0), res
    for i, n in enumerate(layers):
        p, r_in = width * 2 ** i, r
        r = r if i == 0 else r // 2
        total += p * r_in * r_in + p * r * r + 4 * p * r * r      # first block: conv1 at input res
        total += (n - 1) * (p * r * r + p * r * r + 4 * p * r * r)
    return total


# ---------- published counts ----------
def test_resnet18_counts():
    assert count_relu_elements(meta(cifar_resnet18), x32()) == 557_056
    assert count_relu_elements(meta(cifar_resnet18, stem_relu=False), x32()) == 491_520
    assert count_relu_elements(meta(cifar_resnet18), x32(s=64)) == 2_228_224
    assert resnet_basic_count([2, 2, 2, 2]) == 557_056         # the closed form agrees with ALGORITHMS.md §0.2


def test_resnet18_counts_real_forward_agree_with_torch_function_mode():
    m = cifar_resnet18(width=16)
    x = torch.randn(2, 3, 32, 32)
    n_mode, calls = count_by_mode(m, x)
    assert count_relu_elements(m, x) == n_mode == 557_056 // 4
    assert calls == 17


def test_wrn_22_8_count():
    assert count_relu_elements(meta(wrn_22_8), x32()) == 1_392_640
    assert count_relu_elements(meta(wrn_22_8, final_relu=False), x32()) == 1_359_872
    assert count_relu_elements(meta(wrn_22_8), x32(s=64)) == 5_570_560


def test_torchvision_resnet18_224():
    assert count_relu_elements(meta(torchvision.models.resnet18), x32(s=224)) == 2_308_096


def test_resnet34_50_closed_form():
    assert count_relu_elements(meta(cifar_resnet34), x32()) == resnet_basic_count([3, 4, 6, 3])
    assert count_relu_elements(meta(cifar_resnet50), x32()) == resnet_bottleneck_count([3, 4, 6, 3])
    assert count_relu_elements(meta(cifar_resnet50, stem_relu=False), x32()) == resnet_bottleneck_count([3, 4, 6, 3], stem=False)


def test_deepreduce_reshaping_knobs():
    # alpha = 0.5 halves, rho = 0.5 (stem stride 2) quarters; DRD_C100_230K = ResNet18 without stem, S1 culled
    assert count_relu_elements(meta(cifar_resnet18, width=32), x32()) == resnet_basic_count([2, 2, 2, 2], width=32)
    assert count_relu_elements(meta(cifar_resnet18, stem_stride=2), x32()) == resnet_basic_count([2, 2, 2, 2], res=16)
    assert resnet_basic_count([2, 2, 2, 2], stem=False) - resnet_basic_count([2, 0, 0, 0], stem=False) == 229_376


def test_vgg16_counts():
    conv = sum(c * s * s for c, s in [(64, 32)] * 2 + [(128, 16)] * 2 + [(256, 8)] * 3 + [(512, 4)] * 3 + [(512, 2)] * 3)
    assert count_relu_elements(meta(cifar_vgg16), x32()) == conv
    assert count_relu_elements(meta(cifar_vgg16, hidden=4096), x32()) == 284_672   # DELPHI's VGG-16 (PI_COST.md)


# ---------- shapes, names ----------
SMALL = {'tiny_net': dict(x=(1, 8, 8)), 'digits_resnet': dict(x=(1, 8, 8)), 'cifar_resnet18': dict(width=8),
         'cifar_resnet34': dict(width=4), 'cifar_resnet50': dict(width=4), 'wrn_22_8': dict(x=(3, 16, 16)),
         'cifar_vgg16': dict(x=(3, 32, 32))}


@pytest.mark.parametrize('name', list_models())
def test_forward_shapes(name):
    kw = dict(SMALL[name]); shape = kw.pop('x', (3, 32, 32))
    torch.manual_seed(0)
    m = get_model(name, num_classes=7, **kw).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad(): out = m(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    n_mode, calls = count_by_mode(m, x)
    assert calls > 0
    if name != 'tiny_net': assert count_relu_elements(m, x) == n_mode   # every ReLU is an nn.ReLU module call


def test_list_models():
    assert list_models() == ['tiny_net', 'digits_resnet', 'cifar_resnet18', 'cifar_resnet34', 'cifar_resnet50', 'wrn_22_8', 'cifar_vgg16']


def test_torchvision_attribute_names():
    ours, tv = meta(cifar_resnet18), meta(torchvision.models.resnet18)
    assert set(ours.state_dict()) == set(tv.state_dict())
    assert isinstance(ours.relu, nn.ReLU) and not hasattr(ours, 'maxpool')
    assert ours.conv1.kernel_size == (3, 3) and ours.conv1.stride == (1, 1)
    assert isinstance(meta(cifar_resnet18, stem_relu=False).relu, nn.Identity)


def test_basic_block_calls_one_relu_twice():
    m = cifar_resnet18(width=4)
    seen = []
    m.layer1[0].relu.register_forward_hook(lambda mod, i, o: seen.append(tuple(o.shape)))
    m.eval()(torch.randn(1, 3, 32, 32))
    assert len(seen) == 2
    assert sum(isinstance(x, nn.ReLU) for x in m.layer1[0].modules()) == 1


def test_wrn_structure():
    m = meta(wrn_22_8)
    assert [m.layer1[0].conv1.out_channels, m.layer2[0].conv1.out_channels, m.layer3[0].conv1.out_channels] == [128, 256, 512]
    assert [len(m.layer1), len(m.layer2), len(m.layer3)] == [3, 3, 3] and m.conv1.out_channels == 16
    assert m.layer1[1].shortcut is None and m.layer2[0].shortcut is not None
    fct.test_fail(lambda: WideResNet(depth=20), contains='6n+4')


# ---------- fixtures ----------
class ReluCalls(TorchFunctionMode):
    FUNCS = {F.relu: 'F.relu', torch.relu: 'torch.relu', torch.Tensor.relu: 'Tensor.relu', torch.Tensor.relu_: 'Tensor.relu_',
             torch.relu_: 'torch.relu_', F.relu_: 'F.relu_'}
    def __init__(self): super().__init__(); self.calls = []
    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.FUNCS: self.calls.append(self.FUNCS[func])
        return out


def test_tiny_net_has_six_relu_calls():
    m = tiny_net().eval()
    module_calls = []
    relu_mods = [x for x in m.modules() if isinstance(x, nn.ReLU)]
    assert len(relu_mods) == 1
    relu_mods[0].register_forward_hook(lambda *a: module_calls.append(1))
    with ReluCalls() as rc: out = m(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    assert len(module_calls) == 2                         # one nn.ReLU called twice
    assert len(rc.calls) == 6                             # + F.relu, torch.relu, .relu(), .relu_()
    assert rc.calls.count('F.relu') == 3                  # 2 via the module, 1 direct
    assert {'torch.relu', 'Tensor.relu', 'Tensor.relu_'} <= set(rc.calls)


def test_tiny_net_sites_with_relufy():
    from relu_explore.sites import relufy, get_sites, relu_count
    m, x = tiny_net(), torch.randn(2, 1, 8, 8)
    net = relufy(m, x)
    assert len(get_sites(net)) == 6 and {'relu', 'relu_1'} <= set(get_sites(net))
    assert relu_count(net) == count_by_mode(m, x)[0] == 3 * 512 + 256 + 64


def test_dead_channel_net():
    torch.manual_seed(0)
    m = dead_channel_net().eval()
    site, ch = m.dead
    pre = {}
    m.relu.register_forward_hook(lambda mod, i, o: pre.update(i=i[0].clone(), o=o.clone()))
    for _ in range(3):
        x = torch.randn(8, 1, 8, 8)
        m(x)
        assert (pre['i'][:, ch] >= 0).all()
        torch.testing.assert_close(pre['o'][:, ch], pre['i'][:, ch])     # the ReLU is the identity there
        others = [c for c in range(pre['i'].shape[1]) if c != ch]
        assert all((pre['i'][:, c] < 0).any() for c in others)            # live elsewhere
    # still dead after the weights change
    with torch.no_grad():
        for p in m.parameters(): p.normal_()
    m(torch.randn(4, 1, 8, 8)); assert (pre['i'][:, ch] >= 0).all()
    from relu_explore.sites import relufy, get_sites
    assert site in get_sites(relufy(m, torch.randn(2, 1, 8, 8)))
    assert dead_channel_net(channel=0).dead == ('relu', 0)
    fct.test_fail(lambda: dead_channel_net(channel=9), contains='channel=9')


def _train_digits(epochs):
    "Validation accuracy of digits_resnet after a short Adam/one-cycle run (one thread: faster for a net this small)."
    from relu_explore.data import digits_data
    return _fit_digits(digits_data, epochs)   # one thread: conftest's `one_thread` fixture


def _fit_digits(digits_data, epochs):
    d = digits_data(batch_size=64)
    torch.manual_seed(0)
    m = digits_resnet()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=epochs * len(d.train))
    for _ in range(epochs):
        m.train()
        for x, y in d.train: opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step(); sched.step()
    m.eval()
    with torch.no_grad(): return sum((m(x).argmax(1) == y).sum().item() for x, y in d.valid) / len(d.valid_ds)


def test_digits_resnet_trains():
    assert _train_digits(3) >= 0.90


@pytest.mark.slow
def test_digits_resnet_trains_to_95():
    assert _train_digits(8) >= 0.95


# ---------- get_model ----------
def test_get_model_ours_and_kwargs():
    m = get_model('cifar_resnet18', num_classes=100, width=8, stem_relu=False)
    assert isinstance(m, CifarResNet) and m.fc.out_features == 100 and isinstance(m.relu, nn.Identity)
    assert get_model('DIGITS_RESNET').conv1.in_channels == 1


def test_get_model_torchvision():
    m = get_model('resnet18', num_classes=5)
    assert isinstance(m, torchvision.models.ResNet) and m.fc.out_features == 5
    assert get_model('mobilenet_v3_small', num_classes=3)(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    fct.test_fail(lambda: get_model('resnet18', weights='DEFAULT'), contains='never downloads weights')


def test_get_model_timm():
    timm = pytest.importorskip('timm')
    m = get_model('timm/resnet10t', num_classes=3)
    assert m.num_classes == 3 and m(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert get_model('resnet10t', num_classes=4).num_classes == 4                 # bare timm name
    assert get_model('timm/resnet18.a1_in1k', num_classes=2).num_classes == 2     # pretrained tag, still no weights
    fct.test_fail(lambda: get_model('timm/resnet10t', pretrained=True), contains='never downloads weights')


def test_get_model_unknown_names_close_matches():
    with pytest.raises(ValueError) as e: get_model('cifar_resnet81')
    assert "'cifar_resnet18'" in str(e.value)
    with pytest.raises(ValueError) as e: get_model('resnet_18')
    assert "'resnet18'" in str(e.value)
    with pytest.raises(ValueError) as e: get_model('convnext_tinyy')                  # torchvision/timm close match
    assert "'convnext_tiny'" in str(e.value)
    fct.test_fail(lambda: get_model('zzzzqqq'), contains='timm name such as')


def test_get_model_without_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, 'timm', None)          # import timm now raises ImportError
    fct.test_fail(lambda: get_model('timm/resnet10t'), contains='pip install timm')
    with pytest.raises(ValueError) as e: get_model('cifar_resnet81')
    assert "'cifar_resnet18'" in str(e.value) and 'pip install timm' in str(e.value)
    assert get_model('resnet18').fc.out_features == 10      # torchvision names still work


def test_readme_counting_totals_by_relufy():
    "The totals of the README's counting section, as the package counts them (relufy + relu_total)."
    from relu_explore.sites import relufy, relu_total, get_sites
    x = torch.randn(1, 3, 32, 32)
    r18, r18_ns = relufy(cifar_resnet18().eval(), x), relufy(cifar_resnet18(stem_relu=False).eval(), x)
    assert relu_total(r18) == 557_056 and relu_total(r18_ns) == 491_520
    # the no-stem count of the stem model is the same number, but not the same network: its stem ReLU is still there
    assert relu_total(r18, include_stem=False) == 491_520 and len(get_sites(r18)) == 17 and len(get_sites(r18_ns)) == 16
    w, w_nf = relufy(wrn_22_8().eval(), x), relufy(wrn_22_8(final_relu=False).eval(), x)
    assert relu_total(w) == 1_392_640 and relu_total(w_nf) == 1_359_872
    assert len(get_sites(w)) - len(get_sites(w_nf)) == 1 and relu_total(w) - relu_total(w_nf) == 512 * 8 * 8
    assert relu_total(w, include_stem=False) == relu_total(w)           # a pre-activation WRN has no stem ReLU
