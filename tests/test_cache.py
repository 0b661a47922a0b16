"""The feature cache shared by processes: concurrent runs don't corrupt it, an interrupted run resumes, and a
foreign cache folder is rebuilt with one warning line."""
import subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from recycle_classifier.base.core import SAMPLE_DIR
from recycle_classifier.base.layout import image_files
from recycle_classifier.features.cache import FeatureCache
from recycle_classifier.features.embedder import get_embedder

SPEC = 'efficientnet_lite0@64'
EMBED = """
import sys, numpy as np
from recycle_classifier.features.cache import FeatureCache
from recycle_classifier.features.embedder import get_embedder
from recycle_classifier.base.layout import image_files
paths = image_files(sys.argv[2])
f, ok, err = FeatureCache(sys.argv[1]).features(get_embedder(%r), paths, ('orig', 'flip'), bs=4)
np.save(sys.argv[3], f)
""" % SPEC


def test_two_processes_share_one_cache(tmp_path):
    data = SAMPLE_DIR/'valid'
    procs = [subprocess.Popen([sys.executable, '-c', EMBED, str(tmp_path/'cache'), str(data), str(tmp_path/f'{i}.npy')],
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs: assert p.wait(timeout=600) == 0, p.stderr.read()
    a, b = np.load(tmp_path/'0.npy'), np.load(tmp_path/'1.npy')
    assert a.shape == (60, 2, 1280) and np.allclose(a, b, atol=1e-5)
    assert not list((tmp_path/'cache').rglob('*.tmp')), 'no temporary files left behind'
    cache = FeatureCache(tmp_path/'cache')
    c, ok, err = cache.features(get_embedder(SPEC), image_files(data), ('orig', 'flip'))
    assert cache.stats == dict(hits=60, misses=0, rebuilt=0) and np.allclose(c, a, atol=1e-5)


def test_interrupted_run_resumes(tmp_path):
    paths = image_files(SAMPLE_DIR/'valid')[:12]
    cache = FeatureCache(tmp_path/'cache')
    def stop_after_two(batches):
        for i, b in enumerate(batches):
            if i == 2: raise KeyboardInterrupt
            yield b
    with pytest.raises(KeyboardInterrupt):
        cache.features(get_embedder(SPEC), paths, ('orig',), bs=4, progress=stop_after_two)
    again = FeatureCache(tmp_path/'cache')
    f, ok, _ = again.features(get_embedder(SPEC), paths, ('orig',), bs=4)
    assert (again.stats['hits'], again.stats['misses']) == (8, 4) and len(ok) == 12


def test_foreign_cache_files_are_rebuilt_with_one_warning(tmp_path):
    paths = image_files(SAMPLE_DIR/'valid')[:3]
    emb = get_embedder(SPEC)
    FeatureCache(tmp_path/'cache').features(emb, paths, ('orig',))
    for f in (tmp_path/'cache').rglob('*.npy'): np.save(f, np.zeros(7, np.float64))   # another program's arrays
    said = []
    cache = FeatureCache(tmp_path/'cache', notify=said.append)
    f, ok, _ = cache.features(emb, paths, ('orig',))
    assert cache.stats['rebuilt'] == 3 and len(said) == 1 and 'feature cache' in said[0]
    assert f.shape == (3, 1, 1280) and np.abs(f).sum() > 0


def test_no_cache_keeps_nothing(tmp_path):
    cache = FeatureCache(tmp_path/'cache', enabled=False)
    f, ok, _ = cache.features(get_embedder(SPEC), image_files(SAMPLE_DIR/'valid')[:2], ('orig',))
    assert f.shape == (2, 1, 1280) and not (tmp_path/'cache').exists()


def test_default_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('RECYCLE_CLASSIFIER_CACHE_DIR', str(tmp_path/'elsewhere'))
    assert FeatureCache().dir == tmp_path/'elsewhere'
    monkeypatch.delenv('RECYCLE_CLASSIFIER_CACHE_DIR')
    assert 'recycle-classifier' in str(FeatureCache().dir)
