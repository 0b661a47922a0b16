"""Benchmark the app without a server (`recycle-classifier export MODEL --web DIR`) in Debian's headless Chromium.

Exports MODEL into a temporary folder and serves it with a plain static file server (tests/test_web.py's, a
`python -m http.server` that sends files with sendfile) in its own process on 127.0.0.1, then measures:
  1. label agreement with `predict` (load_predictor on the model's ONNX file) on the embedded sample's 240 photos
     and on TrashNet's validation photos (/work/shared/datasets/trashnet/valid, 328), all chosen in the page's photo
     input at once; ms per photo from file to answer in the page (median; the network's share beside it);
  2. the same with the browser's own canvas scaling instead of resize.js's Pillow resampling (`?resize=canvas`):
     how many labels that would change (why resize.js exists);
  3. ms per photo with the runtime's threads (a host that sends the cross-origin isolation headers), on --thread-photos;
  4. 20 visitors opening the page at once (separate browser contexts, nothing cached): seconds until every page's
     model is loaded, the browser's CPU seconds a page for that, and the CPU seconds the server used meanwhile (until
     every page's service worker has its copy); first one page alone, as a phone would load it (its own CPU);
  5. the folder's size.
Prints a table and appends one JSON line to bench/results/web.jsonl. With --variants it times instead the network
alone in a bare page (no photos, no page code): the page's ms and the browser's CPU ms a run, with one or two threads,
each graph optimisation level, the model without its mirror view and an int8 copy (--int8 FILE, from
`export --quantize`), and how often those lighter files' labels equal `predict`'s; rows go to web-variants.jsonl.
Run it under the CPU lock:

    flock /tmp/rc-cpu.lock .venv/bin/python bench/bench_web.py --model /tmp/webmodels/trashnet.pkl
"""
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
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
    from recycle_classifier.base.layout import image_files
    return sorted(image_files(root)) if root.is_dir() else []


def page_results(browser, url: str, photos, query: str = '?sw=off') -> dict:
    "Every photo through the page in one go: {file path: card data}"
    from test_web import open_page, classify_files
    context = browser.new_context()
    page = open_page(context, url + query)
    warm_up(page)
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


def warm_up(page):
    "A visitor's first touch (on the photo button) starts the runtime's warm-up run; wait for it to end"
    page.dispatch_event('label[for="rc-files"]', 'pointerdown')
    page.evaluate('RCApp.state.queue')


def chromium_cpu() -> float:
    "CPU seconds used so far by this benchmark's Chromium: every live process below this one (Playwright's driver, the browser, its renderers and workers)"
    parent = {}
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try: parent[int(d.name)] = int((d/'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, ValueError, IndexError): pass
    mine, grew = {os.getpid()}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in mine} - mine
        mine |= new; grew = bool(new)
    total = 0.
    for pid in mine - {os.getpid()}:
        try:
            if b'chromium' in Path(f'/proc/{pid}/cmdline').read_bytes(): total += cpu_seconds(pid)
        except (OSError, ValueError): pass
    return total


def loadavg() -> list[float]:
    return [float(x) for x in Path('/proc/loadavg').read_text().split()[:3]]


def agreement(cards: dict, predicted: dict) -> tuple[float, list]:
    "Share of photos whose page label equals predict's, and the photos that differ"
    diff = [str(p) for p, c in cards.items() if c.get('label') != predicted[p]]
    return 1 - len(diff) / len(cards), diff


def twenty_at_once(browser, url: str, server: Server, n: int = 20) -> dict:
    "n visitors opening the page together: seconds until the last model is loaded; server CPU until every copy is kept"
    contexts = [browser.new_context() for _ in range(n)]
    pages = [c.new_page() for c in contexts]
    cpu0, browser0, t0 = server.cpu(), chromium_cpu(), time.time() * 1000
    for p in pages: p.goto(url, wait_until='commit', timeout=600_000)
    ready, session, threads = [], [], []
    for p in pages:
        p.wait_for_selector('body[data-state="ready"]', timeout=600_000)
        ready.append(p.evaluate('performance.timeOrigin + window.rcReadyAt') - t0)
        session.append(p.evaluate('window.rcTimings.session_ms'))
        threads.append(int(p.get_attribute('body', 'data-threads')))
    browser_cpu = chromium_cpu() - browser0   # every page loaded: what loading cost the browser, all pages together
    for p in pages: p.wait_for_function('navigator.serviceWorker.controller !== null', timeout=600_000)
    cpu = server.cpu() - cpu0
    for c in contexts: c.close()
    return dict(ready_all_s=round(max(ready) / 1000, 2), ready_median_s=round(statistics.median(ready) / 1000, 2), server_cpu_s=round(cpu, 2),
                session_median_s=round(statistics.median(session) / 1000, 2), browser_cpu_per_page_s=round(browser_cpu / n, 2),
                threads=sorted(set(threads)))


# --variants: the network alone in the page, under the runtime's options and lighter forms of it (no photos, no page code)
VARIANTS = ROOT/'bench'/'results'/'web-variants.jsonl'
TIMING_PAGE = """<!doctype html><html><head><link rel="icon" href="data:,"></head><body>
<script src="ort/ort.wasm.min.js"></script>
<script>
const q = new URLSearchParams(location.search);
ort.env.wasm.wasmPaths = new URL('ort/', location.href).href;
ort.env.wasm.numThreads = +(q.get('threads') || 1);
ort.env.logLevel = 'error';
let s, x, size;
window.setup = async (model, opt, side) => {
  const buf = new Uint8Array(await (await fetch(model)).arrayBuffer()), t = performance.now();
  s = await ort.InferenceSession.create(buf, { executionProviders: ['wasm'], graphOptimizationLevel: opt });
  size = side; x = new Uint8Array(3 * size * size); for (let i = 0; i < x.length; i++) x[i] = (i * 2654435761) >>> 24;
  return { session_ms: performance.now() - t, threads: ort.env.wasm.numThreads };
};
window.runs = async n => {
  const ms = [];
  for (let i = 0; i < n; i++) { const t = performance.now(); await s.run({ [s.inputNames[0]]: new ort.Tensor('uint8', x.slice(), [1, 3, size, size]) }); ms.push(performance.now() - t); }
  return ms;
};
</script></body></html>"""


def single_view(src, dst) -> Path:
    "`src` without its mirror view: the batch is the photo alone, not the photo and its mirror (a lighter network for a test, not what the model says)"
    import numpy as np, onnx
    from onnx import numpy_helper
    m = onnx.load(str(src))
    g, made = m.graph, {o: n for n in m.graph.node for o in n.output}
    cat = next(n for n in g.node if n.op_type == 'Concat' and len(n.input) == 2 and made.get(n.input[1]) is not None
               and made[n.input[1]].op_type == 'Slice' and made[n.input[1]].input[0] == n.input[0])
    for n in g.node: n.input[:] = [cat.input[0] if v == cat.output[0] else v for v in n.input]
    const = {n.output[0]: n for n in g.node if n.op_type == 'Constant'}
    shape = next(n for n in g.node if n.op_type == 'Concat' and len(n.input) == 3 and all(i in const for i in n.input[:2])
                 and numpy_helper.to_array(const[n.input[1]].attribute[0].t).tolist() == [-1])   # (views, -1, dim)
    views = const[shape.input[0]].attribute[0].t
    views.CopyFrom(numpy_helper.from_array(np.array([1], numpy_helper.to_array(views).dtype)))
    g.node.remove(made[cat.input[1]]); g.node.remove(cat)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return Path(dst)


def fp16_weights(src, dst) -> Path:
    "`src` with its weights stored as float16 (each cast back to float32 when the session starts): half the download, the same arithmetic on slightly rounded weights"
    import numpy as np, onnx
    from onnx import helper, numpy_helper, TensorProto
    m = onnx.load(str(src))
    g, casts = m.graph, []
    for init in list(g.initializer):
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size >= 1024:
            g.initializer.remove(init)
            g.initializer.append(numpy_helper.from_array(a.astype(np.float16), init.name + '.fp16'))
            casts.append(helper.make_node('Cast', [init.name + '.fp16'], [init.name], to=TensorProto.FLOAT))
    for c in reversed(casts): g.node.insert(0, c)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return Path(dst)


def variants(args):
    "Time the network alone in the page: per run, the page's wall ms and the browser's CPU ms, with its options and lighter forms; their labels against `predict`"
    from playwright.sync_api import sync_playwright
    from recycle_classifier.formats.predictor import load_predictor
    from recycle_classifier.app.web import export_web
    from test_web import launch
    work = Path(tempfile.mkdtemp(prefix='bench-web-variants-'))
    r = export_web(args.model, work/'site')
    site = r['folder']
    (site/'timing.html').write_text(TIMING_PAGE)
    files = {'two views (the model)': 'model.onnx', 'one view (no mirror)': single_view(site/'model.onnx', site/'one-view.onnx').name,
             'float16 weights': fp16_weights(site/'model.onnx', site/'fp16.onnx').name}
    if args.int8:
        shutil.copyfile(args.int8, site/'int8.onnx'); files['int8 (QDQ, export --quantize)'] = 'int8.onnx'
    side = json.loads((site/'config.json').read_text())['preprocess']['size'][0]
    runs = [(name, f, 1, 'all') for name, f in files.items()] + [('two views (the model)', 'model.onnx', 2, 'all'),
            ('two views (the model)', 'model.onnx', 1, 'basic'), ('two views (the model)', 'model.onnx', 1, 'disabled')]
    rows = []
    server = Server(site, isolate=True)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            for name, f, threads, opt in runs:
                load = loadavg()
                context = browser.new_context(); page = context.new_page()
                page.goto(f'{server.url}timing.html?threads={threads}')
                c0 = chromium_cpu(); setup = page.evaluate('([f, o, s]) => setup(f, o, s)', [f, opt, side]); c1 = chromium_cpu()
                first = page.evaluate('runs(1)')[0]; c2 = chromium_cpu()
                ms = page.evaluate(f'runs({args.runs})'); c3 = chromium_cpu()
                context.close()
                rows.append(dict(variant=name, file=f, mb=round((site/f).stat().st_size / 1e6, 1), threads=setup['threads'], graph_optimization=opt,
                                 session_ms=round(setup['session_ms']), session_cpu_ms=round((c1 - c0) * 1000), first_run_ms=round(first),
                                 first_run_cpu_ms=round((c2 - c1) * 1000), run_ms=round(statistics.median(ms)), run_min_ms=round(min(ms)),
                                 run_cpu_ms=round((c3 - c2) * 1000 / args.runs), load=load))
                print(json.dumps(rows[-1]), flush=True)
            browser.close()
    finally: server.close()
    # labels: each lighter file against `predict` on the model's own file, natively (the page equals it: see the main benchmark)
    photos = [p for root in (SAMPLE, TRASHNET_VALID) for p in photos_of(root)]
    if args.limit: photos = photos[::max(1, len(photos) // args.limit)][:args.limit]
    want = [rec.get('label') for rec in load_predictor(r['model']).predict_paths(photos)]
    for name, f in files.items():
        if f == 'model.onnx': continue
        got = [rec.get('label') for rec in load_predictor(site/f).predict_paths(photos)]
        for sname, root in (('sample', SAMPLE), ('trashnet_valid', TRASHNET_VALID)):
            idx = [i for i, p in enumerate(photos) if root in p.parents]
            if idx:
                agree = sum(got[i] == want[i] for i in idx) / len(idx)
                for row in rows:
                    if row['file'] == f: row[f'{sname}_agreement'], row[f'{sname}_photos'] = round(agree, 4), len(idx)
                print(f'{name}: {sname} {agree:.2%} of {len(idx)} photos equal predict', flush=True)
    stamp = dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'), model=str(args.model), cores=os.cpu_count())
    if not args.limit:
        with open(VARIANTS, 'a') as fh:
            for row in rows: fh.write(json.dumps(dict(stamp, **row)) + '\n')
    print('\n| variant | threads | graph optimisation | MB | ms a run (CPU ms) | session ms (CPU ms) | first run ms | load |\n|---|---|---|---|---|---|---|---|')
    for x in rows:
        print(f"| {x['variant']} | {x['threads']} | {x['graph_optimization']} | {x['mb']} | {x['run_ms']} ({x['run_cpu_ms']}) | {x['session_ms']} ({x['session_cpu_ms']}) | {x['first_run_ms']} | {x['load'][0]} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', required=True, help='the model to export (.pkl or .onnx); the default recipe for the issue')
    ap.add_argument('--thread-photos', type=int, default=60, help='photos timed with the runtime threads (default %(default)s)')
    ap.add_argument('--canvas-photos', type=int, default=100, help='photos of each set classified with canvas scaling too (0: none; default %(default)s)')
    ap.add_argument('--visitors', type=int, default=20)
    ap.add_argument('--limit', type=int, default=0, help='at most this many photos of each set (a quick check; 0: all)')
    ap.add_argument('--variants', action='store_true', help='instead: the network alone under the runtime\'s options and lighter forms (one view, --int8)')
    ap.add_argument('--int8', help='with --variants: an int8 copy of the model (export --quantize) to time too')
    ap.add_argument('--runs', type=int, default=5, help='with --variants: timed runs of each (default %(default)s)')
    args = ap.parse_args()
    if args.variants: return variants(args)
    from playwright.sync_api import sync_playwright
    from recycle_classifier.formats.predictor import load_predictor
    from recycle_classifier.app.web import export_web
    from test_web import launch
    work = Path(tempfile.mkdtemp(prefix='bench-web-'))
    r = export_web(args.model, work/'site')
    site, mb = r['folder'], r['mb']
    sets = {'sample': photos_of(SAMPLE), 'trashnet_valid': photos_of(TRASHNET_VALID)}
    if args.limit: sets = {k: v[::max(1, len(v) // args.limit)][:args.limit] for k, v in sets.items()}
    model = load_predictor(r['model'])   # `predict` on the model's own ONNX file (the folder's copy may be the lighter one)
    predicted = {Path(rec['path']): rec.get('label') for ps in sets.values() for rec in model.predict_paths(ps)}
    row = dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'), machine=platform.machine(), cores=os.cpu_count(),
               model=str(args.model), classes=len(r['classes']), image_size=json.loads((site/'config.json').read_text())['preprocess']['size'],
               onnxruntime_web=r['runtime'], folder_mb=round(mb, 1), model_mb=round(r['files']['model.onnx'] / 1e6, 1), load_start=loadavg())
    # the same network in native onnxruntime on one thread, photo by photo, as a yardstick for a busy machine
    from recycle_classifier.base.images import open_image
    from recycle_classifier.formats.onnx_predict import OnnxPredictor
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
            ms, net, prep = [], [], []
            for name, ps in sets.items():
                if not ps: continue
                t = time.time()
                cards = page_results(browser, server.url, ps)
                agree, diff = agreement(cards, predicted)
                row[f'{name}_photos'], row[f'{name}_agreement'], row[f'{name}_differ'] = len(ps), round(agree, 4), diff[:20]
                ms += [float(c['ms']) for c in cards.values() if 'ms' in c]
                net += [float(c['msNetwork']) for c in cards.values() if 'msNetwork' in c]
                prep += [float(c['ms']) - float(c['msNetwork']) for c in cards.values() if 'msNetwork' in c]
                print(f'{name}: {len(ps)} photos, agreement {agree:.2%} ({len(diff)} differ), {time.time() - t:.0f} s', flush=True)
            native.append(native_ms())
            row.update(native_1thread_ms=round(statistics.median(native), 1), ms_per_photo=round(statistics.median(ms), 1), ms_network=round(statistics.median(net), 1),
                       ms_per_photo_p90=round(sorted(ms)[int(0.9 * len(ms))], 1), ms_decode_resize=round(statistics.median(prep), 1), threads=1,
                       load_1thread=loadavg())
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
                           threads_agreement=round(agreement(cards, predicted)[0], 4), load_threads=loadavg())
                browser.close()
                print(json.dumps(row), flush=True)
        finally: iso.close()
        with sync_playwright() as pw:
            browser = launch(pw)
            # one visitor alone (as on a phone: the page's own CPU), then `visitors` at once sharing this machine's cores
            row.update({f'visitor_{k}': v for k, v in twenty_at_once(browser, server.url, server, 1).items()}, load_visitor=loadavg())
            row.update({f'visitors_{k}': v for k, v in twenty_at_once(browser, server.url, server, args.visitors).items()}, visitors=args.visitors,
                       load_visitors=loadavg())
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
| ms per photo, 1 thread (network's share; decoding and resizing) | {row['ms_per_photo']} ({row['ms_network']}; {row['ms_decode_resize']}) | <= 150 |
| the same in native onnxruntime, 1 thread, measured before and after (the machine's load) | {row['native_1thread_ms']} | |
| ms per photo, threads (cross-origin isolated) | {row['ms_per_photo_threads']} ({row['ms_network_threads']}) | |
| one page opened alone (a plain host: first visit), ready; the browser's CPU for it; threads | {row['visitor_ready_all_s']} s; {row['visitor_browser_cpu_per_page_s']} CPU-s; {row['visitor_threads']} | |
| {args.visitors} pages opened at once, all ready | {row['visitors_ready_all_s']} s (median {row['visitors_ready_median_s']} s; starting the runtime and session: median {row['visitors_session_median_s']} s a page; browser CPU {row['visitors_browser_cpu_per_page_s']} s a page) | <= 5 s |
| server CPU for those {args.visitors} visitors | {row['visitors_server_cpu_s']} s | < 1 s |
| folder (model {row['model_mb']} MB) | {row['folder_mb']} MB | <= 60 MB |
| load average (1, 5, 15 min) at the start / 1 thread / threads / one visitor / {args.visitors} visitors | {row['load_start']} / {row['load_1thread']} / {row['load_threads']} / {row['load_visitor']} / {row['load_visitors']} | |
""")


if __name__ == '__main__':
    main()
