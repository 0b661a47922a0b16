// The ONNX predictor's resizing (recycle_classifier/onnx_predict.py: fastai_resize, crop_pad), on RGB pixel
// arrays, bit for bit: Pillow's convolution resampling (libImaging/Resample.c: antialiased, 22-bit fixed-point
// coefficients, a horizontal then a vertical pass, each rounded to 8 bits), its crops, and numpy's padding.
// An image is {width, height, data: Uint8Array of width*height*3 RGB bytes}.
'use strict';
(function (root) {
  // Pillow's filters and their support (Image.NEAREST = 0 is not a convolution and is not supported)
  const sinc = x => { if (x === 0) return 1; x *= Math.PI; return Math.sin(x) / x; };
  const FILTERS = {
    1: [x => (-3 <= x && x < 3) ? sinc(x) * sinc(x / 3) : 0, 3],                          // LANCZOS
    2: [x => { x = Math.abs(x); return x < 1 ? 1 - x : 0; }, 1],                         // BILINEAR
    3: [x => { const a = -0.5; x = Math.abs(x);                                          // BICUBIC
               if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
               if (x < 2) return (((x - 5) * x + 8) * x - 4) * a; return 0; }, 2],
    4: [x => (x > -0.5 && x <= 0.5) ? 1 : 0, 0.5],                                       // BOX
    5: [x => { x = Math.abs(x); if (x === 0) return 1; if (x >= 1) return 0; x *= Math.PI; // HAMMING
               return Math.sin(x) / x * (Math.fround(0.54) + Math.fround(0.46) * Math.cos(x)); }, 1],
  };
  const PRECISION_BITS = 32 - 8 - 2, ONE = 2 ** PRECISION_BITS, HALF = 2 ** (PRECISION_BITS - 1);

  // precompute_coeffs + normalize_coeffs_8bpc: for each output pixel, the first input pixel and integer weights
  function coeffs(inSize, outSize, filter) {
    const [f, fsupport] = FILTERS[filter];
    const scale = inSize / outSize, filterscale = Math.max(scale, 1), support = fsupport * filterscale;
    const ss = 1 / filterscale, out = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const k = new Float64Array(xmax);
      let ww = 0;
      for (let x = 0; x < xmax; x++) { k[x] = f((x + xmin - center + 0.5) * ss); ww += k[x]; }
      const ki = new Float64Array(xmax);
      for (let x = 0; x < xmax; x++) {
        const w = ww !== 0 ? k[x] / ww : k[x];
        ki[x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
      }
      out.push([xmin, ki]);
    }
    return out;
  }

  const clip8 = ss => { const v = Math.floor(ss / ONE); return v < 0 ? 0 : v > 255 ? 255 : v; };

  function horizontal(im, width, filter) {
    const { width: w, height: h, data } = im, out = new Uint8Array(width * h * 3), cs = coeffs(w, width, filter);
    for (let y = 0; y < h; y++) {
      const row = y * w * 3, orow = y * width * 3;
      for (let xx = 0; xx < width; xx++) {
        const [xmin, k] = cs[xx];
        let r = HALF, g = HALF, b = HALF;
        for (let x = 0, i = row + xmin * 3; x < k.length; x++, i += 3) {
          const kx = k[x]; r += data[i] * kx; g += data[i + 1] * kx; b += data[i + 2] * kx;
        }
        const o = orow + xx * 3; out[o] = clip8(r); out[o + 1] = clip8(g); out[o + 2] = clip8(b);
      }
    }
    return { width, height: h, data: out };
  }

  function vertical(im, height, filter) {
    const { width: w, height: h, data } = im, out = new Uint8Array(w * height * 3), cs = coeffs(h, height, filter);
    const stride = w * 3;
    for (let yy = 0; yy < height; yy++) {
      const [ymin, k] = cs[yy], orow = yy * stride;
      for (let x = 0; x < stride; x++) {
        let s = HALF;
        for (let y = 0, i = ymin * stride + x; y < k.length; y++, i += stride) s += data[i] * k[y];
        out[orow + x] = clip8(s);
      }
    }
    return { width: w, height, data: out };
  }

  // Image.resize((width, height), filter): each pass only where the size changes; the horizontal pass first,
  // unless the height shrinks by more than twice as many pixels as the width does (Pillow 13 does that pass first)
  function resize(im, width, height, filter = 2) {
    if (!FILTERS[filter]) throw new Error(`resampling filter ${filter} is not supported`);
    if (im.width === width && im.height === height) return { width, height, data: im.data.slice() };
    const verticalFirst = height < im.height && im.height - height > 2 * (im.width - width);
    if (verticalFirst) im = vertical(im, height, filter);
    if (im.width !== width) im = horizontal(im, width, filter);
    if (im.height !== height) im = vertical(im, height, filter);
    return im;
  }

  // numpy.pad's modes as an index into 0..n-1 (fastai's names: zeros, border, reflection)
  function padIndex(i, n, mode) {
    if (i >= 0 && i < n) return i;
    if (mode === 'zeros') return -1;
    if (mode === 'border' || n === 1) return i < 0 ? 0 : n - 1;
    const p = 2 * (n - 1); i = ((i % p) + p) % p;           // 'reflection': numpy's reflect (edge not repeated)
    return i < n ? i : p - i;
  }

  // onnx_predict.crop_pad: the (cw, ch) box at top-left (l, t), padded where it leaves the photo
  function cropPad(im, cw, ch, l, t, mode = 'zeros') {
    const { width: w, height: h, data } = im, out = new Uint8Array(cw * ch * 3);
    const xs = Int32Array.from({ length: cw }, (_, x) => padIndex(l + x, w, mode));
    for (let y = 0; y < ch; y++) {
      const sy = padIndex(t + y, h, mode);
      if (sy < 0) continue;
      for (let x = 0; x < cw; x++) {
        const sx = xs[x];
        if (sx < 0) continue;
        const i = (sy * w + sx) * 3, o = (y * cw + x) * 3;
        out[o] = data[i]; out[o + 1] = data[i + 1]; out[o + 2] = data[i + 2];
      }
    }
    return { width: cw, height: ch, data: out };
  }

  // onnx_predict.fastai_resize: `im` resized as the learner's validation transforms do, per `pre` (the metadata)
  function fastaiResize(im, pre) {
    const [sw, sh] = pre.size, method = pre.method, filter = pre.resample ?? 2;
    const { width: w, height: h } = im;
    if (method === 'squish') return resize(im, sw, sh, filter);
    if (method === 'random_resized_crop') {
      const [fw, fh] = pre.final_size;
      const r = resize(im, fw, fh, filter);
      return cropPad(r, sw, sh, Math.floor((fw - sw) / 2), Math.floor((fh - sh) / 2));
    }
    const wider = method === 'pad' ? (w / sw > h / sh) : (w / sw < h / sh);
    const m = wider ? w / sw : h / sh;
    const cw = Math.trunc(m * sw), ch = Math.trunc(m * sh);
    const c = cropPad(im, cw, ch, Math.trunc(0.5 * (w - cw)), Math.trunc(0.5 * (h - ch)), pre.pad_mode || 'reflection');
    return resize(c, sw, sh, filter);
  }

  // (height, width) RGB bytes to the network's channels-first uint8 input
  function toCHW(im) {
    const n = im.width * im.height, out = new Uint8Array(n * 3), d = im.data;
    for (let i = 0; i < n; i++) { out[i] = d[3 * i]; out[n + i] = d[3 * i + 1]; out[2 * n + i] = d[3 * i + 2]; }
    return out;
  }

  // canvas RGBA bytes to RGB
  function fromRGBA(rgba, width, height) {
    const n = width * height, data = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) { data[3 * i] = rgba[4 * i]; data[3 * i + 1] = rgba[4 * i + 1]; data[3 * i + 2] = rgba[4 * i + 2]; }
    return { width, height, data };
  }

  root.RCResize = { resize, cropPad, fastaiResize, toCHW, fromRGBA, FILTERS: Object.keys(FILTERS).map(Number) };
})(typeof self !== 'undefined' ? self : globalThis);
