import os, warnings, pytest, torch
from torch.overrides import TorchFunctionMode
import torch.nn.functional as F

# Small nets on a shared 2-core box: one intra-op thread is fastest and avoids oversubscription
# (measured: 2 threads under load were up to 30x slower than 1 for the digits models).
torch.set_num_threads(1)

@pytest.fixture(autouse=True)
def one_thread():
    "Every test starts on one thread, whatever an earlier test set, and leaves the count as it found it."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

class ReluElementCounter(TorchFunctionMode):
    "Independent ReLU count: every relu/relu_ call's output elements per image, however it is called."
    FUNCS = {F.relu, torch.relu, torch.relu_, F.relu_, torch.Tensor.relu, torch.Tensor.relu_}
    def __init__(self, batch):
        super().__init__(); self.batch, self.n, self.calls = batch, 0, 0
    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # per-image ReLUs only: outputs with the batch dimension first (use a batch > 1 so that
        # input-independent ReLUs, e.g. swin_v2's position-bias MLP on a (1, ...) table, are told apart)
        if func in self.FUNCS and out.dim() > 0 and out.shape[0] == self.batch:
            self.calls += 1
            self.n += out.numel() // self.batch
        return out

def count_relu_elements(model, x):
    "(elements per image, number of per-image calls) by running `model` on `x` (batch > 1) under a TorchFunctionMode."
    assert x.shape[0] > 1, "use a batch of at least 2 to tell per-image ReLUs from input-independent ones"
    model.eval()
    with torch.no_grad(), ReluElementCounter(x.shape[0]) as c: model(x)
    return c.n, c.calls

@pytest.fixture
def relu_counter(): return count_relu_elements

def kill_after_rows(p, out, n:int, timeout:float=300):
    "SIGKILL process `p` as soon as the results store in `out` holds `n` finished rows; returns those rows."
    import signal, time
    from relu_explore.frontier import load_results
    def rows():
        try: return load_results(out)
        except Exception: return None
    t0 = time.time()
    while time.time() - t0 < timeout:
        df = rows()
        if df is not None and len(df) >= n: break
        if p.poll() is not None: pytest.fail(f"the process ended before {n} rows were stored:\n{p.stdout.read()[-3000:]}")
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL); p.wait()
    return rows()
