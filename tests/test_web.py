"""The app without a server: `recycle-classifier export MODEL --web DIR` writes a static folder, a plain static file
server on 127.0.0.1 serves it, and Debian's headless Chromium (driven by Playwright) classifies photos in the page
with ONNX Runtime Web. The page must give `predict`'s labels, refuse non-photos with an error card, ask nothing of
any other host, and keep working offline once loaded."""
import base64, functools, json, shutil, subprocess, sys, threading, zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit
import numpy as np
import pytest
from conftest import ROOT, SAMPLE, run_cli
from test_app import CHROMIUM, CHROMIUM_ARGS, require_chromium

READY_TIMEOUT_MS = 180_000    # the runtime compiles its WebAssembly and the model's session starts, on a busy 2-core machine
RESULT_TIMEOUT_MS = 600_000   # photos are classified one after another


class StaticHandler(SimpleHTTPRequestHandler):
    "A plain static file server (as `python -m http.server`), quiet, sending files with sendfile; optionally cross-origin isolated"
    isolate = False
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, '.mjs': 'text/javascript', '.wasm': 'application/wasm'}

    def log_message(self, *args): pass

    def end_headers(self):
        if self.isolate:
            self.send_header('Cross-Origin-Opener-Policy', 'same-origin')
            self.send_header('Cross-Origin-Embedder-Policy', 'require-corp')
        super().end_headers()

    def copyfile(self, source, outputfile):
        try: self.connection.sendfile(source)
        except (BrokenPipeError, ConnectionResetError): pass


class StaticServer:
    "Serve `folder` at http://127.0.0.1:PORT/ in a background thread (`with StaticServer(d) as url: ...`)"
    def __init__(self, folder, isolate: bool = False, port: int = 0):
        handler = type('Handler', (StaticHandler,), dict(isolate=isolate))
        self.httpd = ThreadingHTTPServer(('127.0.0.1', port), functools.partial(handler, directory=str(folder)))
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def launch(pw):
    "Debian's headless Chromium, never a downloaded browser"
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def open_page(context, url: str):
    "A tab of `context` with the page loaded and its model ready"
    page = context.new_page()
    page.goto(url, timeout=READY_TIMEOUT_MS)
    page.wait_for_selector('body[data-state="ready"], body[data-state="failed"]', timeout=READY_TIMEOUT_MS)
    assert page.get_attribute('body', 'data-state') == 'ready', page.text_content('#rc-status')
    return page


def classify_files(page, paths, timeout_ms: int = RESULT_TIMEOUT_MS) -> list[dict]:
    "Choose `paths` in the page's photo input, as a person does, and return every card's data-* once none is pending"
    before = page.eval_on_selector_all('.rc-card', 'cs => cs.length')
    page.set_input_files('#rc-files', [str(p) for p in paths])
    page.wait_for_function(f'document.querySelectorAll(".rc-card:not([data-kind=pending])").length === {before + len(paths)}',
                           timeout=timeout_ms)
    return page.eval_on_selector_all('.rc-card', 'cs => cs.map(c => Object.assign({}, c.dataset))')[:len(paths)]   # newest first


def hosts_asked(urls) -> set:
    "The hosts (host:port) of every network request in `urls` (data: and blob: URLs stay in the page)"
    return {urlsplit(u).netloc for u in urls if urlsplit(u).scheme not in ('data', 'blob')}


@pytest.fixture(scope='module')
def site(model_path, tmp_path_factory):
    "The session's model exported with `recycle-classifier export MODEL --web DIR`"
    out = tmp_path_factory.mktemp('web')/'site'
    r = run_cli('export', model_path, '--web', out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'wrote {out}/' in r.stdout and 'http.server' in r.stdout
    return out


@pytest.fixture(scope='module')
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


@pytest.fixture(scope='module')
def photos():
    "Two validation photos of each class of the embedded sample"
    return [p for d in sorted((SAMPLE/'valid').iterdir()) for p in sorted(d.glob('*.jpg'))[:2]]


@pytest.fixture(scope='module')
def predicted(site, photos):
    "`predict`'s records for `photos`, from the ONNX file in the folder: {file name: record}"
    from recycle_classifier.formats.predictor import load_predictor
    return {Path(r['path']).name: r for r in load_predictor(site/'model.onnx').predict_paths(photos)}


def test_folder_and_config(site, model_path):
    from recycle_classifier.rules import DEFAULT_THRESHOLD
    from recycle_classifier.formats.onnx_predict import read_meta
    cfg = json.loads((site/'config.json').read_text())
    meta = read_meta(Path(model_path).with_suffix('.onnx'))
    assert cfg['classes'] == meta['classes'] and cfg['preprocess'] == meta['preprocess']
    assert cfg['threshold'] == DEFAULT_THRESHOLD == 0.6
    assert cfg['rules']['class_bins'] == {'cardboard': 'recycling', 'glass': 'recycling', 'metal': 'recycling',
                                          'paper': 'recycling', 'plastic': 'recycling', 'trash': 'landfill'}
    assert (site/'model.onnx').read_bytes() == Path(model_path).with_suffix('.onnx').read_bytes()
    for f in cfg['files']: assert (site/f).is_file(), f
    assert sum(f.stat().st_size for f in site.rglob('*') if f.is_file()) < 60e6   # the bound for the default model
    html = (site/'index.html').read_text()
    assert 'accept="image/*"' in html and 'capture="environment"' in html and 'multiple' in html
    assert '//' not in html.replace('<!doctype', '')   # no absolute URL: every file comes from the folder's own host


def test_page_gives_predicts_labels_and_an_error_card(site, browser, photos, predicted, tmp_path):
    not_photo = tmp_path/'saved-page.jpg'   # an HTML page saved as .jpg, as image search gives them
    not_photo.write_text('<html><body>Not found</body></html>')
    empty = tmp_path/'empty.png'
    empty.write_bytes(b'')
    urls = []
    with StaticServer(site) as url:
        context = browser.new_context()
        context.on('request', lambda r: urls.append(r.url))
        page = open_page(context, url)
        cards = classify_files(page, [*photos, not_photo, empty])
        status = page.text_content('#rc-status')
        context.close()
    by_file = {c['file']: c for c in cards}
    assert len(by_file) == len(photos) + 2
    for p in photos:
        card, rec = by_file[p.name], predicted[p.name]
        assert card['label'] == rec['label'], (p.name, card, rec)
        assert abs(float(card['probability']) - rec['probability']) < 1e-4, (p.name, card['probability'], rec['probability'])
        assert card['kind'] == ('sure' if rec['probability'] >= 0.6 else 'unsure')
        if card['kind'] == 'sure': assert card['bin'] == ('landfill' if rec['label'] == 'trash' else 'recycling')
    for bad in (not_photo, empty):
        card = by_file[bad.name]
        assert card['kind'] == 'error' and 'label' not in card, card
    assert '2 files could not be used' in status, status
    host = urlsplit(url).netloc
    assert hosts_asked(urls) == {host}, hosts_asked(urls)
    asked = {urlsplit(u).path for u in urls}
    assert {'/', '/config.json', '/model.onnx', '/ort/ort.wasm.min.js', '/ort/ort-wasm-simd-threaded.wasm'} <= asked, asked


def test_page_texts(site, browser, photos, predicted):
    "The headline, the bin and the advice say what the Voilà app says for the same prediction"
    from recycle_classifier.app.verdict import Prediction, verdict
    from recycle_classifier.rules import load_guidelines, DEFAULT_GUIDELINES
    rules = load_guidelines(DEFAULT_GUIDELINES)
    with StaticServer(site) as url:
        context = browser.new_context()
        page = open_page(context, url + '?sw=off')
        cards = classify_files(page, photos[:4])
        shown = page.eval_on_selector_all('.rc-card', '''cs => cs.map(c => ({file: c.dataset.file,
            headline: c.querySelector('.rc-headline').textContent, advice: c.querySelector('.rc-advice').textContent,
            bin: (c.querySelector('.rc-bin') || {}).textContent || null}))''')
        # the unsure wording, on made-up probabilities: the page's verdict against app.verdict
        for probs in ([0.48, 0.41, 0.05, 0.03, 0.02, 0.01], [0.3, 0.05, 0.25, 0.2, 0.1, 0.1], [0.59, 0.01, 0.01, 0.01, 0.01, 0.37]):
            js = page.evaluate('p => RCApp.verdict(p)', probs)
            py = verdict(Prediction(dict(zip(json.loads((site/'config.json').read_text())['classes'], probs))), rules)
            assert (js['kind'], js['headline'], js['advice'], (js['bin'] or {}).get('key')) == \
                   (py.kind, py.headline, py.advice, py.bin.key if py.bin else None)
        assert page.evaluate('[0.125, 0.135, 0.5, 0.994999].map(RCApp.pct)') == [f'{p:.0%}' for p in (0.125, 0.135, 0.5, 0.994999)]
        context.close()
    for s in shown:
        rec = predicted[s['file']]
        v = verdict(Prediction.from_record(rec), rules)
        assert (s['headline'], s['advice'], s['bin']) == (v.headline, v.advice, v.bin.label if v.bin else None), (s, v)


def test_resize_and_decoding_match_the_predictor(site, browser, tmp_path):
    "resize.js gives the predictor's pixels bit for bit (every method and filter), and the browser decodes as Pillow does"
    from PIL import Image
    from recycle_classifier.base.images import open_image
    from recycle_classifier.formats.onnx_predict import fastai_resize
    rng = np.random.default_rng(0)
    cases = []
    for (w, h) in [(97, 61), (61, 97), (300, 40), (64, 64)]:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for pre in [dict(method='squish', size=[48, 48], resample=2), dict(method='squish', size=[120, 30], resample=3),
                    dict(method='squish', size=[50, 70], resample=1), dict(method='crop', size=[40, 32], resample=2),
                    dict(method='pad', size=[40, 40], resample=4, pad_mode='reflection'),
                    dict(method='pad', size=[48, 24], resample=5, pad_mode='border'),
                    dict(method='pad', size=[32, 48], resample=2, pad_mode='zeros'),
                    dict(method='random_resized_crop', size=[32, 32], final_size=[40, 40], resample=2)]:
            out = np.asarray(fastai_resize(Image.fromarray(arr), pre))
            cases.append(dict(w=w, h=h, data=base64.b64encode(arr.tobytes()).decode(), pre=pre, out=base64.b64encode(out.tobytes()).decode()))
    # decoding: a sample JPEG, one turned by its EXIF orientation, a grayscale JPEG, a PNG with transparency
    src = SAMPLE/'valid'/'glass'/sorted(p.name for p in (SAMPLE/'valid'/'glass').glob('*.jpg'))[0]
    im = Image.open(src)
    exif = im.getexif(); exif[0x0112] = 6
    im.save(tmp_path/'turned.jpg', exif=exif, quality=90)
    im.convert('L').save(tmp_path/'gray.jpg', quality=90)
    rgba = np.asarray(im.convert('RGBA')).copy(); rgba[..., 3] = np.linspace(0, 255, rgba.shape[1]).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path/'alpha.png')
    files = [src, tmp_path/'turned.jpg', tmp_path/'gray.jpg', tmp_path/'alpha.png']
    with StaticServer(site) as url:
        context = browser.new_context()
        page = open_page(context, url + '?sw=off')
        bad = page.evaluate('''cases => cases.filter(c => {
            const b = s => Uint8Array.from(atob(s), ch => ch.charCodeAt(0));
            const o = RCResize.fastaiResize({width: c.w, height: c.h, data: b(c.data)}, c.pre), want = b(c.out);
            return o.data.length !== want.length || o.data.some((v, i) => v !== want[i]);
        }).map(c => JSON.stringify(c.pre) + ` from ${c.w}x${c.h}`)''', cases)
        decoded = [page.evaluate('''async b64 => {
            const im = await RCApp.decode(new Blob([Uint8Array.from(atob(b64), c => c.charCodeAt(0))]));
            let s = ''; for (let i = 0; i < im.data.length; i += 8192) s += String.fromCharCode(...im.data.subarray(i, i + 8192));
            return [im.width, im.height, btoa(s)]; }''', base64.b64encode(f.read_bytes()).decode()) for f in files]
        context.close()
    assert bad == [] and len(cases) == 32, bad
    for f, (w, h, data) in zip(files, decoded):
        want = np.asarray(open_image(f))
        got = np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 3)
        assert got.shape == want.shape, (f.name, got.shape, want.shape)
        assert np.array_equal(got, want), (f.name, np.abs(got.astype(int) - want).max())


def test_offline_once_loaded(site, browser, photos, predicted):
    "The service worker keeps the folder: with the server gone, the page loads again and classifies"
    urls = []
    context = browser.new_context()
    with StaticServer(site) as url:
        page = open_page(context, url)
        page.wait_for_function('navigator.serviceWorker.controller !== null', timeout=READY_TIMEOUT_MS)
    context.on('request', lambda r: urls.append(r.url))
    page.reload(timeout=READY_TIMEOUT_MS)
    page.wait_for_selector('body[data-state="ready"]', timeout=READY_TIMEOUT_MS)
    threads, cores = int(page.get_attribute('body', 'data-threads')), page.evaluate('navigator.hardwareConcurrency')
    cards = classify_files(page, photos[:1])
    context.close()
    assert cards[0]['label'] == predicted[photos[0].name]['label']
    # answered by the service worker, which also makes the page cross-origin isolated: a thread per core
    assert threads == cores, (threads, cores)
    assert hosts_asked(urls) <= {urlsplit(url).netloc}


def test_threads_when_the_host_isolates(site, browser, photos, predicted):
    "A host that sends the cross-origin isolation headers gives the runtime a thread per core on the first visit"
    with StaticServer(site, isolate=True) as url:
        context = browser.new_context()
        page = open_page(context, url + '?sw=off')
        isolated, threads = page.evaluate('self.crossOriginIsolated'), int(page.get_attribute('body', 'data-threads'))
        cores = page.evaluate('navigator.hardwareConcurrency')
        cards = classify_files(page, photos[2:4])
        context.close()
    assert isolated and threads == cores, (isolated, threads, cores)
    assert [c['label'] for c in cards] == [predicted[p.name]['label'] for p in photos[2:4]]


def test_first_visit_on_a_plain_host_gets_threads(site, browser, photos, predicted):
    """A host that sends no isolation headers: the page lets its service worker (which adds them) take over and reloads
    once, so even a first visit runs on a thread per core; the warm-up run waits for the visitor's first touch"""
    with StaticServer(site) as url:
        context = browser.new_context()
        page = open_page(context, url)
        isolated, threads = page.evaluate('self.crossOriginIsolated'), int(page.get_attribute('body', 'data-threads'))
        how, cores = page.evaluate("performance.getEntriesByType('navigation')[0].type"), page.evaluate('navigator.hardwareConcurrency')
        before = page.evaluate('RCApp.state.warm || null')
        page.dispatch_event('label[for="rc-files"]', 'pointerdown')   # a visitor reaching for the photo button
        page.evaluate('RCApp.state.queue')
        after = page.evaluate('RCApp.state.warm')
        cards = classify_files(page, photos[4:6])
        context.close()
        plain = browser.new_context()   # without the service worker (?sw=off): no reload, one thread
        page = open_page(plain, url + '?sw=off')
        plain_threads, plain_how = int(page.get_attribute('body', 'data-threads')), page.evaluate("performance.getEntriesByType('navigation')[0].type")
        plain.close()
    assert (isolated, threads, how) == (True, cores, 'reload'), (isolated, threads, how)
    assert (before, after) == (None, 'done'), (before, after)
    assert [c['label'] for c in cards] == [predicted[p.name]['label'] for p in photos[4:6]]
    assert (plain_threads, plain_how) == (1, 'navigate')


def test_export_web_errors(model_path, tmp_path, monkeypatch):
    "Bad input is one line and exit code 2 (a UserError), and nothing of the user's is touched"
    mine = tmp_path/'mine'
    mine.mkdir()
    (mine/'notes.txt').write_text('keep me')
    for args, says in [((model_path, '--web', mine), 'already holds other files'),
                       ((model_path, '--web', tmp_path/'a', '--quantize'), 'export the int8 copy first'),
                       ((tmp_path/'nope.pkl', '--web', tmp_path/'b'), 'no such model file'),
                       ((model_path, '--web', tmp_path/'c', '--threshold', '60'), 'threshold'),
                       ((model_path, '--threshold', '0.5'), 'go with --web')]:
        r = run_cli('export', *args)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert (mine/'notes.txt').read_text() == 'keep me' and sorted(p.name for p in mine.iterdir()) == ['notes.txt']
    assert not any(p.name.startswith('.') for p in tmp_path.iterdir())
    import recycle_classifier.app.web as web
    monkeypatch.setattr(web, 'ORT_DIR', tmp_path/'no-runtime')
    r = run_cli('export', model_path, '--web', tmp_path/'d')
    assert r.returncode == 2 and 'ONNX Runtime Web is missing' in r.stderr and 'make install' in r.stderr, r.stderr
    assert not (tmp_path/'d').exists()


def test_wheel_ships_the_runtime(tmp_path):
    "A wheel built after `make install` carries the page and ONNX Runtime Web, so `export --web` works from it"
    from recycle_classifier.app.web import ORT_FILES, PAGE_FILES
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', tmp_path, ROOT],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    names = set(zipfile.ZipFile(next(tmp_path.glob('recycle_classifier-*.whl'))).namelist())
    web = 'recycle_classifier/resources/web/'
    for f in [*PAGE_FILES, 'ort-LICENSE.txt', *(f'ort/{f}' for f in ORT_FILES)]: assert web + f in names, f
