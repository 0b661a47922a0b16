"""Embed TrashNet and garbage12 once with the default bodies (through the package's feature cache, views orig+flip)
and extra views for the sources study; see sources_study.py. Arrays go to /work/cache/sources-default.npz and
/work/cache/views/<name>.npy (+ <name>.paths.txt, the row order)."""
import argparse, itertools, sys, time
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from recycle_classifier.features.embedder import get_embedder
from recycle_classifier.features.cache import FeatureCache
from recycle_classifier.features.embedder import DEFAULT_BODIES
from recycle_classifier.base.images import open_images

TN = Path('/work/shared/datasets/trashnet'); G12 = Path('/work/shared/datasets/garbage12')
EXT = {'.jpg', '.jpeg', '.png', '.webp', '.bmp'}

def listing():
    "(path, source, label, split) of every photo, TrashNet first"
    rows = []
    for split in ('train', 'valid'):
        for c in sorted(p.name for p in (TN/split).iterdir() if p.is_dir()):
            rows += [(str(f), 'trashnet', c, split) for f in sorted((TN/split/c).iterdir()) if f.suffix.lower() in EXT]
    for c in sorted(p.name for p in G12.iterdir() if p.is_dir()):
        rows += [(str(f), 'garbage12', c, '') for f in sorted((G12/c).iterdir()) if f.suffix.lower() in EXT]
    return rows

def grey(x): g = (0.299*x[:, 0] + 0.587*x[:, 1] + 0.114*x[:, 2])[:, None]; return g.expand(-1, 3, -1, -1).contiguous()
def crop80(x):
    h, w = x.shape[-2:]; dh, dw = int(h*.1), int(w*.1)
    return x[..., dh:h-dh, dw:w-dw].contiguous()
def lowres(x, px=160):
    h, w = x.shape[-2:]
    y = F.interpolate(x, size=(px, px), mode='bilinear', antialias=True, align_corners=False)
    return F.interpolate(y, size=(h, w), mode='bilinear', align_corners=False).clamp(0, 1)
def jitter(x, seed=0):
    "a per-photo random colour change: contrast 0.6-0.9, brightness -0.1..0.1, saturation 0.3-1, a colour cast"
    g = torch.Generator().manual_seed(seed); n = len(x)
    c = 0.6 + 0.3*torch.rand(n, 1, 1, 1, generator=g); b = 0.2*torch.rand(n, 1, 1, 1, generator=g) - 0.1
    s = 0.3 + 0.7*torch.rand(n, 1, 1, 1, generator=g); cast = 0.08*(torch.rand(n, 3, 1, 1, generator=g) - 0.5)
    m = x.mean((1, 2, 3), keepdim=True); gy = grey(x)
    y = gy + s*(x - gy); y = m + c*(y - m) + b + cast
    return y.clamp(0, 1)
def background(x, seed=0):
    "the object (pixels far from the border colour) composited on a random smooth colour field with texture"
    g = torch.Generator().manual_seed(seed); n, _, h, w = x.shape
    border = torch.cat([x[..., :8, :].flatten(2), x[..., -8:, :].flatten(2), x[..., :, :8].flatten(2), x[..., :, -8:].flatten(2)], 2)
    bg_col = border.median(2).values[..., None, None]
    d = (x - bg_col).abs().amax(1, keepdim=True)
    m = (d > 0.12).float()
    m = F.max_pool2d(m, 5, 1, 2); m = -F.max_pool2d(-m, 5, 1, 2)   # close small holes
    m = F.avg_pool2d(m, 9, 1, 4)                                       # soft edge
    field = F.interpolate(torch.rand(n, 3, 3, 3, generator=g), size=(h, w), mode='bicubic', align_corners=False).clamp(0, 1)
    tex = F.interpolate(torch.rand(n, 1, h//8, w//8, generator=g), size=(h, w), mode='bilinear', align_corners=False)
    bg = (0.15 + 0.7*field + 0.25*(tex - 0.5)).clamp(0, 1)
    return m*x + (1 - m)*bg

VIEWFNS = dict(grey=grey, crop80=crop80, lowres=lowres, jitter=jitter, bg=background)

def embed_view(emb, paths, name, out_dir, bs=16):
    out = Path(out_dir)/f'{name}.npy'
    if out.exists() and (Path(out_dir)/f'{name}.paths.txt').read_text().split('\n') == [str(p) for p in paths]:
        print(f'{name}: cached', flush=True); return np.load(out)
    fn, feats, t0 = VIEWFNS[name], [], time.time()
    for i in range(0, len(paths), bs):
        ok, bad = open_images(paths[i:i+bs])
        assert not bad, bad
        x = emb.load([im for _, im in ok])
        x = fn(x, seed=i) if name in ('jitter', 'bg') else fn(x)
        feats.append(emb.embed_batch(x, ('orig',))[:, 0])
        if i % (bs*40) == 0: print(f'  {name}: {i}/{len(paths)} {time.time()-t0:.0f}s', flush=True)
    a = np.concatenate(feats).astype(np.float32)
    np.save(out, a); (Path(out_dir)/f'{name}.paths.txt').write_text('\n'.join(map(str, paths)))
    print(f'{name}: {len(paths)} photos in {time.time()-t0:.0f}s', flush=True)
    return a

def prog(batches, src, t0):
    for i in batches:
        if i % 320 == 0: print(f'  {src}: {i}/{batches.stop} {time.time()-t0:.0f}s', flush=True)
        yield i

def snapshot(out, cache_dir):
    "Save the stacked arrays of every photo whose orig and flip features are in the cache now (no embedding)"
    from recycle_classifier.base.fileio import file_sha256
    emb = get_embedder(DEFAULT_BODIES); cache = FeatureCache(cache_dir); rows, feats, kept = listing(), [], []
    for r in rows:
        sha = file_sha256(r[0])
        fs = [[cache.get(e.key, v, sha, e.dim) for e in emb.parts] for v in ('orig', 'flip')]
        if all(x is not None for f in fs for x in f):
            feats.append(np.stack([np.concatenate(f) for f in fs])); kept.append(r)
    np.savez(out, feats=np.stack(feats), paths=np.array([r[0] for r in kept]), source=np.array([r[1] for r in kept]),
             label=np.array([r[2] for r in kept]), split=np.array([r[3] for r in kept]), key=emb.key, groups=np.array(['snapshot']))
    print('snapshot', out, len(kept), 'photos')

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--cache-dir', default='/work/cache/features')
    ap.add_argument('--out', default='/work/cache/sources-default.npz')
    ap.add_argument('--views', nargs='*', default=[])
    ap.add_argument('--never-per-class', type=int, default=0, help='embed only the first N photos of each never-taught class (0: all)')
    ap.add_argument('--snapshot', default=None, help='only save what the cache holds now to this .npz')
    a = ap.parse_args()
    if a.snapshot: snapshot(a.snapshot, a.cache_dir); sys.exit()
    torch.set_num_threads(2)
    rows = listing()
    emb = get_embedder(DEFAULT_BODIES); cache = FeatureCache(a.cache_dir)
    print(emb, emb.key, len(rows), 'photos', flush=True)
    never = {'battery', 'biological', 'clothes', 'shoes'}
    groups = [('trashnet', lambda r: r[1] == 'trashnet'), ('garbage12 never taught', lambda r: r[1] == 'garbage12' and r[2] in never),
              ('garbage12 six classes', lambda r: r[1] == 'garbage12' and r[2] not in never)]
    done = set(str(x) for x in np.load(a.out)['groups']) if Path(a.out).exists() else set()
    if len(done) < len(groups):
        t0 = time.time(); feats, kept = [], []
        for name, sel in groups:
            rs = [r for r in rows if sel(r)]
            if name == 'garbage12 six classes':   # round-robin over the classes: what is cached at any time is balanced
                by = {}
                for r in rs: by.setdefault(r[2], []).append(r)
                rs = [r for grp in itertools.zip_longest(*by.values()) for r in grp if r is not None]
            if name == 'garbage12 never taught' and a.never_per_class:   # a shared 2-core machine: the first N a class
                rs = [r for c in sorted(never) for r in [q for q in rs if q[2] == c][:a.never_per_class]]
            f, ok, errors = cache.features(emb, [r[0] for r in rs], ('orig', 'flip'), bs=16, progress=lambda b: prog(b, name, t0))
            print(name, f.shape, 'errors', errors, f'{time.time()-t0:.0f}s', flush=True)
            okset = {str(p) for p in ok}
            feats.append(f); kept += [r for r in rs if r[0] in okset]
            np.savez(a.out + '.tmp.npz', feats=np.concatenate(feats), paths=np.array([r[0] for r in kept]), source=np.array([r[1] for r in kept]),
                     label=np.array([r[2] for r in kept]), split=np.array([r[3] for r in kept]), key=emb.key,
                     groups=np.array([g for g, _ in groups[:len(feats)]]))
            Path(a.out + '.tmp.npz').replace(a.out)
            print('saved', a.out, flush=True)
    z = np.load(a.out)
    paths, source = list(z['paths']), z['source']
    for v in a.views:
        name, _, src = v.partition(':')
        lab = z['label']
        ps = [p for p, s, l in zip(paths, source, lab) if not src or s == src or (src == 'g6' and s == 'garbage12' and l not in never)]
        embed_view(emb, ps, name, Path(a.out).parent/'views')
