"""Benchmark the app without a server (`recycle-classifier export MODEL --web DIR`) in Debian's headless Chromium.

Exports MODEL into a temporary folder and serves it with a plain static file server (tests/test_web.py's, a
`python -m http.server` that sends files with sendfile) in its own process on 127.0.0.1, then measures:
  1. label agreement with `predict` (load_predictor on the folder's model.onnx) on the embedded sample's 240 photos
     and on TrashNet's validation photos (/work/shared/datasets/trashnet/valid, 328), all chosen in the page's photo
     input at once; ms per photo from file to answer in the page (median; the network's share beside it);
  2. the same with the browser's own canvas scaling instead of resize.js's Pillow resampling (`?resize=canvas`):
     how many labels that would change (why resize.js exists);
  3. ms per photo with the runtime's threads (a host that sends the cross-origin isolation headers), on --thread-photos;
  4. 20 visitors opening the page at once (separate browser contexts, nothing cached): seconds until every page's
     model is loaded, and the CPU seconds the server used meanwhile (until every page's service worker has its copy);
  5. the folder's size.
Prints a table and appends one JSON line to bench/results/web.jsonl. Run it under the CPU lock:

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_web.py --model /tmp/webmodels/trashnet.pkl
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
RESULTS = ROOT/'bench'/'results'/'web.jsonl'
SAMPLE = ROOT/'recycle_classifier'/'resources'/'trashnet-sample'
TRASHNET_VALID = Path('/work/shared/datasets/trashnet/valid')
TARGETS = dict(agreement=0.99, ms_per_photo=150, ready_20_s=5, server_cpu_s=1, folder_mb=60)   # issue #27
SERVER = '''
import os, sys, time
sys.path.insert(0, {tests!r})
from test_web import StaticServer
parent = os.getppid()
with StaticServer({folder!r}, isolate={isolate!r}, port={port}) as url:
    print(url, flush=True)
    while os.getppid() == parent: time.sleep(1)   # ends with the benchmark, however that ends
'''


def cpu_seconds(pid: int) -> float:
    "User + system CPU seconds of process `pid` so far"
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class Server:
    "The static server in its own process, so its CPU time is its own"
    def __init__(self, folder, isolate=False):
        from test_app import free_port
        code = SERVER.format(tests=str(ROOT/'tests'), folder=str(folder), isolate=isolate, port=free_port())
        self.proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.url = self.proc.stdout.readline().strip()
    def cpu(self) -> float: return cpu_seconds(self.proc.pid)
    def close(self):
        self.proc.terminate(); self.proc.wait(10)


def photos_of(root: Path) -> list[Path]:
    from recycle_classifier.layout import image_files
    return sorted(image_files(root)) if root.is_dir() else []


def page_results(browser, url: str, photos, query: str = '?sw=off') -> dict:
    "Every photo through the page in one go: {file path: card data}"
    from test_web import open_page, classify_files
    context = browser.new_context()
    page = open_page(context, url + query)
    page.wait_for_timeout(500)   # the warm-up run
    by_name = {}
    # file names repeat across classes: one upload per class folder
    for folder in sorted({p.parent for p in photos}):
        batch = [p for p in photos if p.parent == folder]
        cards = classify_files(page, batch, timeout_ms=3_600_000)
        for p, c in zip(batch, cards):
            assert c['file'] == p.name, (p, c['file'])
            by_name[p] = c
    context.close()
    return by_name


def agreement(cards: dict, predicted: dict) -> tuple[float, list]:
    "Share of photos whose page label equals predict's, and the photos that differ"
    diff = [str(p) for p, c in cards.items() if c.get('label') != predicted[p]]
    return 1 - len(diff) / len(cards), diff


def twenty_at_once(browser, url: str, server: Server, n: int = 20) -> dict:
    "n visitors opening the page together: seconds until the last model is loaded; server CPU until every copy is kept"
    contexts = [browser.new_context() for _ in range(n)]
    pages = [c.new_page() for c in contexts]
    cpu0, t0 = server.cpu(), time.time() * 1000
    for p in pages: p.goto(url, wait_until='commit', timeout=600_000)
    ready, session = [], []
    for p in pages:
        p.wait_for_selector('body[data-state="ready"]', timeout=600_000)
        ready.append(p.evaluate('performance.timeOrigin + window.rcReadyAt') - t0)
        session.append(p.evaluate('window.rcTimings.session_ms'))
    for p in pages: p.wait_for_function('navigator.serviceWorker.controller !== null', timeout=600_000)
    cpu = server.cpu() - cpu0
    for c in contexts: c.close()
    return dict(ready_all_s=round(max(ready) / 1000, 2), ready_median_s=round(statistics.median(ready) / 1000, 2), server_cpu_s=round(cpu, 2),
                session_median_s=round(statistics.median(session) / 1000, 2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', required=True, help='the model to export (.pkl or .onnx); the default recipe for the issue')
    ap.add_argument('--thread-photos', type=int, default=60, help='photos timed with the runtime threads (default %(default)s)')
    ap.add_argument('--canvas-photos', type=int, default=100, help='photos of each set classified with canvas scaling too (0: none; default %(default)s)')
    ap.add_argument('--visitors', type=int, default=20)
    ap.add_argument('--limit', type=int, default=0, help='at most this many photos of each set (a quick check; 0: all)')
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright
    from recycle_classifier.predictor import load_predictor
    from recycle_classifier.web import export_web
    from test_web import launch
    work = Path(tempfile.mkdtemp(prefix='bench-web-'))
    r = export_web(args.model, work/'site')
    site, mb = r['folder'], r['mb']
    sets = {'sample': photos_of(SAMPLE), 'trashnet_valid': photos_of(TRASHNET_VALID)}
    if args.limit: sets = {k: v[::max(1, len(v) // args.limit)][:args.limit] for k, v in sets.items()}
    model = load_predictor(site/'model.onnx')
    predicted = {Path(rec['path']): rec.get('label') for ps in sets.values() for rec in model.predict_paths(ps)}
    row = dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'), machine=platform.machine(), cores=os.cpu_count(),
               model=str(args.model), classes=len(r['classes']), image_size=json.loads((site/'config.json').read_text())['preprocess']['size'],
               onnxruntime_web=r['runtime'], folder_mb=round(mb, 1), model_mb=round(r['files']['model.onnx'] / 1e6, 1))
    # the same network in native onnxruntime on one thread, photo by photo, as a yardstick for a busy machine
    from recycle_classifier.images import open_image
    from recycle_classifier.onnx_predict import OnnxPredictor
    one = OnnxPredictor(site/'model.onnx', threads=1)
    ref = (sets['trashnet_valid'] or sets['sample'])[:30]
    def native_ms():
        times = []
        for p in ref:
            t = time.perf_counter(); one.predict([open_image(p, draft=one.draft)]); times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times)
    native = [native_ms()]
    server = Server(site)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            ms, net = [], []
            for name, ps in sets.items():
                if not ps: continue
                t = time.time()
                cards = page_results(browser, server.url, ps)
                agree, diff = agreement(cards, predicted)
                row[f'{name}_photos'], row[f'{name}_agreement'], row[f'{name}_differ'] = len(ps), round(agree, 4), diff[:20]
                ms += [float(c['ms']) for c in cards.values() if 'ms' in c]
                net += [float(c['msNetwork']) for c in cards.values() if 'msNetwork' in c]
                print(f'{name}: {len(ps)} photos, agreement {agree:.2%} ({len(diff)} differ), {time.time() - t:.0f} s', flush=True)
            native.append(native_ms())
            row.update(native_1thread_ms=round(statistics.median(native), 1), ms_per_photo=round(statistics.median(ms), 1), ms_network=round(statistics.median(net), 1),
                       ms_per_photo_p90=round(sorted(ms)[int(0.9 * len(ms))], 1), threads=1)
            print(json.dumps(row), flush=True)
            if args.canvas_photos:
                for name, ps in sets.items():
                    ps = ps[::max(1, len(ps) // args.canvas_photos)][:args.canvas_photos]
                    if not ps: continue
                    agree, diff = agreement(page_results(browser, server.url, ps, '?sw=off&resize=canvas'), predicted)
                    row[f'{name}_canvas_photos'], row[f'{name}_canvas_agreement'] = len(ps), round(agree, 4)
                    print(f'{name} with canvas scaling: {len(ps)} photos, agreement {agree:.2%} ({len(diff)} differ)', flush=True)
            browser.close()
        iso = Server(site, isolate=True)
        try:
            with sync_playwright() as pw:
                browser = launch(pw)
                ps = (sets['trashnet_valid'] or sets['sample'])[::max(1, len(sets['trashnet_valid'] or sets['sample']) // args.thread_photos)][:args.thread_photos]
                cards = page_results(browser, iso.url, ps)
                row.update(threads_photos=len(ps), ms_per_photo_threads=round(statistics.median(float(c['ms']) for c in cards.values()), 1),
                           ms_network_threads=round(statistics.median(float(c['msNetwork']) for c in cards.values()), 1),
                           threads_agreement=round(agreement(cards, predicted)[0], 4))
                browser.close()
                print(json.dumps(row), flush=True)
        finally: iso.close()
        with sync_playwright() as pw:
            browser = launch(pw)
            row.update({f'visitors_{k}': v for k, v in twenty_at_once(browser, server.url, server, args.visitors).items()}, visitors=args.visitors)
            browser.close()
    finally: server.close()
    row['targets'] = TARGETS
    if not args.limit:
        with open(RESULTS, 'a') as f: f.write(json.dumps(row) + '\n')
    print(f"""
| what | measured | target |
|---|---|---|
| labels equal to predict: sample ({row.get('sample_photos')}) / TrashNet valid ({row.get('trashnet_valid_photos')}) | {row.get('sample_agreement', 0):.2%} / {row.get('trashnet_valid_agreement', 0):.2%} | >= 99% |
| with canvas scaling instead of resize.js ({row.get('sample_canvas_photos')} / {row.get('trashnet_valid_canvas_photos')} photos) | {row.get('sample_canvas_agreement', float('nan')):.2%} / {row.get('trashnet_valid_canvas_agreement', float('nan')):.2%} | |
| ms per photo, 1 thread (network's share) | {row['ms_per_photo']} ({row['ms_network']}) | <= 150 |
| the same in native onnxruntime, 1 thread, measured before and after (the machine's load) | {row['native_1thread_ms']} | |
| ms per photo, threads (cross-origin isolated) | {row['ms_per_photo_threads']} ({row['ms_network_threads']}) | |
| {args.visitors} pages opened at once, all ready | {row['visitors_ready_all_s']} s (median {row['visitors_ready_median_s']} s; starting the runtime and session: median {row['visitors_session_median_s']} s a page) | <= 5 s |
| server CPU for those {args.visitors} visitors | {row['visitors_server_cpu_s']} s | < 1 s |
| folder (model {row['model_mb']} MB) | {row['folder_mb']} MB | <= 60 MB |
""")


if __name__ == '__main__':
    main()
