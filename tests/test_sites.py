"relufy over torchvision and timm models, known totals, mask files, thin + ONNX."
import warnings, pytest, torch, torch.nn as nn, torch.nn.functional as F
import torchvision
from relu_explore.sites import relufy, get_sites, get_masks, set_masks, relu_count, relu_total, site_table, save_masks, load_masks, thin
from conftest import count_relu_elements

def _tv_names():
    return sorted(torchvision.models.list_models(module=torchvision.models))

# a quick subset by default, the whole zoo under -m slow
FAST_TV = ['resnet18', 'vgg11', 'densenet121', 'regnet_x_400mf', 'squeezenet1_0', 'alexnet']
NO_RELU_TV = ['mobilenet_v2', 'efficientnet_b0', 'vit_b_16', 'convnext_tiny', 'swin_t', 'maxvit_t', 'mobilenet_v3_small']

def _input_for(name):
    if name.startswith(('inception', 'googlenet')): return torch.randn(2, 3, 128, 128)
    if name.startswith(('vit', 'swin', 'maxvit')): return torch.randn(2, 3, 224, 224)
    if name.startswith(('alexnet', 'squeeze')): return torch.randn(2, 3, 96, 96)
    return torch.randn(2, 3, 64, 64)

def _check_model(model, x):
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_ref, calls = count_relu_elements(model, x)
    if calls == 0:
        try: net = relufy(model, x)
        except ValueError as e:
            assert 'no ReLU call' in str(e); return
        assert relu_count(net) == 0 and not any(m.per_image for m in get_sites(net).values())  # only input-independent ReLUs
        return
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        net = relufy(model, x).eval()
    with torch.no_grad(): ref, out = model(x), net(x)
    if isinstance(ref, tuple): ref, out = ref[0], out[0]
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert relu_count(net) == n_ref
    assert len(get_sites(net)) == calls
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

def _tv(name):
    kw = dict(weights=None)
    if name in ('inception_v3', 'googlenet'): kw['aux_logits'] = False; kw['init_weights'] = False
    return torchvision.models.get_model(name, **kw)

@pytest.mark.parametrize('name', FAST_TV + ['mobilenet_v2', 'efficientnet_b0'])
def test_torchvision_fast(name):
    torch.manual_seed(0); _check_model(_tv(name), _input_for(name))

@pytest.mark.slow
@pytest.mark.parametrize('name', _tv_names())
def test_torchvision_zoo(name):
    torch.manual_seed(0); _check_model(_tv(name), _input_for(name))

TIMM = ['resnet18', 'resnet26d', 'resnet50', 'seresnet18', 'ecaresnet26t', 'regnetx_002', 'regnety_002', 'densenet121',
        'dla34', 'cspresnet50', 'dpn68', 'repvgg_a0', 'ghostnet_050', 'skresnet18', 'resnetv2_50', 'selecsls42b', 'gernet_s',
        'mobilenetv3_small_050', 'res2net50_14w_8s', 'hrnet_w18_small']
FAST_TIMM = ['resnet18', 'regnetx_002', 'seresnet18', 'repvgg_a0']

def _timm(name):
    timm = pytest.importorskip('timm')
    return timm.create_model(name, pretrained=False, num_classes=10)

@pytest.mark.parametrize('name', FAST_TIMM)
def test_timm_fast(name):
    torch.manual_seed(0); _check_model(_timm(name), torch.randn(2, 3, 64, 64))

@pytest.mark.slow
@pytest.mark.parametrize('name', TIMM)
def test_timm_zoo(name):
    torch.manual_seed(0); _check_model(_timm(name), torch.randn(2, 3, 64, 64))

@pytest.mark.parametrize('name', ['vit_tiny_patch16_224', 'convnext_atto', 'efficientnet_b0'])
def test_timm_no_relu(name):
    m = _timm(name)
    with pytest.raises(ValueError, match='no ReLU call') as e: relufy(m, torch.randn(1, 3, 224, 224) if 'vit' in name else torch.randn(1, 3, 64, 64))
    assert any(k in str(e.value) for k in ('GELU', 'SiLU', 'Hardswish', 'ReLU6'))

def test_known_totals():
    from relu_explore.models import cifar_resnet18, wrn_22_8
    x = torch.randn(2, 3, 32, 32)
    net = relufy(cifar_resnet18(), x)
    assert relu_count(net) == 557_056 and relu_count(net, include_stem=False) == 491_520
    assert len(get_sites(net)) == 17
    assert relu_count(relufy(cifar_resnet18(stem_relu=False), x)) == 491_520
    assert relu_count(relufy(wrn_22_8(), x)) == 1_392_640
    assert relu_count(relufy(torchvision.models.resnet18(weights=None), torch.randn(1, 3, 224, 224))) == 2_308_096
    tab = site_table(net)
    assert tab.stage.tolist() == ['S1'] * 5 + ['S2'] * 4 + ['S3'] * 4 + ['S4'] * 4
    assert tab.is_stem.tolist()[0] and tab.total.sum() == 557_056

def test_reused_module_two_sites():
    m = torchvision.models.resnet18(weights=None)
    net = relufy(m, torch.randn(1, 3, 64, 64))
    names = list(get_sites(net))
    assert 'layer1.0.relu' in names and 'layer1.0.relu_1' in names and len(names) == 17

def _toy():
    from relu_explore.models import tiny_net
    return tiny_net().eval()

def test_mask_files(tmp_path):
    x = torch.randn(2, 1, 8, 8)
    net = relufy(_toy(), x)
    masks = {k: (torch.rand(v.shape) > 0.5).float() for k, v in get_masks(net).items()}
    set_masks(net, masks)
    p = save_masks(net, tmp_path / 'm.safetensors')
    back = load_masks(p, net)
    assert all(torch.equal(back[k], masks[k]) for k in masks)
    # missing site
    k0 = next(iter(masks))
    save_masks({k: v for k, v in masks.items() if k != k0}, tmp_path / 'missing.safetensors')
    with pytest.raises(ValueError, match=f"missing sites \\['{k0}'\\]"): load_masks(tmp_path / 'missing.safetensors', net)
    # extra site
    save_masks({**masks, 'ghost': torch.ones(3)}, tmp_path / 'extra.safetensors')
    with pytest.raises(ValueError, match="extra sites \\['ghost'\\]"): load_masks(tmp_path / 'extra.safetensors', net)
    # wrong shape
    save_masks({**masks, k0: torch.ones(1, 2, 3)}, tmp_path / 'shape.safetensors')
    with pytest.raises(ValueError, match='wrong shapes'): load_masks(tmp_path / 'shape.safetensors', net)
    # garbage and truncated bytes
    (tmp_path / 'garbage.safetensors').write_bytes(b'\x00\xffnot a file' * 10)
    with pytest.raises(ValueError, match='corrupt'): load_masks(tmp_path / 'garbage.safetensors', net)
    (tmp_path / 'trunc.safetensors').write_bytes(p.read_bytes()[:-20])
    with pytest.raises(ValueError, match='corrupt'): load_masks(tmp_path / 'trunc.safetensors', net)

def test_toy_six_sites_and_isolation():
    x = torch.randn(2, 1, 8, 8)
    model = _toy()
    net = relufy(model, x)
    assert len(get_sites(net)) == 6
    for site in get_sites(net):
        n2 = relufy(model, x)
        seen = {}
        hooks = [m.register_forward_hook(lambda mod, i, o: seen.__setitem__(mod.site, (i[0].detach().clone(), o.detach().clone()))) for m in get_sites(n2).values()]
        n2(x); base = dict(seen)
        set_masks(n2, {site: torch.zeros(get_sites(n2)[site].shape)}, strict=False); n2(x)
        for h in hooks: h.remove()
        names = list(base)
        i = names.index(site)
        for earlier in names[:i]: assert torch.equal(seen[earlier][1], base[earlier][1])
        assert torch.equal(seen[site][1], seen[site][0])

def test_thin_and_onnx(tmp_path):
    from relu_explore.models import cifar_resnet18
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    net = relufy(cifar_resnet18(width=16).eval(), x).eval()
    masks = get_masks(net)
    names = list(masks)
    masks[names[0]].zero_()                                   # a removed site
    masks[names[3]] = (torch.rand(masks[names[3]].shape) > 0.9).float()  # a partial site
    set_masks(net, masks)
    t = thin(net).eval()
    with torch.no_grad(): torch.testing.assert_close(t(x), net(x), atol=1e-5, rtol=1e-5)
    ort = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnx')
    path = tmp_path / 'thin.onnx'
    try: torch.onnx.export(t, (x,), str(path), dynamo=False, input_names=['x'], output_names=['y'])
    except TypeError: torch.onnx.export(t, (x,), str(path), input_names=['x'], output_names=['y'])
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    y = sess.run(None, {'x': x.numpy()})[0]
    with torch.no_grad(): torch.testing.assert_close(torch.from_numpy(y), net(x), atol=1e-4, rtol=1e-4)

def test_timm_untraceable_leaf_modules():
    "timm's VGG head has data-dependent control flow: relufy keeps it whole by itself and says what it hides; leaf_modules= still works."
    m = _timm('vgg11').eval()
    x = torch.randn(2, 3, 64, 64)
    with pytest.warns(UserWarning, match="cannot trace 'pre_logits'.*hides"): auto = relufy(m, x)
    with pytest.warns(UserWarning, match="'pre_logits' hides"): net = relufy(m, x, leaf_modules=('pre_logits',))
    for n in (auto, net):
        with torch.no_grad(): torch.testing.assert_close(n(x), m(x), atol=1e-6, rtol=0)
        assert relu_count(n) > 0 and len(get_sites(n)) == 8
    assert relu_count(auto) == relu_count(net) and auto._relu_explore_hidden == net._relu_explore_hidden


def test_binary_masks_stored_as_uint8_and_loaded_as_float(tmp_path):
    from safetensors import safe_open
    from relu_explore.sites import save_masks, load_masks
    m = {'a': (torch.rand(3, 4, 4) > 0.5).float(), 'b': torch.tensor([0.25, 1.0])}
    p = save_masks(m, tmp_path / 'm.safetensors')
    with safe_open(str(p), framework='pt') as f: dt = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert dt == {'a': torch.uint8, 'b': torch.float32}          # binary: 1 byte per element; fractional kept exactly
    back = load_masks(p)
    assert all(back[k].dtype == torch.float32 and torch.equal(back[k], m[k]) for k in m)


# ---------- blocks torch.fx cannot trace are found and kept whole ----------
class ChannelShuffle(nn.Module):
    "ShuffleNet's channel shuffle: `int()` of a traced shape stops torch.fx; no ReLU inside."
    def __init__(self, groups=2): super().__init__(); self.groups = groups
    def forward(self, x):
        n, c, h, w = x.shape[0], int(x.shape[1]), x.shape[2], x.shape[3]
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

class GatedBlock(nn.Module):
    "Data-dependent control flow around two ReLU calls: untraceable, and it hides ReLUs."
    def __init__(self, c): super().__init__(); self.conv, self.relu = nn.Conv2d(c, c, 3, padding=1), nn.ReLU()
    def forward(self, x):
        h = self.relu(self.conv(x))
        if int(x.shape[1]) % 2 == 0: h = F.relu(h - 0.1)
        return h

class ShuffleUnit(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1, self.shuffle = nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), ChannelShuffle()
        self.conv2, self.bn2, self.relu = nn.Conv2d(c, c, 3, padding=1, groups=2), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
    def forward(self, x):
        h = self.shuffle(self.relu(self.bn1(self.conv1(x))))
        return self.relu(x + self.bn2(self.conv2(h)))

class ShuffleToy(nn.Module):
    def __init__(self, gated=False):
        super().__init__()
        self.stem, self.relu = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.stage = nn.Sequential(ShuffleUnit(8), ShuffleUnit(8))
        self.gate = GatedBlock(8) if gated else nn.Identity()
        self.fc = nn.Linear(8, 10)
    def forward(self, x): return self.fc(self.gate(self.stage(self.relu(self.stem(x)))).mean((2, 3)))

def test_untraceable_relu_free_block_relufies_exactly_without_hints(relu_counter):
    torch.manual_seed(0)
    m, x = ShuffleToy().eval(), torch.randn(2, 3, 16, 16)
    n_ref, calls = relu_counter(m, x)
    assert (n_ref, calls) == (5 * 8 * 16 * 16, 5)               # stem + 2 per unit, none inside the shuffles
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        net = relufy(m, x)
    assert relu_count(net) == n_ref and len(get_sites(net)) == calls
    with torch.no_grad(): assert torch.equal(net(x), m(x))
    assert set(net._relu_explore_untraceable) == {'stage.0.shuffle', 'stage.1.shuffle'}
    assert net._relu_explore_hidden == {'stage.0.shuffle': 0, 'stage.1.shuffle': 0}
    msgs = [str(i.message) for i in w]
    assert sum("cannot trace 'stage.0.shuffle' (ChannelShuffle: TypeError: int()" in s and 'holds no ReLU (0 hidden)' in s for s in msgs) == 1
    masks = get_masks(net); set_masks(net, {k: torch.zeros_like(v) for k, v in masks.items()})
    assert relu_count(net) == 0                                  # every ReLU outside the shuffles is maskable

def test_untraceable_block_with_relus_is_reported_with_its_count(relu_counter):
    torch.manual_seed(0)
    m, x = ShuffleToy(gated=True).eval(), torch.randn(2, 3, 16, 16)
    n_ref, _ = relu_counter(m, x)
    with pytest.warns(UserWarning, match=r"cannot trace 'gate' \(GatedBlock: .*hides 4,096 ReLU elements per image"):
        net = relufy(m, x)
    assert net._relu_explore_hidden['gate'] == 2 * 8 * 16 * 16
    assert relu_count(net) == n_ref - 2 * 8 * 16 * 16 == 5 * 8 * 16 * 16
    with torch.no_grad(): assert torch.equal(net(x), m(x))
    # explicit leaf_modules win: named blocks are kept whole from the start, the rest is still found
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        net2 = relufy(m, x, leaf_modules=(GatedBlock,))
    assert 'gate' not in net2._relu_explore_untraceable and set(net2._relu_explore_untraceable) == {'stage.0.shuffle', 'stage.1.shuffle'}
    assert any("Leaf module 'gate' hides 4,096" in str(i.message) for i in w)

def test_untraceable_code_in_the_models_own_forward_names_the_fix():
    class Root(nn.Module):
        def __init__(self): super().__init__(); self.c = nn.Conv2d(3, 4, 3, padding=1)
        def forward(self, x): return F.relu(self.c(x)).reshape(x.shape[0], int(x.shape[1]) * 4, -1)
    with pytest.raises(RuntimeError, match=r"Root.forward itself, not in a submodule"): relufy(Root(), torch.randn(2, 3, 8, 8))

def test_no_relu_error_counts_functional_and_method_nonlinearities():
    class Swish(nn.Module):
        def __init__(self): super().__init__(); self.c1, self.c2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        def forward(self, x):
            h = self.c1(x); h = h * h.sigmoid()                 # Swish as a method call
            h = self.c2(h); return F.silu(h) + torch.tanh(h)
    with pytest.raises(ValueError, match=r"no ReLU call") as e: relufy(Swish(), torch.randn(2, 3, 8, 8))
    for part in ('.sigmoid() x1', 'F.silu x1', 'torch.tanh x1', 'is Swish'): assert part in str(e.value), str(e.value)
