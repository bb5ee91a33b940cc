"Data loaders: digits split/normalisation/determinism, CIFAR local copies and errors, ImageFolder trees, get_data."
import pickle
from pathlib import Path
import numpy as np, pytest, torch
from torch.utils.data import TensorDataset
import fastcore.test as fct
from relu_explore.data import (Data, digits_data, cifar10_data, cifar100_data, imagefolder_data, get_data, list_datasets,
                               _fake_imagefolder)

SHARED_C10 = Path('/work/shared/data/cifar10')
needs_c10 = pytest.mark.skipif(not (SHARED_C10 / 'cifar-10-batches-py').is_dir(), reason='no local CIFAR-10 copy')


# ---------- digits ----------
def test_digits_split_and_normalisation():
    d = digits_data(valid_frac=0.2, seed=3)
    from sklearn.datasets import load_digits
    raw = load_digits()
    xtr, ytr = d.train_ds.tensors; xva, yva = d.valid_ds.tensors
    assert len(ytr) + len(yva) == len(raw.target) == 1797
    assert abs(len(yva) - 0.2 * 1797) <= 1
    assert xtr.dtype == torch.float32 and xtr.shape[1:] == (1, 8, 8) and d.input_shape == (1, 8, 8)
    # standardised with train statistics: invert and compare with the raw pixels / 16
    x01 = xtr * d.std[0] + d.mean[0]
    assert x01.min() >= -1e-5 and x01.max() <= 1 + 1e-5
    assert abs(xtr.mean().item()) < 1e-5 and abs(xtr.std().item() - 1) < 1e-4
    assert abs(xva.mean().item()) < 0.1              # valid uses the train stats, so only close to 0
    # the samples are real digits: every (un-normalised) train image is one of the raw images
    raw_imgs = torch.tensor(raw.images, dtype=torch.float32) / 16
    dist = torch.cdist(x01[:20].flatten(1), raw_imgs.flatten(1))
    assert (dist.min(1).values < 1e-4).all()
    # stratified: class shares equal in both splits
    ptr, pva = torch.bincount(ytr) / len(ytr), torch.bincount(yva) / len(yva)
    torch.testing.assert_close(ptr, pva, atol=0.01, rtol=0)


def test_digits_train_and_valid_disjoint():
    d = digits_data()
    tr = {tuple(r.tolist()) for r in d.train_ds.tensors[0].flatten(1)}
    va = [tuple(r.tolist()) for r in d.valid_ds.tensors[0].flatten(1)]
    # load_digits has a few duplicate images; almost all valid images must be unseen in train
    assert sum(v in tr for v in va) < 10


def test_digits_determinism_and_seed():
    a, b, c = digits_data(seed=5), digits_data(seed=5), digits_data(seed=6)
    torch.testing.assert_close(a.valid_ds.tensors[0], b.valid_ds.tensors[0])
    assert not torch.equal(a.valid_ds.tensors[1], c.valid_ds.tensors[1])
    torch.manual_seed(123); ya = [y for _, y in a.train]
    torch.manual_seed(999); yb = [y for _, y in b.train]
    assert all(torch.equal(p, q) for p, q in zip(ya, yb))   # shuffle order ignores the global RNG
    e1 = [y for _, y in a.train]
    assert not all(torch.equal(p, q) for p, q in zip(ya, e1))  # ... but differs between epochs
    assert a.train.num_workers == 0


def test_digits_example_and_batch():
    d = digits_data(batch_size=32)
    torch.testing.assert_close(d.example(3), d.valid_ds.tensors[0][:3])
    x, y = d.batch(5, split='train')
    torch.testing.assert_close(x, d.train_ds.tensors[0][:5]); torch.testing.assert_close(y, d.train_ds.tensors[1][:5])
    assert d.batch(10_000)[0].shape[0] == len(d.valid_ds)
    fct.test_fail(lambda: d.batch(3, split='test'), contains="'train' or 'valid'")
    assert "Data('digits', train=1347, valid=450" in repr(d)


def test_digits_upsample():
    d8, d16 = digits_data(), digits_data(upsample=16)
    assert d16.input_shape == (1, 16, 16) and d16.example(2).shape == (2, 1, 16, 16)
    # downsampling the upsampled image back gives an image close to the 8x8 one (same layout, same order)
    x8 = d8.valid_ds.tensors[0] * d8.std[0] + d8.mean[0]
    x16 = d16.valid_ds.tensors[0] * d16.std[0] + d16.mean[0]
    back = torch.nn.functional.avg_pool2d(x16, 2)
    assert (back - x8).abs().mean() < 0.1
    # each shrunk image is nearest to its own 8x8 original
    assert torch.equal(torch.cdist(back.flatten(1), x8.flatten(1)).argmin(1), torch.arange(len(x8)))
    fct.test_fail(lambda: digits_data(upsample=0), contains='positive integer')


def test_digits_bad_args():
    fct.test_fail(lambda: digits_data(valid_frac=0), contains='between 0 and 1')
    fct.test_fail(lambda: digits_data(batch_size=0), contains='batch_size')


def test_single_sample_last_batch_dropped():
    d = digits_data(batch_size=673)   # 1347 = 2 * 673 + 1
    assert d.train.drop_last and all(len(y) == 673 for _, y in d.train)
    assert not digits_data(batch_size=64).train.drop_last


# ---------- CIFAR ----------
def test_cifar_missing_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as e: cifar10_data(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / 'cifar-10-batches-py') in msg and 'download=True' in msg
    with pytest.raises(FileNotFoundError) as e: cifar100_data(tmp_path / 'c100')
    assert 'cifar-100-python' in str(e.value) and 'download=True' in str(e.value)


def _write_fake_cifar10(root, n=20, seed=0):
    "A tiny CIFAR-10 in torchvision's layout with arbitrary (non-official) MD5 sums."
    rng, folder = np.random.default_rng(seed), Path(root) / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    for f in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        d = {'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8), 'labels': rng.integers(0, 10, n).tolist(),
             'batch_label': f, 'filenames': [f'{f}_{i}.png' for i in range(n)]}
        with open(folder / f, 'wb') as fh: pickle.dump(d, fh)
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    with open(folder / 'batches.meta', 'wb') as fh: pickle.dump({'label_names': names}, fh)
    return folder


def test_cifar_loads_copy_without_md5(tmp_path):
    import torchvision
    _write_fake_cifar10(tmp_path)
    with pytest.raises(RuntimeError): torchvision.datasets.CIFAR10(tmp_path, download=False)  # torchvision refuses it
    d = cifar10_data(tmp_path, batch_size=8, download=True)                                    # present: no download
    assert (len(d.train_ds), len(d.valid_ds), d.num_classes, d.input_shape) == (100, 20, 10, (3, 32, 32))
    assert d.classes[0] == 'airplane'
    x, y = next(iter(d.valid))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(d.example(4), d.example(4))
    # augmented train batches are reproducible through `batch`
    torch.testing.assert_close(d.batch(6, 'train')[0], d.batch(6, 'train')[0])
    # no augmentation: train sample 0 is the first raw image, normalised
    raw = pickle.load(open(tmp_path / 'cifar-10-batches-py' / 'data_batch_1', 'rb'))['data'][0]
    want = (torch.tensor(raw, dtype=torch.float32).view(3, 32, 32) / 255 - torch.tensor(d.mean).view(3, 1, 1)) / torch.tensor(d.std).view(3, 1, 1)
    torch.testing.assert_close(cifar10_data(tmp_path, augment=False).batch(1, 'train')[0][0], want)


def test_cifar_holdout_split(tmp_path):
    _write_fake_cifar10(tmp_path)
    d = cifar10_data(tmp_path, valid_split=0.2, batch_size=8)
    assert (len(d.train_ds), len(d.valid_ds)) == (80, 20)
    assert set(d.train_ds.indices).isdisjoint(d.valid_ds.indices)
    assert d.valid_ds.dataset.transform is not d.train_ds.dataset.transform
    fct.test_fail(lambda: cifar10_data(tmp_path, valid_split='val'), contains="use 'test' or a fraction")


@needs_c10
def test_shared_cifar10_copy_loads():
    d = cifar10_data(SHARED_C10, batch_size=256, augment=False)
    assert (len(d.train_ds), len(d.valid_ds)) == (50_000, 10_000)
    assert d.train_ds.targets[:10] == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]   # official training order (README)
    assert np.bincount(d.valid_ds.targets).tolist() == [1000] * 10
    x, _ = d.batch(512, 'train')
    # normalised with CIFAR-10 statistics: the channel means of a few hundred images are near 0
    assert x.mean((0, 2, 3)).abs().max() < 0.15


# ---------- ImageFolder ----------
def test_imagefolder(tmp_path):
    root = _fake_imagefolder(tmp_path / 'f', classes=('a', 'b', 'c', 'd'), n=3, size=24, val_classes=('b', 'd'))
    d = imagefolder_data(root, image_size=16, batch_size=4)
    assert (len(d.train_ds), len(d.valid_ds), d.num_classes, d.input_shape) == (12, 6, 4, (3, 16, 16))
    x, y = d.batch(6)
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [1, 1, 1, 3, 3, 3]   # labels follow train's indices
    xb, yb = next(iter(d.train))
    assert xb.shape == (4, 3, 16, 16)


def test_imagefolder_grey_images_become_rgb(tmp_path):
    from PIL import Image
    for split in ('train', 'val'):
        (tmp_path / split / 'x').mkdir(parents=True)
        Image.fromarray(np.zeros((10, 10), dtype=np.uint8), mode='L').save(tmp_path / split / 'x' / '0.png')
    assert imagefolder_data(tmp_path, image_size=8).example(1).shape == (1, 3, 8, 8)


def test_imagefolder_errors(tmp_path):
    fct.test_fail(lambda: imagefolder_data(tmp_path / 'missing'), contains='train/<class>')
    (tmp_path / 'train' / 'a').mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as e: imagefolder_data(tmp_path)
    assert str(tmp_path / 'val') in str(e.value) and "valid_dir=" in str(e.value)


# ---------- by name ----------
def test_get_data():
    assert get_data('digits', batch_size=8).train.batch_size == 8
    assert list_datasets() == ['digits', 'cifar10', 'cifar100', 'imagefolder']
    with pytest.raises(ValueError) as e: get_data('cifar')
    assert 'cifar10' in str(e.value) and 'Known datasets' in str(e.value)
    fct.test_fail(lambda: get_data('imagenet'), contains='imagefolder')


def test_get_data_routes_to_cifar(tmp_path):
    fct.test_fail(lambda: get_data('cifar100', root=tmp_path), contains='cifar-100-python')
    assert isinstance(get_data('CIFAR-10', root=_write_fake_cifar10(tmp_path / 'c').parent), Data)


def test_cifar_in_memory_matches_the_per_image_path(tmp_path):
    _write_fake_cifar10(tmp_path)
    ref = cifar10_data(tmp_path, augment=False, batch_size=8)
    mem = cifar10_data(tmp_path, batch_size=8, in_memory=True)
    assert type(mem.train_ds) is TensorDataset and type(mem.valid_ds) is TensorDataset
    assert mem.train.device_augment is True and not getattr(ref.train, 'device_augment', False)
    assert cifar10_data(tmp_path, augment=False, in_memory=True).train.device_augment is False
    torch.testing.assert_close(mem.batch(100, 'train')[0], ref.batch(100, 'train')[0])     # same images, same normalisation
    assert torch.equal(mem.batch(20)[1], ref.batch(20)[1])
    assert (mem.num_classes, mem.input_shape, mem.classes) == (ref.num_classes, ref.input_shape, ref.classes)
    h = cifar10_data(tmp_path, valid_split=0.2, in_memory=True)
    assert (len(h.train_ds), len(h.valid_ds)) == (80, 20)
    fct.test_fail(lambda: cifar10_data(tmp_path, in_memory=True, num_workers=2), contains='drop num_workers')
    fct.test_fail(lambda: cifar10_data(tmp_path, in_memory=True, valid_split='val'), contains="use 'test' or a fraction")


# ---------- as_data: the researcher's own loaders, tensors and datasets ----------
from torch.utils.data import DataLoader, Dataset
from relu_explore.data import as_data

def _xy(n=120, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float(), y

def test_as_data_tensors_stratified_seeded_holdout():
    x, y = _xy()
    d = as_data((x, y))
    assert (len(d.train_ds), len(d.valid_ds), d.num_classes, d.input_shape, d.name) == (96, 24, 4, (1, 8, 8), 'tensors')
    assert torch.bincount(d.valid_ds.tensors[1]).tolist() == [6, 6, 6, 6]           # 20 % of every class
    tr, va = d.train_ds.tensors[0], d.valid_ds.tensors[0]
    assert not (torch.cdist(tr.flatten(1), va.flatten(1)) == 0).any()               # disjoint
    assert torch.equal(as_data((x, y)).valid_ds.tensors[0], va)                     # same seed, same split
    assert not torch.equal(as_data((x, y), seed=1).valid_ds.tensors[0], va)
    both = as_data((x, y), valid_frac=0, batch_size=16)                            # all of it for both
    assert torch.equal(both.train_ds.tensors[0], x) and torch.equal(both.valid_ds.tensors[0], x) and both.train.batch_size == 16
    assert as_data((x.numpy(), y.numpy())).num_classes == 4                         # numpy arrays too

def test_as_data_loader_pair_and_dataset_pair():
    x, y = _xy()
    tl, vl = DataLoader(TensorDataset(x[:80], y[:80]), batch_size=16, shuffle=True), DataLoader(TensorDataset(x[80:], y[80:]), batch_size=16)
    d = as_data((tl, vl))
    assert d.train is tl and d.valid is vl and (d.num_classes, d.input_shape) == (4, (1, 8, 8))
    class Images(Dataset):                                   # torchvision-style: (tensor, int) items, .classes, .targets
        classes = ['a', 'b', 'c', 'd', 'e']
        def __init__(self, x, y): self.x, self.targets = x, y.tolist()
        def __len__(self): return len(self.x)
        def __getitem__(self, i): return self.x[i], self.targets[i]
    s = as_data((Images(x[:80], y[:80]), Images(x[80:], y[80:])), batch_size=8)
    assert (s.num_classes, s.input_shape, s.classes, s.name, s.train.batch_size) == (5, (1, 8, 8), Images.classes, 'images', 8)
    xb, yb = s.batch(4)
    assert xb.shape == (4, 1, 8, 8) and yb.tolist() == y[80:84].tolist()
    class Bare(Dataset):                                     # no classes, no targets: one pass over the validation loader
        def __init__(self, x, y): self.x, self.y = x, y
        def __len__(self): return len(self.x)
        def __getitem__(self, i): return self.x[i], int(self.y[i])
    assert as_data((Bare(x[:80], y[:80]), Bare(x[80:], y[80:]))).num_classes == 4
    assert as_data((Bare(x[:80], y[:80]), Bare(x[80:], y[80:])), num_classes=7).num_classes == 7

def test_as_data_refuses_what_it_cannot_use():
    x, y = _xy()
    accepts = 'relu_explore takes a relu_explore Data; a (train_loader, valid_loader) pair'
    fct.test_fail(lambda: as_data([x[i] for i in range(5)]), contains=accepts)                  # a list of images
    fct.test_fail(lambda: as_data([x[0], x[1]]), contains='integer class indices')              # two images are not (x, y)
    dicts = DataLoader([{'image': x[i], 'label': int(y[i])} for i in range(8)], batch_size=4)
    fct.test_fail(lambda: as_data((dicts, dicts)), contains='yields dicts')
    fct.test_fail(lambda: as_data((dicts, dicts)), contains='collate_fn that returns (inputs, labels)')
    fct.test_fail(lambda: as_data(DataLoader(TensorDataset(x, y))), contains='pass (train_loader, valid_loader)')
    fct.test_fail(lambda: as_data(x), contains='inputs without labels')
    fct.test_fail(lambda: as_data((x, y.float())), contains='integer class indices')
    fct.test_fail(lambda: as_data(((x * 40).to(torch.uint8), y)), contains='x.float() / 255')
    fct.test_fail(lambda: as_data((x, y[:-1])), contains='one class index per input')
    fct.test_fail(lambda: as_data({'train': x}), contains=accepts)

def test_entry_points_take_plain_data():
    "score, run_recipe, compare_recipes and method_run_point take loaders and tensors through as_data."
    from relu_explore.models import tiny_net
    from relu_explore.sites import relufy, relu_count
    from relu_explore.sensitivity import score
    from relu_explore.methods import run_recipe, compare_recipes, method_run_point, random_recipe
    x, y = _xy(96, classes=4)
    torch.manual_seed(0)
    model = tiny_net(num_classes=4)
    tl, vl = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16, shuffle=True), DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16)
    net = relufy(model, x[:2])
    s1, s2 = score(net, (x[64:], y[64:]), 'taylor'), score(net, (tl, vl), 'taylor')          # one batch / the valid loader
    assert all(torch.allclose(s1[k], s2[k], rtol=1e-4, atol=1e-6) for k in s1)
    res = run_recipe('random', model, (tl, vl), 300, epochs=1, device='cpu')
    assert res.relus == relu_count(res.net) == 300 and 0 <= res.acc <= 1
    df = compare_recipes(model, (x, y), [300], methods=['random'], epochs=1, device='cpu')
    assert df.relus.tolist() == [300]
    vals, _ = method_run_point(model, (x, y), 'random', epochs=1, device='cpu')(dict(point_key='p', budget=200))
    assert vals['relus'] == 200
    fct.test_fail(lambda: random_recipe(model, (tl, vl), 300), contains='call run_recipe(name, model, data')
    fct.test_fail(lambda: run_recipe('random', model, [x[i] for i in range(3)], 300), contains='relu_explore takes a relu_explore Data')
