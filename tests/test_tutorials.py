"""Tutorial 2's promise, checked on a model that no notebook uses: any torchvision CNN gets a sensitivity heatmap and a
two-point frontier with the package as it is, by the calls the tutorial shows (relufy, score, plot_site_heatmap,
sweep, plot_frontier)."""
import pytest, torch, torch.nn as nn
import relu_explore as rx

def test_unseen_torchvision_model_gets_heatmap_and_two_point_frontier(tmp_path):
    torchvision = pytest.importorskip('torchvision')
    data = rx.digits_data(batch_size=64, upsample=32).subset(n_train=512)
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    model.conv1[0] = nn.Conv2d(1, 24, 3, stride=1, padding=1, bias=False)      # the user's adaptation: 1 channel, small images
    rx.train(model, data.train, data.valid, epochs=1, opt='adam', lr=2e-3, progress=False)
    net = rx.relufy(model, data.example())
    total = rx.relu_total(net)
    assert len(rx.get_sites(net)) > 10 and total > 10_000
    scores = rx.score(net, data.train, method='taylor', max_batches=2)
    masks = rx.allocate(scores, keep_frac=0.05)
    site = max(scores, key=lambda k: float(scores[k].sum()))
    heat = rx.save_chart(rx.plot_site_heatmap(scores, site, mask=masks), tmp_path / 'heatmap.png')
    assert heat.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    res = rx.sweep(model, data, budgets=[0.1, 0.01], store=tmp_path / 'store', epochs=1, opt='adam', lr=1e-3, progress=False)
    assert len(res) == 2 and sorted(res.relus) == sorted([round(0.1 * total), round(0.01 * total)])
    assert res.acc.between(0, 1).all() and (res.pi_online_ms > 0).all()
    front = rx.save_chart(rx.plot_frontier(res), tmp_path / 'frontier.png')
    assert front.stat().st_size > 1000
    assert len(rx.load_results(tmp_path / 'store')) == 2                        # persisted, readable back
