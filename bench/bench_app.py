"""Benchmark the app under load, in a real browser: page ready for one visitor and for each of four arriving
together, the server's memory per extra visitor, and the time from upload to answer shown.

For each ONNX runtime installed (onnxruntime, and OpenVINO where installed; the kernels inherit
RECYCLE_CLASSIFIER_RUNTIME), side by side in one run: starts `recycle-classifier app` (Voilà, 127.0.0.1, a free
port, its default pool of preheated kernels) with the model, waits until the pool is full and the machine idle,
then drives Debian's headless Chromium (/usr/bin/chromium) through Playwright:
  1. one visitor opens the page: seconds from navigation to the "Ready" status;
  2. once the pool has refilled behind the first, four more visitors open it at the same moment (separate browser
     contexts): seconds to "Ready" for each, and the CPU seconds the server and the browser used meanwhile; after the
     uploads, --four-rounds groups in all, each once the pool has refilled: the figure is the median over groups of
     each group's slowest visitor;
  3. server memory (voila + every kernel; RSS and PSS, which counts shared pages once) idle, with 1 visitor and
     with 5, each measured once the pool has refilled: per extra visitor = (with 5 - with 1) / 4;
  4. the first visitor uploads the same 384 px photo (a TrashNet sample photo, Thung & Yang 2017, MIT, scaled
     so its long side is 384 px) RUNS times after two warm-ups: from handing the file to the page's file input
     until the answer card is in the page.
Saves the README screenshot (docs/app-screenshot.png), prints a table, appends one JSON line to
bench/results/app.jsonl and rewrites bench/results/app.md. Run it under the CPU lock:

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_app.py --model /tmp/rc14/default.pkl [--runs 20]
"""
import argparse, importlib.util, io, json, os, platform, signal, socket, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'/'app.jsonl'
SCREENSHOT = ROOT/'docs'/'app-screenshot.png'
PHOTO = ROOT/'recycle_classifier'/'resources'/'trashnet-sample'/'valid'/'glass'/'glass112.jpg'
SHOWCASE = [ROOT/'recycle_classifier'/'resources'/'trashnet-sample'/'valid'/'glass'/'glass112.jpg']
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
TARGETS = {'upload_ms': 300, 'ready_one_s': 2, 'ready_four_s': 5, 'mb_per_visitor': 400}   # issue #14


def photo_384(src: Path, out: Path) -> Path:
    "`src` scaled so its long side is 384 px, saved as a JPEG like a phone's"
    im = Image.open(src).convert('RGB')
    scale = 384 / max(im.size)
    im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS).save(out, 'JPEG', quality=90)
    return out


def free_port() -> int:
    "A TCP port nobody listens on at 127.0.0.1"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_app(model: Path, port: int, log: Path) -> subprocess.Popen:
    "`recycle-classifier app` in the background, answering at 127.0.0.1:`port`"
    cmd = [sys.executable, '-m', 'recycle_classifier.cli', 'app', '--model', str(model), '--models-dir',
           str(model.parent), '--port', str(port)]
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    import urllib.request
    for _ in range(300):
        if proc.poll() is not None: sys.exit(f'the app exited with {proc.returncode}:\n{log.read_text()[-2000:]}')
        try:   # a static file: opening the page itself would take a preheated kernel and set off a refill mid-benchmark
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/voila/static/voila.js', timeout=5): return proc
        except OSError: time.sleep(1)
    proc.terminate()
    sys.exit('the app did not start within 5 minutes')


def tree(pid: int) -> list[int]:
    "`pid` and all its descendants"
    kids = {}
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try: ppid = int((d/'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError): continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(); out.append(p); todo += kids.get(p, [])
    return out


def memory(pid: int) -> dict:
    "RSS and PSS in MB of `pid` and its descendants (the app command, Voilà and its kernels), and the kernel count"
    rss = pss = kernels = 0
    for p in tree(pid):
        try:
            roll = Path(f'/proc/{p}/smaps_rollup').read_text()
            cmd = Path(f'/proc/{p}/cmdline').read_bytes()
        except OSError: continue
        kv = {l.split(':')[0]: int(l.split()[1]) for l in roll.splitlines()[1:] if l.split()[1:2] and l.split()[1].isdigit()}
        rss, pss = rss + kv.get('Rss', 0), pss + kv.get('Pss', 0)
        kernels += b'ipykernel' in cmd
    return {'rss_mb': round(rss / 1024), 'pss_mb': round(pss / 1024), 'kernels': kernels}


def settle(pid: int, kernels: int, timeout: float = 120) -> dict:
    "Wait until the server runs at least `kernels` kernels and has been quiet for 3 s (the pool refilled); its memory then"
    deadline, quiet = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        before = sum(_cpu(p) for p in tree(pid))
        time.sleep(1)
        busy = sum(_cpu(p) for p in tree(pid)) - before
        quiet = quiet + 1 if busy < 0.1 and memory(pid)['kernels'] >= kernels else 0   # under 10% of a core
        if quiet >= 3: return memory(pid)
    return dict(memory(pid), timed_out=True)


def _cpu(p: int) -> float:
    "CPU seconds process `p` has used"
    try: f = Path(f'/proc/{p}/stat').read_text().rsplit(')', 1)[1].split()
    except OSError: return 0.
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')


def cpu_split(server: int) -> dict:
    "CPU seconds used so far by the server (Voilà and its kernels) and by the browser (everything else this process started)"
    srv = set(tree(server))
    return {'server': sum(map(_cpu, srv)), 'browser': sum(_cpu(p) for p in tree(os.getpid()) if p not in srv and p != os.getpid())}


READY_PROBE = """(() => { const t0 = Date.now(); const tick = () => {
  const s = document.querySelector('.rc-status');
  if (s && s.textContent.startsWith('Ready')) { window.__readyAt = Date.now(); return; }
  setTimeout(tick, 25); }; tick(); })()"""


def visitors_ready(browser, url: str, n: int) -> tuple[list[float], list]:
    "Open the page in `n` fresh browser contexts at the same moment; seconds from navigation to 'Ready' for each, and the pages"
    contexts = [browser.new_context(viewport={'width': 1000, 'height': 720}) for _ in range(n)]
    for c in contexts: c.add_init_script(f"document.addEventListener('DOMContentLoaded', () => {READY_PROBE});")
    tabs = [c.new_page() for c in contexts]
    t0 = time.time() * 1000
    for tab in tabs: tab.goto(url, wait_until='commit', timeout=300_000)   # all requests out before any page renders
    for tab in tabs: tab.wait_for_function('() => window.__readyAt', timeout=300_000)
    return [round((tab.evaluate('window.__readyAt') - t0) / 1000, 2) for tab in tabs], tabs


def upload_latencies(page, photo: Path, runs: int, warmup: int = 2) -> list[float]:
    "Seconds from the upload event to the rendered card, per upload"
    times = []
    for n in range(1, warmup + runs + 1):
        with page.expect_file_chooser() as chooser: page.click('.widget-upload')
        t0 = time.perf_counter()
        chooser.value.set_files(str(photo))
        page.wait_for_function(f"""() => {{ const c = document.querySelector('.rc-card[data-upload="{n}"]');
                                const p = c && c.querySelector('img.rc-photo');
                                return p && p.complete && p.naturalWidth > 0; }}""", timeout=120_000, polling='raf')
        if n > warmup: times.append(time.perf_counter() - t0)
    return times


def measure(model: Path, runtime: str, photo: Path, runs: int, tmp: Path, screenshot: bool, four_rounds: int = 3) -> dict:
    "Every figure for one runtime: its own server, one browser"
    from playwright.sync_api import sync_playwright
    import recycle_classifier.app.verdict as app
    POOL_SIZE = app.POOL_SIZE
    port, log = free_port(), tmp/f'server-{runtime}.log'
    os.environ['RECYCLE_CLASSIFIER_RUNTIME'] = runtime
    proc = start_app(model, port, log)
    url = f'http://127.0.0.1:{port}/'
    r = {'runtime': runtime, 'pool_size': POOL_SIZE, 'fill_delay_s': getattr(app, 'FILL_DELAY', 1)}
    try:
        r['mem_idle'] = settle(proc.pid, POOL_SIZE)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            r['chromium'] = browser.version
            t_first = time.time()
            (one,), (first,) = visitors_ready(browser, url, 1)
            r['ready_one_s'] = one
            r['mem_1'] = settle(proc.pid, POOL_SIZE + 1)   # the pool refilled (FILL_DELAY after the visitor took a kernel)
            r['four_after_first_s'] = round(time.time() - t_first, 1)
            cpu0 = cpu_split(proc.pid)
            r['ready_four_s'], _ = visitors_ready(browser, url, 4)
            r['cpu_s_while_four_load'] = {k: round(v - cpu0[k], 1) for k, v in cpu_split(proc.pid).items()}
            r['mem_5'] = settle(proc.pid, POOL_SIZE + 5)
            r['mb_per_visitor'] = {k: round((r['mem_5'][k] - r['mem_1'][k]) / 4) for k in ('rss_mb', 'pss_mb')}
            r['upload'] = stats(upload_latencies(first, photo, runs))
            if screenshot: showcase(first, runs + 3)
            rounds, cpus = [r['ready_four_s']], [r['cpu_s_while_four_load']]
            for k in range(1, four_rounds):   # more groups of four, each once the pool has refilled behind the last
                settle(proc.pid, POOL_SIZE + 1 + 4 * k)
                cpu0 = cpu_split(proc.pid)
                rounds.append(visitors_ready(browser, url, 4)[0])
                cpus.append({k2: round(v - cpu0[k2], 1) for k2, v in cpu_split(proc.pid).items()})
            r['ready_four_rounds'], r['cpu_s_four_rounds'] = rounds, cpus
            r['ready_four_slowest_median_s'] = statistics.median(max(x) for x in rounds)
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    return r


def showcase(page, n: int):
    "Upload the showcase photo and save the README screenshot"
    with page.expect_file_chooser() as chooser: page.click('.widget-upload')
    chooser.value.set_files([str(p) for p in SHOWCASE])
    page.wait_for_selector(f'.rc-card[data-upload="{n}"] img.rc-photo', timeout=120_000)
    page.wait_for_timeout(300)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def kernel_imports(model: Path, runtime: str) -> dict:
    "What the page's code imports: seconds to build the app in a fresh interpreter, and whether torch/fastai came along"
    code = ("import os, sys, time; t = time.perf_counter()\n"
            "from recycle_classifier.app.server import app_from_env\napp_from_env()\n"
            "print(round(time.perf_counter() - t, 2), 'torch' in sys.modules, 'fastai' in sys.modules)")
    env = {**os.environ, 'RECYCLE_CLASSIFIER_MODEL': str(model), 'RECYCLE_CLASSIFIER_RUNTIME': runtime}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=ROOT).stdout.split()
    return {'app_built_s': float(out[0]), 'torch_imported': out[1] == 'True', 'fastai_imported': out[2] == 'True'}


def stats(xs: list[float]) -> dict:
    "Median, spread and extremes in milliseconds"
    q = statistics.quantiles(xs, n=10)
    return {'median_ms': round(statistics.median(xs) * 1000, 1), 'p10_ms': round(q[0] * 1000, 1),
            'p90_ms': round(q[-1] * 1000, 1), 'min_ms': round(min(xs) * 1000, 1), 'max_ms': round(max(xs) * 1000, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', type=Path, default=ROOT/'models'/'demo.pkl', help='exported model, .pkl with its .onnx beside it (default %(default)s)')
    ap.add_argument('--runs', type=int, default=20, help='timed uploads (default %(default)s)')
    ap.add_argument('--four-rounds', type=int, default=3, help='groups of four visitors, one after another; the slowest of each group, median over groups, is the figure (default %(default)s)')
    ap.add_argument('--runtimes', nargs='+', default=None, help='ONNX runtimes to compare (default: onnxruntime, and openvino where installed)')
    a = ap.parse_args()
    if not a.model.is_file(): sys.exit(f'{a.model}: no such model; run `make demo` (or pass --model)')
    if not Path(CHROMIUM).exists(): sys.exit(f'{CHROMIUM} is missing: apt-get install -y chromium')
    runtimes = a.runtimes or ['onnxruntime'] + (['openvino'] if importlib.util.find_spec('openvino') else [])
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = photo_384(PHOTO, Path(tmp)/'photo-384.jpg')
        for i, rt in enumerate(runtimes):
            r = measure(a.model.resolve(), rt, photo, a.runs, Path(tmp), screenshot=i == len(runtimes) - 1, four_rounds=a.four_rounds)
            r['kernel'] = kernel_imports(a.model.resolve(), rt)
            r['met'] = {'upload_ms': r['upload']['median_ms'] <= TARGETS['upload_ms'],
                        'ready_one_s': r['ready_one_s'] <= TARGETS['ready_one_s'],
                        'ready_four_s': r['ready_four_slowest_median_s'] <= TARGETS['ready_four_s'],
                        'mb_per_visitor': r['mb_per_visitor']['rss_mb'] <= TARGETS['mb_per_visitor']}
            print(json.dumps(r), flush=True)
            rows.append(r)
    rec = {'time': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'bench': 'app',
           'machine': {'cpus': os.cpu_count(), 'python': platform.python_version(), 'load_avg': load_before,
                       'load_avg_after': os.getloadavg()[0], 'chromium': rows[0].get('chromium')},
           'setup': {'model': a.model.name, 'photo': PHOTO.name, 'runs': a.runs, 'warmup': 2, 'visitors': [1, 4], 'four_rounds': a.four_rounds},
           'targets': TARGETS, 'results': rows}
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, 'a') as f: f.write(json.dumps(rec) + '\n')
    md = report(rec)
    RESULTS.with_suffix('.md').write_text(md)
    print(md)


def report(rec) -> str:
    "app.md"
    rows = rec['results']
    col = lambda f: ' | '.join(f(r) for r in rows)
    lines = [f"# App under load ({rec['time']}, {rec['machine']['cpus']} CPUs, load {rec['machine']['load_avg']:.1f}, "
             f"Chromium {rec['machine']['chromium']})", '',
             f"`recycle-classifier app --model {rec['setup']['model']}` (Voilà, {rows[0]['pool_size']} preheated kernels, pool refilled {rows[0].get('fill_delay_s', 1)} s after a visitor takes one), driven by "
             'headless Chromium through Playwright on 127.0.0.1. The four arrive together once the pool has refilled behind the '
             'first visitor, then again in further groups, each once the pool has refilled (the browser\'s share of the CPU varies from group to group). Medians; memory '
             'is Voilà plus all its kernels once the pool has refilled. `python bench/bench_app.py` (under the CPU lock).', '',
             '| measure | target | ' + col(lambda r: r['runtime']) + ' |', '|---|---|' + '---|' * len(rows),
             f"| page ready, 1 visitor (s) | ≤ {TARGETS['ready_one_s']} | " + col(lambda r: str(r['ready_one_s'])) + ' |',
             f"| page ready, each of 4 arriving together: slowest of the four, median of {len(rows[0]['ready_four_rounds'])} groups (s) | ≤ {TARGETS['ready_four_s']} | " + col(lambda r: str(r['ready_four_slowest_median_s'])) + ' |',
             '| the groups, each visitor (s) | | ' + col(lambda r: '; '.join(', '.join(map(str, g)) for g in r['ready_four_rounds'])) + ' |',
             f"| memory per extra visitor, RSS (MB) | ≤ {TARGETS['mb_per_visitor']} | " + col(lambda r: str(r['mb_per_visitor']['rss_mb'])) + ' |',
             '| memory per extra visitor, PSS (MB) | | ' + col(lambda r: str(r['mb_per_visitor']['pss_mb'])) + ' |',
             '| server RSS idle / 1 visitor / 5 visitors (MB) | | ' + col(lambda r: f"{r['mem_idle']['rss_mb']} / {r['mem_1']['rss_mb']} / {r['mem_5']['rss_mb']}") + ' |',
             '| kernels idle / 1 / 5 visitors | | ' + col(lambda r: f"{r['mem_idle']['kernels']} / {r['mem_1']['kernels']} / {r['mem_5']['kernels']}") + ' |',
             f"| upload to answer shown, median (ms) | ≤ {TARGETS['upload_ms']} | " + col(lambda r: f"{r['upload']['median_ms']} (p90 {r['upload']['p90_ms']})") + ' |',
             '| CPU seconds while each group of 4 loaded: server / browser | | ' + col(lambda r: '; '.join(f"{c['server']} / {c['browser']}" for c in r['cpu_s_four_rounds'])) + ' |',
             '| page code: app built in a fresh interpreter (s); torch imported | | ' + col(lambda r: f"{r['kernel']['app_built_s']}; {r['kernel']['torch_imported']}") + ' |',
             '', 'Targets: ' + '; '.join(f"{r['runtime']}: " + ', '.join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in r['met'].items()) for r in rows) + '.']
    return '\n'.join(lines) + '\n'


if __name__ == '__main__': main()
