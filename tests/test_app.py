"""The app in a real browser: `recycle-classifier app` serves it with Voilà on 127.0.0.1, and Debian's headless
Chromium (/usr/bin/chromium, driven by Playwright) uploads photos the way a person would."""
import os, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
from urllib.parse import urlparse
import pytest
from conftest import ROOT, SAMPLE, cli

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
START_TIMEOUT = 240   # kernel start, torch + fastai imports and the model's warm-up, on a busy 2-core machine
RESULT_TIMEOUT_MS = 90_000


def require_chromium():
    "Skip without Chromium on a developer's machine; fail in CI, which must install it"
    if CHROMIUM.exists(): return
    if os.environ.get('CI') == 'true': pytest.fail(f'{CHROMIUM} is missing: CI must `apt-get install -y chromium`')
    pytest.skip(f'{CHROMIUM} is not installed (apt-get install -y chromium chromium-driver); CI installs it')


def free_port() -> int:
    "A TCP port nobody listens on at 127.0.0.1"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_page(url: str, proc: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT):
    "Wait until `url` answers 200, failing early with the server's log if it exits"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None: pytest.fail(f'the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}')
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: time.sleep(1)
    pytest.fail(f'the app did not answer within {timeout} s:\n{log.read_text()[-3000:]}')


def stop(proc: subprocess.Popen):
    "Stop the app as Ctrl-C or a service manager would (SIGTERM), and its whole process group if it hangs"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope='module')
def served_model(model_path, tmp_path_factory):
    "The session's model exported both ways, as `train` writes it: model.pkl and model.onnx"
    import shutil
    from recycle_classifier.formats.onnx_export import export_onnx
    pkl = Path(shutil.copy(model_path, tmp_path_factory.mktemp('served')/'model.pkl'))
    export_onnx(pkl)
    return pkl


def start_app(served_model, tmp_path_factory, *options, pool: int = 3):
    "Start `recycle-classifier app` with the session's model on a free port of 127.0.0.1: (process, url, log path)"
    port, log = free_port(), tmp_path_factory.mktemp('app')/'server.log'
    cmd = [sys.executable, '-m', 'recycle_classifier.cli', 'app', '--model', str(served_model),
           '--models-dir', str(served_model.parent), '--port', str(port), '--pool-size', str(pool), *options]
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f'http://127.0.0.1:{port}/', log


@pytest.fixture(scope='module')
def server(served_model, tmp_path_factory):
    "`recycle-classifier app` with the session's model on a free port of 127.0.0.1; (url, log path)"
    require_chromium()
    proc, url, log = start_app(served_model, tmp_path_factory)
    try:
        wait_for_page(url, proc, log)
        yield url, log
    finally: stop(proc)
    assert proc.returncode is not None


READY = "() => (document.querySelector('.rc-status') || {}).textContent?.startsWith('Ready')"


def open_app(browser, url: str, **context):
    "A new visitor's tab (its own browser context) with the app loaded and its model ready; every URL it requests in `tab.requested`"
    tab = browser.new_context(**context).new_page()
    tab.requested = []
    tab.on('request', lambda r: tab.requested.append(r.url))
    tab.on('websocket', lambda ws: tab.requested.append(ws.url))
    tab.goto(url, timeout=START_TIMEOUT * 1000)
    tab.wait_for_function(READY, timeout=START_TIMEOUT * 1000)
    return tab


def other_hosts(urls) -> list:
    "The URLs that would leave this machine (data: and blob: URLs stay in the page)"
    return [u for u in urls if urlparse(u).scheme not in ('data', 'blob') and urlparse(u).hostname != '127.0.0.1']


@pytest.fixture(scope='module')
def browser():
    "Debian's headless Chromium, driven by Playwright"
    require_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope='module')
def page(server, browser):
    "A headless Chromium tab with the app loaded and its model ready"
    return open_app(browser, server[0], viewport={'width': 1100, 'height': 860})


GREEN, AMBER = 'rgb(46, 125, 50)', 'rgb(249, 168, 37)'


def upload_label(page) -> str:
    "What the photo upload button shows: its label is drawn by CSS, the text ipywidgets writes (with its count) is not"
    return page.locator('.widget-upload').first.evaluate(
        "b => getComputedStyle(b).fontSize === '0px' ? getComputedStyle(b, '::before').content.replace(/^\"|\"$/g, '') : b.innerText")


def upload(page, *paths):
    "Choose `paths` in the app's upload button, as a person does in the file dialog"
    with page.expect_file_chooser() as chooser: page.click('.widget-upload')
    chooser.value.set_files([str(p) for p in paths])


def card(page, n: int, i: int = 0):
    "The `i`th card of upload number `n`, once it has rendered"
    page.wait_for_selector(f'.rc-card[data-upload="{n}"]', timeout=RESULT_TIMEOUT_MS)
    return page.locator(f'.rc-card[data-upload="{n}"]').nth(i)


@pytest.fixture(scope='module')
def confident_photo(model_path):
    "A validation photo the session's model gets right, with the most confidence; (path, label, probability)"
    from recycle_classifier.base.images import open_image
    from recycle_classifier.formats.predictor import load_predictor
    model = load_predictor(model_path)
    vocab = model.classes
    photos = [p for c in vocab for p in sorted((SAMPLE/'valid'/c).glob('*.jpg'))[:3]]
    probs = model.predict_probs([open_image(p) for p in photos])
    scored = [(float(pr[vocab.index(p.parent.name)]), p) for p, pr in zip(photos, probs)
              if vocab[int(pr.argmax())] == p.parent.name]
    assert scored, 'the session model gets no validation photo right'
    prob, path = max(scored)
    return path, path.parent.name, prob


def test_upload_photo_bad_files_then_photo_again(page, server, confident_photo, tmp_path):
    from recycle_classifier.rules import DEFAULT_GUIDELINES, DEFAULT_THRESHOLD, load_guidelines
    photo, label, prob = confident_photo
    rules = load_guidelines(DEFAULT_GUIDELINES)
    assert 'app_from_env' not in page.content()          # Voilà strips the code cells

    upload(page, photo)
    first = card(page, 1)
    assert first.get_attribute('data-label') == label
    text = first.inner_text()
    fill = first.locator('.rc-row.rc-top .rc-fill').evaluate('e => getComputedStyle(e).backgroundColor')
    if prob >= DEFAULT_THRESHOLD:                        # the model is sure: the class, its bin, that item's advice
        assert first.get_attribute('data-bin') == rules.bin_for(label).key
        assert f'{label.capitalize()} {prob:.0%}' in text and rules.bin_for(label).label in text
        assert first.locator('.rc-advice').inner_text() == rules.advice_for(label) and fill == GREEN
    else:                                                # it says so plainly, and the top bar is not green
        assert text.count('Not sure:') == 1 and f'{label} {prob:.0%}' in text and fill == AMBER
    assert upload_label(page) == 'Take or choose photos'   # emptied after the upload, and no "(0)" shown
    assert first.locator('.rc-row').count() == 6         # a probability bar for each class
    assert first.locator('img.rc-heatmap').count() == 0  # the answer comes first, without torch
    page.click('.rc-app .widget-checkbox input')         # asking for heatmaps loads the .pkl (torch) for them
    heat = page.locator('.rc-card[data-upload="1"] img.rc-heatmap')
    heat.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert heat.evaluate('img => img.complete && img.naturalWidth > 0')
    shot = tmp_path/'app.png'
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000

    notes = tmp_path/'notes.txt'
    notes.write_text('a shopping list, not a photo')
    cut = tmp_path/'cut.jpg'
    cut.write_bytes(photo.read_bytes()[:1500])
    upload(page, notes, cut)
    bad = card(page, 2)
    assert bad.get_attribute('data-kind') == 'error'
    assert "Can't use this file: not an image" in bad.inner_text() and 'notes.txt' in bad.inner_text()
    assert 'corrupt or truncated' in card(page, 2, 1).inner_text()
    assert '2 files could not be used' in page.inner_text('.rc-status')
    assert 'Traceback' not in page.inner_text('body')

    upload(page, photo)                                  # the app carries on, even with the same photo
    assert card(page, 3).get_attribute('data-label') == label
    # heatmaps are on now: the status says so while it draws, then reports the photo
    page.wait_for_function("document.querySelector('.rc-status').innerText.includes('1 photo classified')",
                           timeout=RESULT_TIMEOUT_MS)
    assert 'Voilà is running at' in server[1].read_text() and f'http://127.0.0.1:' in server[1].read_text()


def test_app_command_refuses_what_it_cannot_serve(model_path, tmp_path):
    r = cli('app', '--model', tmp_path/'missing.pkl')
    assert r.returncode == 2 and 'no such model file' in r.stderr
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0)); busy.listen()
        r = cli('app', '--model', model_path, '--port', busy.getsockname()[1])
    assert r.returncode == 2 and 'is in use' in r.stderr
    bad_rules = tmp_path/'rules.yaml'
    bad_rules.write_text('bins: [oops')
    r = cli('app', '--model', model_path, '--guidelines', bad_rules)
    assert r.returncode == 2 and 'rules.yaml: not valid YAML' in r.stderr


def test_several_visitors_at_once(page, server, confident_photo):
    "Three pages opened together are each ready (kernels from Voilà's preheated pool) and each classifies"
    photo, label, _ = confident_photo
    contexts = [page.context.browser.new_context() for _ in range(3)]   # three visitors, one browser
    tabs = [c.new_page() for c in contexts]
    try:
        for tab in tabs: tab.goto(server[0], wait_until='commit', timeout=START_TIMEOUT * 1000)
        for tab in tabs: tab.wait_for_function(READY, timeout=START_TIMEOUT * 1000)
        for tab in tabs: upload(tab, photo)
        for tab in tabs: assert card(tab, 1).get_attribute('data-label') == label
    finally:
        for c in contexts: c.close()


def test_page_loads_only_what_the_app_needs(page):
    "Only the widget extensions, no MathJax (the app shows no mathematics); the widgets' labels still read as text"
    plugins = page.evaluate("jupyterapp.listPlugins().filter(p => jupyterapp.isPluginActivated(p))")
    assert '@jupyter-widgets/jupyterlab-manager:controls-2.0.0' in plugins and '@voila-dashboards/voila:widget-manager8' in plugins
    assert '@jupyterlab/mathjax-extension:plugin' not in plugins
    assert not [p for p in plugins if p.startswith(('@jupyter-notebook/', 'jupyterlab_pygments'))]
    loaded = page.evaluate("performance.getEntriesByType('resource').map(r => r.name)")
    extensions = {u.split('/labextensions/')[1].split('/static/')[0] for u in loaded if '/labextensions/' in u}
    assert extensions == {'@jupyter-widgets/jupyterlab-manager', '@voila-dashboards/widgets-manager8'}
    labels = page.evaluate("[...document.querySelectorAll('.widget-dropdown > label, .widget-checkbox')].map(e => e.textContent)")
    assert 'Rules' in labels and any('Show what the model looked at' in t for t in labels)


def test_nothing_leaves_the_machine(page, server):
    "Every request the page made (scripts, styles, fonts, images, the kernel's websocket) went to 127.0.0.1: no CDN"
    assert any('/api/kernels/' in u for u in page.requested) and len(page.requested) > 10
    assert other_hosts(page.requested) == []
    fa = page.evaluate("[...document.querySelectorAll('link[rel=stylesheet]')].map(l => l.href)")
    assert not [h for h in fa if 'fontawesome' in h or 'cdn' in h]


def test_phone_width_puts_the_bin_under_the_photo(server, browser, confident_photo, tmp_path):
    "At 390 px (a phone) the bin badge is right under the photo and on the first screen, before the headline and bars"
    photo, label, prob = confident_photo
    tab = open_app(browser, server[0], viewport={'width': 390, 'height': 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        upload(tab, photo)
        c = card(tab, 1)
        img, badge = c.locator('img.rc-photo').bounding_box(), c.locator('.rc-bin, .rc-nobin').bounding_box()
        headline, bars = c.locator('.rc-headline').bounding_box(), c.locator('.rc-bars').bounding_box()
        assert img['y'] + img['height'] <= badge['y'] <= img['y'] + img['height'] + 24, (img, badge)
        assert badge['y'] < headline['y'] < bars['y'] and badge['y'] + badge['height'] <= 844
        width = tab.evaluate('document.documentElement.scrollWidth')
        assert width <= 390, f'the page is {width} px wide at 390 px: it scrolls sideways'
        shot = tmp_path/'phone.png'
        tab.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000
        assert other_hosts(tab.requested) == []
    finally: tab.context.close()


def test_kiosk_shows_the_public_only_the_upload(served_model, tmp_path_factory, browser, confident_photo):
    "`app --kiosk`: no rules list, no rules upload, no model list, no heatmap checkbox; photos still classified"
    photo, label, _ = confident_photo
    proc, url, log = start_app(served_model, tmp_path_factory, '--kiosk', pool=1)
    try:
        wait_for_page(url, proc, log)
        tab = open_app(browser, url)
        assert tab.locator('.widget-upload').count() == 1 and tab.locator('.widget-dropdown').count() == 0
        assert tab.locator('.widget-checkbox').count() == 0 and 'Rules' not in tab.inner_text('body')
        upload(tab, photo)
        assert card(tab, 1).get_attribute('data-label') == label and upload_label(tab) == 'Take or choose photos'
        assert other_hosts(tab.requested) == []
        tab.context.close()
    finally: stop(proc)
