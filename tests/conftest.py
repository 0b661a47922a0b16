"""Shared fixtures: the embedded sample, a CLI runner, and one small model trained once per test session."""
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
from recycle_classifier.base.core import SAMPLE_DIR
SAMPLE = SAMPLE_DIR
CLASSES = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash']


def cli(*args, env=None, timeout=900, cwd=None):
    "Run `recycle-classifier ARGS` in a fresh process; return the CompletedProcess (text)"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, '-m', 'recycle_classifier.cli', *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd or ROOT)


def run_cli(*args, cwd=None):
    "Run `recycle-classifier ARGS` inside this process (no fresh torch import): a CompletedProcess-like result"
    import contextlib, io, types
    from recycle_classifier.cli import main
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd: os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: code = main(list(map(str, args)))
            except SystemExit as e: code = e.code if isinstance(e.code, int) else 2
    finally: os.chdir(old)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope='session', autouse=True)
def offline_torch_home(tmp_path_factory):
    "A private, empty torch hub cache, a closed download port and a private feature cache: every test runs as offline as this machine, and touches nothing of the user's"
    home = tmp_path_factory.mktemp('torch-home')
    old = {k: os.environ.get(k) for k in ('TORCH_HOME', 'RECYCLE_CLASSIFIER_WEIGHTS_URL', 'RECYCLE_CLASSIFIER_CACHE_DIR')}
    os.environ['TORCH_HOME'] = str(home)
    os.environ['RECYCLE_CLASSIFIER_WEIGHTS_URL'] = 'http://127.0.0.1:9'
    # never the user's feature cache; one per test run (scripts/test.sh shares it with the notebooks)
    os.environ.setdefault('RECYCLE_CLASSIFIER_CACHE_DIR', str(tmp_path_factory.mktemp('features')))
    yield home
    for k, v in old.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    "`recycle-classifier train` on the sample with the default recipe, trained once per test run; (model path, output)"
    out = tmp_path_factory.mktemp('models')/'sample.pkl'
    # its own empty hub cache, so the bundled-weights path is taken whichever tests ran before
    r = cli('train', SAMPLE, '--out', out, env={'TORCH_HOME': str(tmp_path_factory.mktemp('torch-home-train'))})
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout + r.stderr


@pytest.fixture(scope='session')
def model_path(trained):
    "Path of the session's exported model"
    return trained[0]
