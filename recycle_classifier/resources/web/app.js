// The app without a server: classifies photos in the visitor's browser with ONNX Runtime Web (WebAssembly).
// The folder `recycle-classifier export MODEL --web DIR` writes holds this page, config.json (classes, resizing,
// threshold, bins and advice), the model and the runtime; no request leaves the folder's host.
'use strict';
(function () {
  const $ = id => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const state = { config: null, session: null, queue: Promise.resolve(), uploads: 0 };
  const BLANK_ADVICE = 'Upload a photo (JPEG, PNG or WebP; a phone camera\'s photos work); the page is ready for the next one.';

  function say(text, kind = '') {
    const el = $('rc-status');
    el.textContent = text;
    el.className = 'rc-status' + (kind ? ' rc-' + kind : '');
  }

  const esc = s => String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

  // Python's f'{p:.0%}': p * 100 rounded to the nearest integer, ties to even
  function pct(p) {
    const x = p * 100;
    let n = Math.round(x);
    if (x - Math.floor(x) === 0.5 && n % 2) n -= 1;
    return n + '%';
  }
  const capitalize = s => s ? s[0].toUpperCase() + s.slice(1).toLowerCase() : s;

  // app.verdict: sure (class and bin), or not sure (the candidates, and their bin when they share one)
  function verdict(probs) {
    const { classes, threshold, rules } = state.config;
    const ranked = classes.map((c, i) => [c, probs[i]]).sort((a, b) => b[1] - a[1]);
    const [label, p] = ranked[0];
    const binFor = c => { const k = rules.class_bins[c]; return k ? Object.assign({ key: k }, rules.bins[k]) : null; };
    if (p >= threshold || ranked.length === 1) {
      const bin = binFor(label);
      const nobin = `The rules "${rules.name}" have no bin for ${label}; check the signs or ask staff.`;
      const advice = bin ? (rules.advice || {})[label] || [bin.advice, rules.tips[label]].filter(Boolean).join(' ')
                         : [nobin, rules.tips[label]].filter(Boolean).join(' ');
      return { kind: 'sure', label, p, ranked, bin, headline: `${capitalize(label)} ${pct(p)}`, advice };
    }
    const cands = ranked.slice(0, 2).concat(ranked.slice(2, 3).filter(kv => kv[1] >= 0.1));
    const headline = 'Not sure: ' + cands.map(([c, q]) => `${c} ${pct(q)}`).join(', ');
    const bins = cands.map(([c]) => binFor(c));
    if (bins.every(Boolean) && new Set(bins.map(b => b.key)).size === 1)
      return { kind: 'unsure', label, p, ranked, bin: bins[0], headline, advice: `Either way it goes in the same bin. ${bins[0].advice}`.trim() };
    return { kind: 'unsure', label, p, ranked, bin: null, headline, advice: rules.unsure || 'Check the label or ask staff.' };
  }

  function bars(ranked, top, most = 8) {
    const rows = ranked.slice(0, most).map(([c, p]) =>
      `<div class="rc-row${c === top ? ' rc-top' : ''}" data-class="${esc(c)}"><span>${esc(c)}</span>` +
      `<div class="rc-track"><div class="rc-fill" style="width:${(p * 100).toFixed(1)}%"></div></div><span>${pct(p)}</span></div>`);
    if (ranked.length > most) {
      const rest = ranked.slice(most).reduce((s, kv) => s + kv[1], 0);
      rows.push(`<div class="rc-more">${ranked.length - most} more classes, ${pct(rest)} together</div>`);
    }
    return '<div class="rc-bars">' + rows.join('') + '</div>';
  }

  function showResult(card, file, v, ms) {
    card.className = `rc-card rc-${v.kind}`;
    Object.assign(card.dataset, { label: v.label, kind: v.kind, bin: v.bin ? v.bin.key : '', probability: v.p.toFixed(6), ms: ms.toFixed(1) });
    const badge = v.bin ? `<div class="rc-bin" style="background:${esc(v.bin.color)}" data-bin="${esc(v.bin.key)}">${esc(v.bin.label)}</div>`
                        : '<div class="rc-nobin">Bin: not sure</div>';
    const url = URL.createObjectURL(file);
    card.innerHTML = `<div class="rc-images"><figure style="margin:0"><img class="rc-photo" alt="your photo" src="${url}"></figure></div>` +
      `<div class="rc-info"><div class="rc-file">${esc(file.name)}</div><div class="rc-headline">${esc(v.headline)}</div>${badge}` +
      `<div class="rc-advice">${esc(v.advice)}</div>${bars(v.ranked, v.label)}</div>`;
    card.querySelector('img').onload = () => URL.revokeObjectURL(url);
  }

  function showError(card, file, reason) {
    card.className = 'rc-card rc-bad';
    card.dataset.kind = 'error';
    delete card.dataset.label;
    card.innerHTML = `<div class="rc-info"><div class="rc-file">${esc(file.name)}</div>` +
      `<div class="rc-reason">Can't use this file: ${esc(reason)}</div><div class="rc-advice">${esc(BLANK_ADVICE)}</div></div>`;
  }

  class BadImage extends Error {}

  // Pillow's JPEG draft mode, as the predictor uses it: a big JPEG is decoded at 1/2, 1/4 or 1/8 scale
  function draftSize(w, h, isJpeg) {
    const d = state.config.draft;
    if (!d || !isJpeg || Math.min(w, h) <= 4 * d) return null;
    const scale = Math.min(Math.floor(w / d), Math.floor(h / d));
    const a = [8, 4, 2, 1].find(s => scale >= s);
    return [Math.ceil(w / a), Math.ceil(h / a)];
  }

  // A file to upright RGB pixels (EXIF rotation applied, transparency on white, colour profiles ignored as Pillow does)
  async function decode(file) {
    const head = new Uint8Array(await file.slice(0, 3).arrayBuffer());
    let bmp;
    try {
      bmp = await createImageBitmap(file, { imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    } catch (e) {
      throw new BadImage(file.size === 0 ? 'the file is empty' : 'not a photo (the browser cannot read it as an image)');
    }
    try {
      const { width: w, height: h } = bmp;
      if (!w || !h) throw new BadImage('the image has no pixels');
      if (w * h > state.config.max_pixels) throw new BadImage(`refused: ${w}x${h} is too many pixels to decode safely`);
      const isJpeg = head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff;
      const [cw, ch] = draftSize(w, h, isJpeg) || [w, h];
      const canvas = new OffscreenCanvas(cw, ch), ctx = canvas.getContext('2d', { willReadFrequently: true });
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, cw, ch);
      ctx.imageSmoothingQuality = 'high';
      ctx.drawImage(bmp, 0, 0, cw, ch);
      return RCResize.fromRGBA(ctx.getImageData(0, 0, cw, ch).data, cw, ch);
    } finally { bmp.close(); }
  }

  // For comparison only (?resize=canvas): the browser's own scaling instead of Pillow's, squish and crop only
  async function canvasResize(file, pre) {
    const bmp = await createImageBitmap(file, { imageOrientation: 'from-image', colorSpaceConversion: 'none' });
    const [sw, sh] = pre.size, { width: w, height: h } = bmp;
    const canvas = new OffscreenCanvas(sw, sh), ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, sw, sh); ctx.imageSmoothingQuality = 'high';
    if (pre.method === 'crop') {
      const m = w / sw < h / sh ? w / sw : h / sh, cw = Math.trunc(m * sw), chh = Math.trunc(m * sh);
      ctx.drawImage(bmp, Math.trunc(0.5 * (w - cw)), Math.trunc(0.5 * (h - chh)), cw, chh, 0, 0, sw, sh);
    } else ctx.drawImage(bmp, 0, 0, sw, sh);
    bmp.close();
    return RCResize.fromRGBA(ctx.getImageData(0, 0, sw, sh).data, sw, sh);
  }

  async function run(pixels) {
    const s = state.session, [w, h] = state.config.preprocess.size;
    const input = new ort.Tensor('uint8', pixels, [1, 3, h, w]);
    const out = await s.run({ [s.inputNames[0]]: input });
    return Array.from(out[s.outputNames[0]].data);
  }

  async function classify(file, card) {
    const t0 = performance.now(), pre = state.config.preprocess;
    try {
      const im = params.get('resize') === 'canvas' && ['squish', 'crop'].includes(pre.method)
        ? await canvasResize(file, pre).catch(() => { throw new BadImage('not a photo (the browser cannot read it as an image)'); })
        : RCResize.fastaiResize(await decode(file), pre);
      const t1 = performance.now(), probs = await run(RCResize.toCHW(im));
      showResult(card, file, verdict(probs), performance.now() - t0);
      card.dataset.msNetwork = (performance.now() - t1).toFixed(1);   // of data-ms: the network's share (the rest: decoding and resizing)
    } catch (e) {
      showError(card, file, e instanceof BadImage ? e.message : `it could not be classified (${e.message || e})`);
      if (!(e instanceof BadImage)) console.error(e);
    }
  }

  function enqueue(job) { state.queue = state.queue.then(job, job); return state.queue; }

  function onFiles(input) {
    const files = Array.from(input.files || []);
    input.value = '';
    if (!files.length) return;
    const upload = ++state.uploads, results = $('rc-results'), cards = [];
    state.warm = state.warm || 'by a photo';
    for (const file of files) {
      const card = document.createElement('div');
      card.className = 'rc-card rc-pending';
      Object.assign(card.dataset, { upload, file: file.name, kind: 'pending' });
      card.innerHTML = `<div class="rc-info"><div class="rc-file">${esc(file.name)}</div><div class="rc-advice">Working…</div></div>`;
      cards.push(card);
      enqueue(() => classify(file, card));
    }
    results.prepend(...cards);
    say(`Classifying ${files.length} photo${files.length > 1 ? 's' : ''}…`, 'busy');
    enqueue(() => {
      const bad = cards.filter(c => c.dataset.kind === 'error').length, n = cards.length;
      say(bad ? `${n - bad} of ${n} classified; ${bad} file${bad > 1 ? 's' : ''} could not be used.` : `${n} photo${n > 1 ? 's' : ''} classified. Ready for more.`,
          bad ? 'error' : '');
    });
  }

  async function fetchBytes(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  }

  const useWorker = 'serviceWorker' in navigator && self.isSecureContext && params.get('sw') !== 'off';

  // The service worker keeps the folder for offline use and answers with the cross-origin isolation headers, which
  // give the runtime its threads. A host that does not send them itself (most static hosts) would leave a first visit
  // on one thread: on such a visit the worker is installed first (it downloads the folder, which the page would
  // download anyway), then the page reloads once, from it, isolated, before any model is loaded. True when reloading.
  async function isolateFirst(config) {
    if (!useWorker || self.crossOriginIsolated || navigator.serviceWorker.controller) return false;
    try {
      if (sessionStorage.getItem('rc-isolating')) return false;   // once: a browser that ignores the worker's headers is not reloaded again
      say('Loading the model (first visit: keeping a copy for offline use)…', 'busy');
      const controlled = new Promise(ok => navigator.serviceWorker.addEventListener('controllerchange', ok, { once: true }));
      const reg = await navigator.serviceWorker.register(`sw.js?v=${encodeURIComponent(config.cache)}`);
      const worker = reg.installing || reg.waiting;   // none: an active worker that this page bypassed (a hard reload)
      const failed = new Promise((_, no) => worker && worker.addEventListener('statechange',
        () => worker.state === 'redundant' && no(new Error('the service worker could not keep the folder'))));
      if (worker && !navigator.serviceWorker.controller) await Promise.race([controlled, failed]);
      sessionStorage.setItem('rc-isolating', '1');
    } catch (e) { console.warn('offline copy not kept, one thread:', e); return false; }
    location.reload();
    return true;
  }

  // The runtime's first run allocates and packs the weights (a photo's time again): done when the visitor reaches
  // for a button (the camera or the file chooser takes longer than that), not while the page loads; a photo that
  // comes first (no touch: a test's or a script's) warms the runtime up itself
  function warmUpOnFirstTouch() {
    const [w, h] = state.config.preprocess.size;
    const go = () => {
      for (const ev of ['pointerdown', 'touchstart', 'keydown', 'focusin']) document.removeEventListener(ev, go, true);
      if (state.warm) return;
      state.warm = 'running';
      enqueue(async () => { await run(new Uint8Array(3 * w * h).fill(128)); state.warm = 'done'; });
    };
    for (const ev of ['pointerdown', 'touchstart', 'keydown', 'focusin']) document.addEventListener(ev, go, { capture: true, passive: true });
    state.warmUp = go;
  }

  async function start() {
    try {
      const r = await fetch('config.json');
      if (!r.ok) throw new Error(`config.json: HTTP ${r.status}`);
      const config = state.config = await r.json();
      document.title = `Which bin? ${config.name}`;
      if (await isolateFirst(config)) return;
      if (typeof ort === 'undefined') throw new Error('ONNX Runtime Web (ort/ort.wasm.min.js) did not load');
      ort.env.wasm.wasmPaths = new URL('ort/', location.href).href;
      ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, navigator.hardwareConcurrency || 1) : 1;
      ort.env.logLevel = 'error';
      const t0 = performance.now(), model = await fetchBytes(config.model), t1 = performance.now();
      state.session = await ort.InferenceSession.create(model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
      // ms spent fetching the model, and starting the runtime (compiling its WebAssembly) and the model's session
      window.rcTimings = { model_fetch_ms: t1 - t0, session_ms: performance.now() - t1 };
      const missing = config.classes.filter(c => !config.rules.class_bins[c]);
      if (missing.length) $('rc-note').textContent = `The rules "${config.rules.name}" have no bin for: ${missing.join(', ')}.`;
      $('rc-foot').textContent = `Model ${config.name}: ${config.classes.length} classes, ${config.preprocess.size.join('x')} px; ` +
        `rules "${config.rules.name}"; ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? 's' : ''}.`;
      for (const id of ['rc-camera', 'rc-files']) { const el = $(id); el.disabled = false; el.addEventListener('change', () => onFiles(el)); }
      document.body.dataset.state = 'ready';
      document.body.dataset.threads = ort.env.wasm.numThreads;
      window.rcReadyAt = performance.now();
      const few = config.classes.slice(0, 8).join(', '), more = config.classes.length - 8;
      say(`Ready. This model knows ${few}${more > 0 ? ` and ${more} more` : ''}.`);
      warmUpOnFirstTouch();
      if (useWorker)   // kept up to date (a new export's worker replaces the old one's copy)
        navigator.serviceWorker.register(`sw.js?v=${encodeURIComponent(config.cache)}`).catch(e => console.warn('offline copy not kept:', e));
    } catch (e) {
      document.body.dataset.state = 'failed';
      say(`The model could not be loaded: ${e.message || e}`, 'error');
      console.error(e);
    }
  }

  window.RCApp = { verdict, pct, state, decode };   // for tests and benchmarks
  start();
})();
