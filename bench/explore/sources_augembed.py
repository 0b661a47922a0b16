"""Issue 23, session 2026-12-03: training-time augmented views for the sources study.

Embeds augmented copies of a fixed subset of training photos (TrashNet train: up to 150 a class; garbage12 six
classes: 150 a mapped class, glass 50 from each glass folder) with the default bodies through the package's
embedder (`get_embedder(DEFAULT_BODIES)`, one thread). Each augmentation works on the PIL photo at its own
resolution, before the embedder's own resize (`emb.load`), as a `train --augment` would. Each view is one random
draw per photo (seeded by view name and photo index), embedded as the 'orig' view only.

Views (in the order they are embedded; each is saved as soon as it is complete, so a partial run is usable):
  mix1, mix2  a random composition of everything below (as torchvision-style training augmentation)
  crop        random resized crop (scale 0.3-1, aspect 3/4-4/3) + random mirror
  colour      colour jitter (brightness/contrast 0.6-1.4, saturation 0.4-1.4, hue +-0.05), grey with p 0.25
  degrade     shorter side down to 96-224 px, blur (radius 0.3-1.5) with p 0.5, JPEG quality 15-60
  bg          (TrashNet only) the object composited on a random smooth textured colour field
  ccrop       TEST-time view, every cached photo: the central 80% (for test-time augmentation, last)

    OMP_NUM_THREADS=1 .venv/bin/python bench/explore/sources_augembed.py [--views mix1 crop ...] [--per-class 150]

Arrays: /work/cache/augviews/<view>.npy (+ .paths.txt); timings appended to /work/cache/augviews/timing.jsonl.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import argparse, io, json, subprocess, time, zlib
from datetime import datetime, timezone
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

torch.set_num_threads(1)
from recycle_classifier.features.embedder import get_embedder, DEFAULT_BODIES
from recycle_classifier.base.images import open_images

OUT = Path('/work/cache/augviews'); NPZ = '/work/cache/sources-default.npz'
SIX = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash']
GLASS = ['brown-glass', 'green-glass', 'white-glass']

def subset(z, per_class=150, seed=0):
    "The training subset: paths of TrashNet train (up to `per_class` a class) and garbage12 six classes (per mapped class)"
    rng = np.random.default_rng(seed); paths, src, lab, split = [str(p) for p in z['paths']], z['source'], z['label'], z['split']
    out = {'trashnet': [], 'garbage12': []}
    for c in SIX:
        ps = sorted(p for p, s, l, sp in zip(paths, src, lab, split) if s == 'trashnet' and sp == 'train' and l == c)
        out['trashnet'] += [ps[i] for i in sorted(rng.permutation(len(ps))[:per_class])]
        folders = GLASS if c == 'glass' else [c]
        for fo in folders:
            ps = sorted(p for p, s, l in zip(paths, src, lab) if s == 'garbage12' and l == fo)
            k = per_class // len(folders)
            out['garbage12'] += [ps[i] for i in sorted(rng.permutation(len(ps))[:k])]
    return out

# ---------------------------------------------------------------- augmentations on PIL photos
def rrc(im, r, scale=(0.3, 1.0), ratio=(3/4, 4/3)):
    "random resized crop (the crop only: the embedder squishes it to its size) + mirror with p 0.5"
    w, h = im.size
    for _ in range(10):
        a = w * h * r.uniform(*scale); ar = np.exp(r.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(a * ar))), int(round(np.sqrt(a / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = r.integers(0, w - cw + 1), r.integers(0, h - ch + 1); im = im.crop((x0, y0, x0 + cw, y0 + ch)); break
    return ImageOps.mirror(im) if r.random() < 0.5 else im

def colour(im, r, p_grey=0.25):
    "brightness, contrast, saturation (random order not needed at these ranges), hue shift; grey with p_grey"
    im = ImageEnhance.Brightness(im).enhance(r.uniform(0.6, 1.4))
    im = ImageEnhance.Contrast(im).enhance(r.uniform(0.6, 1.4))
    im = ImageEnhance.Color(im).enhance(r.uniform(0.4, 1.4))
    hsv = np.asarray(im.convert('HSV')).copy(); hsv[..., 0] = (hsv[..., 0].astype(int) + int(r.uniform(-0.05, 0.05) * 255)) % 256
    im = Image.fromarray(hsv, 'HSV').convert('RGB')
    return ImageOps.grayscale(im).convert('RGB') if r.random() < p_grey else im

def degrade(im, r):
    "lower resolution (shorter side 96-224 px), blur with p 0.5, JPEG re-compression at quality 15-60"
    w, h = im.size; s = r.uniform(96, 224) / min(w, h)
    if s < 1: im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    if r.random() < 0.5: im = im.filter(ImageFilter.GaussianBlur(r.uniform(0.3, 1.5)))
    buf = io.BytesIO(); im.save(buf, 'JPEG', quality=int(r.integers(15, 61))); buf.seek(0)
    return Image.open(buf).convert('RGB')

def background(im, r):
    "the object (pixels far from the border's median colour) on a random muted, textured colour field; unchanged without a plain light border"
    x = torch.from_numpy(np.asarray(im.convert('RGB'), np.float32) / 255).permute(2, 0, 1)[None]
    _, _, h, w = x.shape; g = torch.Generator().manual_seed(int(r.integers(2**31)))
    border = torch.cat([x[..., :8, :].flatten(2), x[..., -8:, :].flatten(2), x[..., :, :8].flatten(2), x[..., :, -8:].flatten(2)], 2)
    bcol = border.median(2).values[..., None, None]
    if bcol.min() < 0.45 or bcol.max() - bcol.min() > 0.2: return im   # no plain light board around the object: unchanged
    d = (x - bcol).abs().amax(1, keepdim=True)
    m = (d > 0.12).float(); m = F.max_pool2d(m, 5, 1, 2); m = -F.max_pool2d(-m, 5, 1, 2); m = F.avg_pool2d(m, 9, 1, 4)
    base = 0.1 + 0.8 * torch.rand(1, 3, 1, 1, generator=g); base = 0.5 * base + 0.5 * base.mean(1, keepdim=True)   # a muted colour
    field = F.interpolate(0.25 * (torch.rand(1, 3, 3, 3, generator=g) - 0.5), size=(h, w), mode='bicubic', align_corners=False)
    tex = F.interpolate(torch.rand(1, 1, max(1, h//12), max(1, w//12), generator=g), size=(h, w), mode='bicubic', align_corners=False)
    y = m * x + (1 - m) * (base + field + 0.15 * (tex - 0.5)).clamp(0, 1)
    return Image.fromarray((y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))

def mix(im, r, studio):
    "a random composition: background (studio photos, p 0.5), crop (p 0.8), colour (p 0.8), degrade (p 0.5)"
    if studio and r.random() < 0.5: im = background(im, r)
    if r.random() < 0.8: im = rrc(im, r)
    if r.random() < 0.8: im = colour(im, r, p_grey=0.2)
    if r.random() < 0.5: im = degrade(im, r)
    return im

def ccrop(im, r):
    w, h = im.size; return im.crop((int(w*.1), int(h*.1), w - int(w*.1), h - int(h*.1)))

AUG = dict(mix1=lambda im, r, s: mix(im, r, s), mix2=lambda im, r, s: mix(im, r, s), crop=lambda im, r, s: rrc(im, r),
           colour=lambda im, r, s: colour(im, r), degrade=lambda im, r, s: degrade(im, r), bg=lambda im, r, s: background(im, r),
           ccrop=lambda im, r, s: ccrop(im, r), ccrop_g12=lambda im, r, s: ccrop(im, r))   # ccrop_g12: garbage12's photos

def embed_view(emb, name, paths, studio_of, bs=16):
    out = OUT/f'{name}.npy'
    if out.exists() and (OUT/f'{name}.paths.txt').read_text().split('\n') == paths:
        print(f'{name}: cached', flush=True); return
    feats, t0, t_aug = [], time.time(), 0.0
    for i in range(0, len(paths), bs):
        ok, bad = open_images(paths[i:i+bs]); assert not bad, bad
        ta = time.time(); ims = []
        for k, (p, im) in enumerate(ok):
            r = np.random.default_rng([zlib.crc32(name.encode()), i + k])
            ims.append(AUG[name](im.convert('RGB'), r, studio_of[p]))
        t_aug += time.time() - ta
        feats.append(emb.embed_batch(emb.load(ims), ('orig',))[:, 0])
        if i % (bs * 10) == 0:
            el = time.time() - t0
            print(f'  {name}: {i + len(ok)}/{len(paths)} {el:.0f}s ({el / (i + len(ok)):.3f} s/photo)', flush=True)
    a = np.concatenate(feats).astype(np.float32); secs = time.time() - t0
    np.save(out, a); (OUT/f'{name}.paths.txt').write_text('\n'.join(paths))
    row = dict(when=datetime.now(timezone.utc).isoformat(timespec='seconds'), view=name, n=len(paths), s=round(secs, 1),
               s_per_photo=round(secs / len(paths), 4), s_aug_per_photo=round(t_aug / len(paths), 4), threads=1,
               uptime=subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip())
    with open(OUT/'timing.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')
    print(f'{name}: {len(paths)} photos in {secs:.0f}s ({secs/len(paths):.3f} s/photo, augmentation {t_aug/len(paths):.3f}); {row["uptime"]}', flush=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--views', nargs='*', default=['mix1', 'crop', 'colour', 'degrade', 'bg', 'mix2', 'ccrop'])
    ap.add_argument('--per-class', type=int, default=150)
    ap.add_argument('--ccrop-source', default='', help='embed the test-time centre crop only for this source (default: every photo)')
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    z = np.load(NPZ); sub = subset(z, a.per_class)
    studio = {str(p): s == 'trashnet' for p, s in zip(z['paths'], z['source'])}
    emb = get_embedder(DEFAULT_BODIES)
    print(emb, emb.key, {k: len(v) for k, v in sub.items()}, flush=True)
    assert emb.key == str(z['key']), (emb.key, z['key'])
    for v in a.views:
        if v == 'ccrop': paths = [str(p) for p, s in zip(z['paths'], z['source']) if not a.ccrop_source or s == a.ccrop_source]
        elif v == 'ccrop_g12': paths = [str(p) for p, s in zip(z['paths'], z['source']) if s == 'garbage12']
        elif v == 'bg': paths = sub['trashnet']
        else: paths = sub['trashnet'] + sub['garbage12']
        embed_view(emb, v, paths, studio)
