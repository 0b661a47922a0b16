"""The package as users install it: a wheel, installed into a fresh virtualenv outside the repository, runs
`demo` and serves `app` with only the files it ships; `--help` needs neither torch nor fastai."""
import os, shutil, subprocess, sys, time, urllib.request, zipfile
from pathlib import Path
import pytest
from conftest import ROOT, cli


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    "A wheel built from the working tree (no build isolation: the build backend is already installed)"
    out = tmp_path_factory.mktemp('dist')
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', out, ROOT],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return next(out.glob('recycle_classifier-*.whl'))


@pytest.fixture(scope='module')
def venv(wheel, tmp_path_factory) -> Path:
    "A fresh virtualenv outside the repository with the wheel installed; the dependencies come from the test's own environment"
    home = tmp_path_factory.mktemp('outside')
    venv = home/'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv], check=True)
    site = next((venv/'lib').glob('python3*/site-packages'))
    # the dependencies (torch, fastai, ...) are the test environment's; its editable install of this repo is
    # not (a .pth line adds a folder to sys.path without running that folder's own .pth files)
    deps = next(p for p in map(Path, sys.path) if p.name == 'site-packages' and (p/'fastai').exists())
    (site/'deps.pth').write_text(str(deps) + '\n')
    r = subprocess.run([sys.executable, '-m', 'pip', '--python', venv/'bin'/'python', 'install', '--no-deps', '-q', wheel],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv


def run_outside(venv, *args, cwd, timeout=600, **kw):
    "Run the installed console script in `cwd`, with no trace of the repository in the environment"
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    return subprocess.run([venv/'bin'/'recycle-classifier', *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def test_wheel_ships_its_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for f in ['recycle_classifier/resources/recycle_app.ipynb', 'recycle_classifier/resources/guidelines/default.yaml',
              'recycle_classifier/resources/trashnet-sample/LICENSE', 'recycle_classifier/resources/trashnet-sample/README.md']:
        assert f in names, f
    assert sum(n.endswith('.jpg') for n in names) >= 120


def test_installed_package_is_the_wheel(venv, tmp_path):
    code = 'import recycle_classifier, recycle_classifier.base.core as c; print(recycle_classifier.__file__); print(c.SAMPLE_DIR.exists())'
    r = subprocess.run([venv/'bin'/'python', '-c', code], cwd=tmp_path, capture_output=True, text=True)
    where, sample = r.stdout.split()
    assert str(venv) in where and str(ROOT) not in where, where
    assert sample == 'True'


def test_help_needs_no_torch(venv, tmp_path):
    code = ('import sys\nfrom recycle_classifier.cli import main\ntry: main(["--help"])\nexcept SystemExit: pass\n'
            'print(sorted(m for m in ("torch", "fastai", "torchvision") if m in sys.modules))')
    r = subprocess.run([venv/'bin'/'python', '-c', code], cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == '[]', r.stdout + r.stderr
    assert 'demo' in r.stdout and 'extend' in r.stdout


def test_demo_and_app_from_the_wheel(venv, tmp_path):
    "The README's main job, from the installed wheel: train on the bundled sample, export, reload, show photos"
    r = run_outside(venv, 'demo', cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'validation accuracy:' in r.stdout and 'reloading' in r.stdout
    marks = [l for l in r.stdout.splitlines() if l[:1] and l[:1] in '✓✗']
    assert len(marks) >= 6 and all('->' in l for l in marks)
    assert '\r' not in r.stdout and '█' not in r.stdout      # a clean log when the output is not a terminal
    for suffix in ('.pkl', '.json', '.onnx'): assert (tmp_path/'models'/'demo').with_suffix(suffix).exists(), suffix
    port = 18000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    # the dependencies' data files (Voila's page templates) live beside the borrowed dependencies, not in this venv
    env['JUPYTER_PATH'] = str(Path(sys.prefix)/'share'/'jupyter')
    app = subprocess.Popen([venv/'bin'/'recycle-classifier', 'app', '--model', 'models/demo.pkl', '--port', str(port)],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, page = time.time() + 120, None
        while time.time() < deadline and app.poll() is None:
            try: page = urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=30).read().decode(); break
            except OSError: time.sleep(1)
        if page is None:
            app.terminate()
            pytest.fail(f'app did not answer; exit code {app.poll()}: {app.communicate(timeout=20)[0][-3000:]}')
        assert 'voila' in page.lower()
    finally:
        app.terminate()
        try: app.wait(20)
        except subprocess.TimeoutExpired: app.kill()


# Where this machine keeps released wheels (pip's own configuration points at them); the slim install takes its
# dependencies from there with --no-index, so the test downloads nothing. RECYCLE_CLASSIFIER_WHEELS adds a folder.
WHEEL_STORES = [p for p in [os.environ.get('RECYCLE_CLASSIFIER_WHEELS'), '/opt/pypi/files', '/opt/pypi-more/files', '/opt/wheels']
                if p and Path(p).is_dir()]


@pytest.fixture(scope='module')
def slim_venv(wheel, tmp_path_factory) -> Path:
    "A fresh virtualenv with the wheel and only what it declares as its dependencies (no extras), resolved by pip offline"
    if not WHEEL_STORES: pytest.skip('no local wheel store (set RECYCLE_CLASSIFIER_WHEELS to a folder of wheels)')
    venv = tmp_path_factory.mktemp('slim')/'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv], check=True)
    links = [a for p in WHEEL_STORES for a in ('--find-links', p)]
    r = subprocess.run([sys.executable, '-m', 'pip', '--python', venv/'bin'/'python', 'install', '-q', '--no-index', *links, wheel],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv


def test_slim_install_predicts_from_onnx_without_torch(slim_venv, model_path, tmp_path):
    "The wheel's own dependencies (numpy, Pillow, onnxruntime) are enough to classify with a model's .onnx"
    import json
    freeze = subprocess.run([sys.executable, '-m', 'pip', '--python', slim_venv/'bin'/'python', 'list', '--format', 'freeze'],
                            capture_output=True, text=True).stdout.lower()
    for heavy in ('torch', 'fastai', 'voila', 'cleanlab', 'onnx=='):
        assert f'\n{heavy}' not in '\n' + freeze, (heavy, freeze)
    assert 'onnxruntime==' in freeze and 'numpy==' in freeze and 'pillow==' in freeze, freeze
    photo = sorted((Path(__file__).parents[1]/'recycle_classifier'/'resources'/'trashnet-sample'/'valid'/'glass').glob('*.jpg'))[0]
    import shutil
    onnx = shutil.copy(model_path.with_suffix('.onnx'), tmp_path/'model.onnx')   # the .onnx alone
    r = run_outside(slim_venv, 'predict', onnx, photo, '--json', cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rec = json.loads(r.stdout.splitlines()[-1])
    assert rec['path'] == str(photo) and rec['label'] in rec['probs'] and len(rec['probs']) == 6
    r = run_outside(slim_venv, '--help', cwd=tmp_path)
    assert r.returncode == 0 and 'predict' in r.stdout
