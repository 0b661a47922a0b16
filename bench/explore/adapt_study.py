"""Issue 23 research: how far `adapt` (re-fitting the head to a new site from 5 labelled photos a class, plus the
site's unlabelled photos) can go, and a "not sure" whose threshold carries to a new source. Cached features only.

Data: /work/cache/sources-default.npz (bench/explore/sources_embed.py): the default bodies' features (photo + mirror)
of all of TrashNet (train 1,768 / valid 328), garbage12's six mapped classes (2,734) and 100 each of its
never-taught battery, biological, clothes, shoes.

Directions (leave one source out):
  T>G  base head trained on TrashNet train (the default recipe: `fit_head`, 40 epochs, class-balanced, power 0.5);
       site = garbage12. "Other source" = TrashNet valid.
  G>T  base head trained on 80% of garbage12's six classes (per class, seeded); site = all of TrashNet.
       "Other source" = garbage12's other 20%.
Each draw (seeds 0..N-1): 5 labelled site photos a class (L); the rest of the site's known-class photos split at
random in two halves: U (the site's unlabelled folder) and E (what we report, never used for anything else).
T>G: half of garbage12's never-taught photos go into U too (a site's unlabelled photos hold junk), the other half
are the never-taught photos we report; G>T: never-taught = garbage12's 400 (from the base model's own source).

Methods (no fit: seconds):  base | align (the head on features standardised by the site's L+U statistics)
  | proto-{feat,hid} (cosine to the class means of L in standardised features / the head's hidden layer)
  | blend-{space}-b{beta}: head logits + beta * cosine / 0.1 | refine-{space}-b{beta}: the blend's prototypes
  re-estimated from U with soft labels (5 rounds, transductive soft k-means), then the blend.
Methods that re-fit the head (`fit_head`, the package's defaults):
  adapt       the current recipe (adapt.py: site share 0.15 of the loss, both parts class-balanced, pooled stats)
  refit[:share=S]  source rows standardised by the source's statistics, site rows and test photos by the site's
  pseudo[:from=NAME:share=S:pshare=P:cap=C:stats=pooled]  refit plus U's most confident photos (C a predicted class) labelled by
              method NAME (run before it in the same draw), holding `pshare` of the loss; stats=pooled: standardised
              as adapt does (one mean/std of all training rows) instead of per source
  any fit takes :ep=E (epochs, default 40)
  ... then the same prototype blends on the re-fitted head.
Label propagation (`--lp NAMES`, after the fact on saved methods): the 30 labels spread over the kNN graph of the
site's L + U photos (k 10, alpha 0.9), a photo's distribution from its k nearest graph photos (+ `--eps` uniform mass:
a gate for photos unlike the site's), added to the method's logits as beta * log p (NAME+lpblend[-e{eps}]-b{beta}).
Every method's logits on E, U, never-taught and the other source are saved to /tmp/adapt_study/; `--summary` reads
them, picks the blend weight and the "not sure" rule on the OTHER direction (never on the reported photos) and prints
the tables; rows go to bench/results/adapt-study.jsonl.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/explore/adapt_study.py --direction T>G --draws 10 [--fits ...]
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/explore/adapt_study.py --direction T>G --draws 0-9 --lp adapt --eps 1
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/explore/adapt_study.py --summary --draws 0-9 [--only NAMES]
"""
from __future__ import annotations
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import argparse, json, time
from datetime import datetime, timezone
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
try: from recycle_classifier.train.head import fit_head
except ImportError: from recycle_classifier.train.head import fit_head

NPZ = Path('/work/cache/sources-default.npz')
WORK = Path('/tmp/adapt_study')
RESULTS = Path(__file__).resolve().parents[1]/'results'/'adapt-study.jsonl'
SIX = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash']
G_MAP = {'brown-glass': 'glass', 'green-glass': 'glass', 'white-glass': 'glass', **{c: c for c in SIX}}
TAU = 0.1           # cosine temperature of the prototypes
BETAS = (0.5, 1, 2, 4)
APP_THRESHOLD = 0.6

# ------------------------------------------------------------------ data and pieces
def load():
    z = np.load(NPZ)
    F = np.clip(z['feats'], 1e-6, None) ** np.float32(0.5)       # the default recipe's power 0.5
    y = np.array([SIX.index(G_MAP[l]) if l in G_MAP else -1 for l in z['label']])
    return F.astype(np.float32), y, z['source'], z['split']

def stats(x):
    "per-feature mean, std over all rows and views (the package's `standardise`)"
    flat = x.reshape(-1, x.shape[-1]); return flat.mean(0), np.maximum(flat.std(0), 1e-6)

def balanced(y, n=6):
    c = np.bincount(y, minlength=n).astype(np.float32); return (len(y) / (n * np.maximum(c, 1)))[y].astype(np.float32)

def split_direction(direction, y, src, split):
    "indices: train, other (held-out of the base source), site known-class, never-taught (site-side, base-side)"
    tn, g = src == 'trashnet', src == 'garbage12'
    if direction == 'T>G':
        return dict(train=np.where(tn & (split == 'train'))[0], other=np.where(tn & (split == 'valid'))[0],
                    site=np.where(g & (y >= 0))[0], site_never=np.where(g & (y < 0))[0], base_never=np.array([], int))
    rng, tr, ot = np.random.default_rng(1234), [], []
    for c in range(6):
        i = rng.permutation(np.where(g & (y == c))[0]); k = int(round(0.2 * len(i))); ot += list(i[:k]); tr += list(i[k:])
    return dict(train=np.sort(tr), other=np.sort(ot), site=np.where(tn)[0], site_never=np.array([], int),
                base_never=np.where(g & (y < 0))[0])

def draw(d, y, parts, shots=5):
    "labelled L (shots a class), unlabelled U, evaluated E, never-taught reported N; U gets half the site's never-taught"
    rng = np.random.default_rng(d)
    L = np.concatenate([rng.permutation(parts['site'][y[parts['site']] == c])[:shots] for c in range(6)])
    rest = rng.permutation(np.setdiff1d(parts['site'], L)); h = len(rest) // 2
    U, E = rest[:h], rest[h:]
    sn = rng.permutation(parts['site_never']); k = len(sn) // 2
    U = np.concatenate([U, sn[:k]])
    N = np.concatenate([sn[k:], parts['base_never']]).astype(int)
    return L, U, np.sort(E), N

@torch.no_grad()
def forward(head, z):
    "view-averaged logits and hidden activations of standardised features z (n, views, dim)"
    zt = torch.from_numpy(np.ascontiguousarray(z, np.float32))
    h = head[2](head[1](zt)); lo = head[4](h)
    return lo.mean(1).numpy(), h.mean(1).numpy()

def unit(a): return a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-8)

def softmax(lo):
    e = np.exp(lo - lo.max(1, keepdims=True)); return e / e.sum(1, keepdims=True)

def protos(fl, yl, fu=None, pu=None, n=6):
    "unit class means of labelled rows (and soft-labelled unlabelled rows)"
    P = np.stack([fl[yl == c].sum(0) for c in range(n)])
    if fu is not None: P = P + pu.T @ fu
    return unit(P)

# ------------------------------------------------------------------ the adapted models
def fit(x, yy, w, seed=42, **kw):
    "the package's fit_head on already-standardised rows (mean 0, std 1), per-photo weights w"
    d = x.shape[-1]
    return fit_head(x, yy, 6, seed=seed, weights=w, mean_std=(np.zeros(d, np.float32), np.ones(d, np.float32)), **kw)[0]

def share_weights(parts_n, shares):
    "per-photo weights so that part i (n_i photos) holds shares[i] of the loss; parts_n[0] is the source (weight 1)"
    n0 = parts_n[0]; s0 = 1 - sum(shares)
    return [np.ones(n0, np.float32)] + [np.full(n, s / s0 * n0 / max(n, 1), np.float32) for n, s in zip(parts_n[1:], shares)]

class Run:
    "one direction: the base head, the draws, every method's logits saved for the summary"
    def __init__(self, direction, draws, fits, epochs):
        self.dir, self.draws, self.fits, self.epochs = direction, draws, fits, epochs
        self.F, self.y, src, split = load()
        self.p = split_direction(direction, self.y, src, split)
        WORK.mkdir(exist_ok=True)
        self.base_path = WORK/f"base-{direction.replace('>', '2')}.pt"
        self.ms = stats(self.F[self.p['train']])
        if self.base_path.exists(): self.base = torch.load(self.base_path, weights_only=False)
        else:
            t = time.time()
            tr = self.p['train']
            self.base = fit((self.F[tr] - self.ms[0]) / self.ms[1], self.y[tr], balanced(self.y[tr]), epochs=epochs)
            torch.save(self.base, self.base_path); print(f'{direction} base head fitted in {time.time() - t:.0f} s', flush=True)

    def z(self, idx, st): return (self.F[idx] - st[0]) / st[1]

    def save(self, d, name, lo, secs=0.):
        "lo: dict of logits for E, U, N, O (the other source); secs: seconds this method took"
        np.savez(WORK/f"{self.dir.replace('>', '2')}-{d}-{name}.npz", secs=secs, **lo)

    def heads_and_blends(self, d, name, head, st, L, U, E, N, O, st_other, secs=0., refine=True):
        "save the head alone, prototype blends and the transductive refinement built on `head` with site stats `st`"
        out, y = {}, self.y
        sets = dict(E=E, U=U, N=N, L=L)
        lo, hid = {}, {}
        for k, idx in sets.items(): lo[k], hid[k] = forward(head, self.z(idx, st))
        lo['O'] = forward(head, self.z(O, st_other))[0]
        self.save(d, name, {k: lo[k] for k in 'EUNO'}, secs)
        if not refine: return lo
        feat = {k: unit(self.z(idx, st).mean(1)) for k, idx in sets.items()}
        hc = hid['U'].mean(0)  # centre the hidden layer by the site's unlabelled mean
        hidn = {k: unit(v - hc) for k, v in hid.items()}
        for space, f in (('feat', feat), ('hid', hidn)):
            P = protos(f['L'], y[L])
            cos = {k: f[k] @ P.T for k in 'EUN'}
            self.save(d, f'{name}+proto-{space}', {k: cos[k] / TAU for k in 'EUN'} | dict(O=lo['O']), secs)
            for b in BETAS:
                bl = {k: lo[k] + b * cos[k] / TAU for k in 'EUN'}
                self.save(d, f'{name}+blend-{space}-b{b}', bl | dict(O=lo['O']), secs)
                # transductive: re-estimate the prototypes from U's soft labels, 5 rounds
                R = P
                for _ in range(5):
                    pu = softmax(lo['U'] + b * (f['U'] @ R.T) / TAU)
                    R = protos(f['L'], y[L], f['U'], pu)
                rf = {k: lo[k] + b * (f[k] @ R.T) / TAU for k in 'EUN'}
                self.save(d, f'{name}+refine-{space}-b{b}', rf | dict(O=lo['O']), secs)
        return lo

    def one(self, d):
        y, F, p = self.y, self.F, self.p
        L, U, E, N = draw(d, y, p)
        O, tr = p['other'], p['train']
        mt = stats(F[np.concatenate([L, U])])          # the site's statistics: its labelled + unlabelled photos
        ms = self.ms
        t = time.time(); self.heads_and_blends(d, 'base', self.base, ms, L, U, E, N, O, ms, refine=False)
        self.heads_and_blends(d, 'align', self.base, mt, L, U, E, N, O, ms, secs=time.time() - t)
        for spec in self.fits:
            kind, *opts = spec.split(':')
            if kind not in ('adapt', 'refit', 'pseudo'): raise SystemExit(f'unknown method {spec}')
            opt = dict(o.split('=') for o in opts)
            share, pshare = float(opt.get('share', 0.15)), float(opt.get('pshare', 0.3))
            t = time.time()
            pooled = kind == 'adapt' or opt.get('stats') == 'pooled'
            # adapt / pooled: raw rows, one standardisation from all training rows (adapt.py); refit: source rows by
            # the source's statistics, site rows (and the site's photos later) by the site's (L + U)
            xs, ys_, ws = [F[tr], F[L]] if pooled else [self.z(tr, ms), self.z(L, mt)], [y[tr], y[L]], [balanced(y[tr]), balanced(y[L])]
            if kind == 'pseudo':       # U's most confident photos, labelled by method `from` (saved earlier in this draw)
                lu = np.load(WORK/f"{self.dir.replace('>', '2')}-{d}-{opt.get('from', 'align+blend-feat-b1')}.npz")['U']
                pu = softmax(lu); conf, lab = pu.max(1), pu.argmax(1)
                cap, thr = int(opt.get('cap', 100)), float(opt.get('thr', 0.0))
                keep = np.concatenate([np.where(lab == c)[0][np.argsort(-conf[lab == c])][:cap] for c in range(6)])
                keep = keep[conf[keep] >= thr]
                xs.append(F[U[keep]] if pooled else self.z(U[keep], mt)); ys_.append(lab[keep]); ws.append(balanced(lab[keep]))
                sw = share_weights([len(tr), len(L), len(keep)], [share, pshare])
            else: sw = share_weights([len(tr), len(L)], [share])
            w = np.concatenate([a * b for a, b in zip(sw, ws)])
            x = np.concatenate(xs)
            st = stats(x) if pooled else None
            head = fit((x - st[0]) / st[1] if pooled else x, np.concatenate(ys_), w, epochs=int(opt.get('ep', self.epochs)))
            self.heads_and_blends(d, spec, head, st if pooled else mt, L, U, E, N, O, st if pooled else ms, secs=time.time() - t)
            if pooled: continue
            # the other source as the adapted model would see it if it kept the source's statistics (for reference)
            np.save(WORK/f"{self.dir.replace('>', '2')}-{d}-{spec}-O_srcstats.npy", forward(head, self.z(O, ms))[0])
        np.save(WORK/f"{self.dir.replace('>', '2')}-{d}-labels.npy", np.array([y[E], y[O]], dtype=object), allow_pickle=True)

# ------------------------------------------------------------------ label propagation on the site's photos (no fit)
LP_K, LP_ALPHA = 10, 0.9

def knn_graph(f, k=LP_K):
    "symmetric normalised k-nearest-neighbour graph of unit rows f (weights cosine**3)"
    s = f @ f.T; np.fill_diagonal(s, -1)
    idx = np.argsort(-s, 1)[:, :k]; W = np.zeros_like(s); r = np.arange(len(f))[:, None]
    W[r, idx] = np.clip(s[r, idx], 0, None) ** 3
    W = W + W.T; dg = W.sum(1); dg[dg == 0] = 1
    return W / np.sqrt(dg[:, None] * dg[None])

def propagate(fl, yl, fu, fq, k=LP_K, alpha=LP_ALPHA, eps=0.):
    """label propagation (Zhou et al. 2004) from the labelled rows over the graph of labelled + unlabelled rows;
    class distributions of the unlabelled rows, and of query rows fq by their k nearest graph rows (weights cosine**3,
    plus `eps` of uniform mass: a photo far from every site photo gets a flat distribution, which changes nothing)"""
    V = np.concatenate([fl, fu]); Y0 = np.zeros((len(V), 6)); Y0[np.arange(len(fl)), yl] = 1
    Fs = np.linalg.solve(np.eye(len(V)) - alpha * knn_graph(V, k), Y0)
    Fs = Fs / np.clip(Fs.sum(1, keepdims=True), 1e-12, None)
    out = []
    for q in fq:
        sq = q @ V.T; nb = np.argsort(-sq, 1)[:, :k]; w = np.clip(np.take_along_axis(sq, nb, 1), 0, None) ** 3
        pq = (w[:, :, None] * Fs[nb]).sum(1) + eps / 6; out.append(pq / np.clip(pq.sum(1, keepdims=True), 1e-12, None))
    return Fs[len(fl):], out

def lp_posthoc(direction, draws, names, betas=(0.5, 1, 2), k=LP_K, alpha=LP_ALPHA, u_max=None, eps=0.):
    """for saved methods `names`: label propagation over the site's L + U (features standardised by the site's L + U
    statistics), alone (+lp) and added to the method's logits as beta * log p (+lpblend-b{beta}). The other source's
    photos go through the same kNN (the adapted model would apply it to every photo); for `align` (the base head on
    site statistics) their head logits are recomputed with the site's statistics too, as that model would."""
    F, y, src, split = load(); p = split_direction(direction, y, src, split); tag = direction.replace('>', '2')
    base = torch.load(WORK/f'base-{tag}.pt', weights_only=False)
    suffix = ('' if (k, alpha) == (LP_K, LP_ALPHA) else f'-k{k}-a{alpha}') + ('' if u_max is None else f'-u{u_max}') + (f'-e{eps}' if eps else '')
    for d in draws:
        L, U, E, N = draw(d, y, p); O = p['other']
        if u_max is not None: U = U[:u_max]     # fewer unlabelled site photos (U is in random order)
        mt = stats(F[np.concatenate([L, U])])
        f = {n: unit(((F[i] - mt[0]) / mt[1]).mean(1)) for n, i in dict(L=L, U=U, E=E, N=N, O=O).items()}
        t = time.time()
        pu, (pe, pn, po) = propagate(f['L'], y[L], f['U'], [f['E'], f['N'], f['O']], k, alpha, eps)
        secs = time.time() - t
        lp = dict(U=np.log(pu + 1e-6), E=np.log(pe + 1e-6), N=np.log(pn + 1e-6), O=np.log(po + 1e-6))
        for name in names:
            src_f = WORK/f'{tag}-{d}-{name}.npz'
            if not src_f.exists(): continue
            z = dict(np.load(src_f))
            z['U'] = z['U'][:len(U)]
            if name == 'align':   # the base head on the site's statistics (as computed here), every photo
                z.update({n: forward(base, (F[i] - mt[0]) / mt[1])[0] for n, i in dict(E=E, N=N, O=O).items()})
                z['U'] = forward(base, (F[U] - mt[0]) / mt[1])[0]
            np.savez(WORK/f'{tag}-{d}-{name}+lp{suffix}.npz', secs=float(z['secs']) + secs, **lp)
            for b in betas:
                np.savez(WORK/f'{tag}-{d}-{name}+lpblend{suffix}-b{b}.npz', secs=float(z['secs']) + secs,
                         **{n: z[n] + b * lp[n] for n in 'EUNO'})
        print(f'{direction} draw {d}: label propagation {secs:.1f} s', flush=True)

# ------------------------------------------------------------------ summary
def metrics(lo, y, thr, T=1.0):
    p = softmax(lo / T); conf = p.max(1); right = p.argmax(1) == y; sure = conf >= thr
    return float(right.mean()), float(1 - sure.mean()), float(right[sure].mean()) if sure.any() else float('nan')

def not_sure_rate(lo, thr, T=1.0): return float((softmax(lo / T).max(1) < thr).mean()) if len(lo) else float('nan')

def fit_T(lo, y):
    "NLL-best temperature on (logits, labels)"
    Ts = np.exp(np.linspace(np.log(0.3), np.log(5), 60))
    nll = [-np.log(softmax(lo / T)[np.arange(len(y)), y].clip(1e-12)).mean() for T in Ts]
    return float(Ts[int(np.argmin(nll))])

def auroc(pos, neg):
    "P(score of a known-class photo > score of a never-taught one)"
    if not len(pos) or not len(neg): return float('nan')
    s = np.r_[pos, neg]; r = s.argsort().argsort() + 1
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))

def summary(draws=range(10)):
    "one row per (direction, method): means over `draws` (the reported draws 0-9; 10-14 were for choosing settings)"
    rows = {}
    for f in sorted(WORK.glob('T2G-*-*.npz')) + sorted(WORK.glob('G2T-*-*.npz')):
        dr, d, name = f.stem.split('-', 2)
        if int(d) in draws: rows.setdefault((dr, name), {})[int(d)] = f
    F_, y, src, split = load()
    res = {}
    for (dr, name), byd in rows.items():
        direction = dr.replace('2', '>')
        p = split_direction(direction, y, src, split)
        per = []
        for d, f in sorted(byd.items()):
            z = np.load(f); L, U, E, N = draw(d, y, p)
            O = p['other']
            per.append(dict(d=d, E=z['E'], U=z['U'], N=z['N'], O=z['O'], yE=y[E], yO=y[O], secs=float(z['secs'])))
        res[(direction, name)] = per
    thr_grid = np.round(np.arange(0.30, 0.996, 0.01), 2)
    out = []
    def row(direction, name, per, pick=None):
        acc = [(q['E'].argmax(1) == q['yE']).mean() for q in per]
        oth = [(q['O'].argmax(1) == q['yO']).mean() for q in per]
        r = dict(direction=direction, method=name, draws=len(per), rest_of_site=round(100 * float(np.mean(acc)), 2),
                 rest_sd=round(100 * float(np.std(acc)), 2), other_source=round(100 * float(np.mean(oth)), 2),
                 secs=round(float(np.mean([q['secs'] for q in per])), 1))
        a, ns, sa = np.nanmean([metrics(q['E'], q['yE'], APP_THRESHOLD) for q in per], 0)
        r.update(app_not_sure=round(100 * ns, 1), app_sure_acc=round(100 * sa, 1),
                 app_never_not_sure=round(100 * float(np.mean([not_sure_rate(q['N'], APP_THRESHOLD) for q in per])), 1),
                 auroc_maxprob=round(float(np.mean([auroc(softmax(q['E']).max(1), softmax(q['N']).max(1)) for q in per])), 3))
        return r
    base_rows = {}
    for (direction, name), per in sorted(res.items()):
        r = row(direction, name, per); base_rows[(direction, name)] = r
    # not-sure rules, chosen on the other direction: the lowest threshold whose sure-accuracy is >= 95% there
    def curve(per, T=1.0):
        c = []
        for thr in thr_grid:
            m = np.nanmean([metrics(q['E'], q['yE'], thr, T)[1:] for q in per], 0)
            c.append((thr, m[0], m[1], np.mean([not_sure_rate(q['N'], thr, T) for q in per])))
        return c
    for (direction, name), per in sorted(res.items()):
        r = base_rows[(direction, name)]
        other_dir = 'G>T' if direction == 'T>G' else 'T>G'
        op = res.get((other_dir, name))
        if op:
            oc = curve(op)
            ok = [t for t, ns, sa, nv in oc if sa >= 0.95]
            thr = ok[0] if ok else 0.99
            a, ns, sa = np.nanmean([metrics(q['E'], q['yE'], thr) for q in per], 0)
            r.update(xdir_threshold=float(thr), xdir_not_sure=round(100 * ns, 1), xdir_sure_acc=round(100 * sa, 1),
                     xdir_never_not_sure=round(100 * float(np.mean([not_sure_rate(q['N'], thr) for q in per])), 1))
        # quantile of the site's own unlabelled photos: "not sure" = the least confident q of U (label-free, per site)
        for qn in (0.15, 0.25):
            m = []
            for q in per:
                if not len(q['U']): m.append([np.nan] * 3); continue      # no unlabelled site photos
                thr = float(np.quantile(softmax(q['U']).max(1), qn))
                m.append(list(metrics(q['E'], q['yE'], thr)[1:]) + [not_sure_rate(q['N'], thr)])
            m = np.nanmean(m, 0)
            r[f'uq{int(qn * 100)}'] = [round(100 * float(v), 1) for v in m]
        # temperature fitted on the base source's held-out photos (the source side), then the app's 0.6
        m = []
        for q in per:
            T = fit_T(q['O'], q['yO'])
            m.append([T] + list(metrics(q['E'], q['yE'], APP_THRESHOLD, T)[1:]) + [not_sure_rate(q['N'], APP_THRESHOLD, T)])
        m = np.mean(m, 0)
        r['srcT'] = [round(float(m[0]), 2)] + [round(100 * float(v), 1) for v in m[1:]]
        # entropy rule at the same coverage as the app threshold, for the separation of never-taught items
        r['auroc_entropy'] = round(float(np.mean([auroc(-ent(q['E']), -ent(q['N'])) for q in per])), 3)
        out.append(r)
    return out

def ent(lo):
    p = softmax(lo); return -(p * np.log(p.clip(1e-12))).sum(1)

def parse_draws(s):
    return list(range(*[int(a) + i for i, a in enumerate(s.split('-'))])) if '-' in s else [int(a) for a in s.split(',')]

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--direction', choices=['T>G', 'G>T'])
    ap.add_argument('--draws', default='0-9', help='draw seeds, a-b or a,b,c')
    ap.add_argument('--fits', default='', help='re-fitted methods, comma-separated: adapt[:share=S] refit[:share=S] pseudo[:from=NAME:share=S:pshare=P:cap=C]')
    ap.add_argument('--epochs', type=int, default=40)
    ap.add_argument('--summary', action='store_true')
    ap.add_argument('--k', type=int, default=LP_K, help='label propagation: neighbours')
    ap.add_argument('--alpha', type=float, default=LP_ALPHA, help='label propagation: alpha')
    ap.add_argument('--u-max', type=int, default=None, help='label propagation: at most this many unlabelled site photos')
    ap.add_argument('--eps', type=float, default=0., help='label propagation: uniform mass added to each query photo (a gate for photos far from the site)')
    ap.add_argument('--lp', default='', help='label propagation after the fact on these saved methods, comma-separated')
    ap.add_argument('--only', default='', help='summary: only these methods (exact names), comma-separated')
    args = ap.parse_args()
    if args.summary:
        rows = summary(parse_draws(args.draws))
        only = [s for s in args.only.split(',') if s]
        now = datetime.now(timezone.utc).isoformat(timespec='seconds')
        with open(RESULTS, 'a') as f:
            for r in rows:
                if only and r['method'] not in only: continue
                print(json.dumps(r)); f.write(json.dumps(dict(date=now, data=NPZ.name, **r)) + '\n')
        return
    ds = parse_draws(args.draws)
    if args.lp: return lp_posthoc(args.direction, list(ds), args.lp.split(','), k=args.k, alpha=args.alpha, u_max=args.u_max, eps=args.eps)
    run = Run(args.direction, list(ds), [s for s in args.fits.split(',') if s], args.epochs)
    for d in ds:
        t = time.time(); run.one(d); print(f'{args.direction} draw {d}: {time.time() - t:.0f} s', flush=True)

if __name__ == '__main__': main()
