"""Issue 23 research: what makes the default recipe (frozen Lite0@384 + MobileNetV2@320 features, square roots,
standardisation, the MLP head, photo + mirror averaged) hold up on a photo source it never saw, how to calibrate
"not sure", and how to adapt to a site from 5 labelled photos a class. Leave-one-source-out (LOSO) on the two
sources we have: TrashNet (studio photos) and garbage12 (web photos, six classes mapped; battery, biological,
clothes, shoes never taught). Everything runs on cached features: `sources_embed.py` fills the package's feature
cache (/work/cache/features) and saves the stacked arrays and the extra views; this script trains heads on them.

    .venv/bin/python bench/explore/sources_study.py [--quick] [--only loso,both,adapt,...]

Prints a table per experiment and appends JSON rows to bench/results/sources-study.jsonl.
"""
from __future__ import annotations
import argparse, hashlib, json, sys, time
from datetime import datetime, timezone
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from recycle_classifier.features.classifier import standardise, power_features
from recycle_classifier.train.settings import FEATURE_DEFAULTS as D
from recycle_classifier.train.head import make_head, training_forward, fit_head, head_probs

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent/'results'/'sources-study.jsonl'
SIX = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash']
G_MAP = {'brown-glass': 'glass', 'green-glass': 'glass', 'white-glass': 'glass', **{c: c for c in SIX}}
NEVER = ['battery', 'biological', 'clothes', 'shoes']
THRESH = 0.6   # the app's "not sure" threshold
DATA_NAME = ''  # the .npz the rows came from

# ---------------------------------------------------------------- data
class Data:
    "The cached features `F` (n, 2 [orig, flip], dim), with source, six-class label (-1 never taught), split; extra views"
    def __init__(self, npz, views_dir):
        z = np.load(npz)
        self.F, self.paths, self.src = z['feats'], [str(p) for p in z['paths']], z['source']
        self.glab, self.split = z['label'], z['split']
        self.y = np.array([SIX.index(G_MAP.get(l, l)) if G_MAP.get(l, l) in SIX else -1 for l in self.glab])
        self.tn, self.g = self.src == 'trashnet', self.src == 'garbage12'
        self.views, row = {}, {p: i for i, p in enumerate(self.paths)}
        for f in sorted(Path(views_dir).glob('*.npy')):
            ps = Path(str(f)[:-4] + '.paths.txt').read_text().split('\n')
            a = np.full((len(self.paths), self.F.shape[-1]), np.nan, np.float32)
            a[[row[p] for p in ps]] = np.load(f)
            self.views[f.stem] = a
        self.fold = np.array([int(hashlib.sha256(Path(p).read_bytes()).hexdigest()[:8], 16) % 5 for p in self.paths])

    def view(self, name, idx):
        "raw features (len(idx), dim) of one view (orig, flip or an extra view; NaN rows where it was not computed)"
        if name == 'orig': return self.F[idx, 0]
        if name == 'flip': return self.F[idx, 1]
        return self.views[name][idx]

# ---------------------------------------------------------------- recipe pieces
BASE = dict(power=0.5, l2=False, std='pooled', aug=(), tta=(), balance=False, hidden=D['hidden'], in_drop=D['in_drop'],
            drop=D['drop'], ls=D['label_smoothing'], epochs=D['epochs'], wd=D['wd'], lr=D['lr'], T=1.0)

def transform(x, cfg):
    "power, then optional L2 normalisation (rows)"
    x = power_features(x, cfg['power'])
    if cfg['l2']: x = x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)
    return x.astype(np.float32)

def stats_of(d, idx, cfg):
    "mean, std of the orig and flip rows of photos `idx` (as the package's `standardise`)"
    return standardise(np.stack([transform(d.view('orig', idx), cfg), transform(d.view('flip', idx), cfg)], 1))

def fit(x, t, n_classes, w=None, cfg=BASE, seed=42):
    "The package's head training (`fit_head`) on standardised rows `x`, with optional row weights (a weighted mean loss)"
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    x, t = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.as_tensor(t, dtype=torch.long)
    w = None if w is None else torch.as_tensor(w, dtype=torch.float32)
    head = make_head(x.shape[1], n_classes, cfg['hidden'], cfg['in_drop'], cfg['drop'])
    opt = torch.optim.AdamW(head.parameters(), lr=cfg['lr'], weight_decay=cfg['wd'])
    bs = D['bs']; steps = (len(x) + bs - 1) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg['lr'], total_steps=max(1, cfg['epochs'] * steps))
    head.train(); wmean = None if w is None else w.mean()
    for _ in range(cfg['epochs']):
        perm = torch.randperm(len(x))
        for i in range(steps):
            idx = perm[i*bs:(i+1)*bs]
            out = training_forward(head, x[idx], rng)
            if w is None: loss = F.cross_entropy(out, t[idx], label_smoothing=cfg['ls'])
            else: loss = (F.cross_entropy(out, t[idx], label_smoothing=cfg['ls'], reduction='none') * w[idx]).sum() / (len(idx) * wmean)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return head.eval()

class Model:
    "A trained head with its standardisation: one (mean, std) per source in `stats`, the pooled one under None"
    def __init__(self, head, stats, cfg): self.head, self.stats, self.cfg = head, stats, cfg

    @torch.no_grad()
    def logits(self, d, idx, stats_key=None, views=None):
        "view-averaged logits of photos `idx`, standardised by `self.stats[stats_key]` (or a (mean, std) pair)"
        m, s = stats_key if isinstance(stats_key, tuple) else self.stats.get(stats_key, self.stats[None])
        views = views or ('orig', 'flip') + tuple(self.cfg['tta'])
        z = np.stack([(transform(d.view(v, idx), self.cfg) - m) / s for v in views])
        return self.head(torch.from_numpy(z.astype(np.float32))).mean(0).numpy()

def train_model(d, groups, cfg, seed=42, extra=None):
    """Train on `groups`: a list of (photo indices, stats key) (stats key: a source name whose own statistics
    standardise those photos under cfg std='source', else None = pooled). `extra`: (idx, stats_key, share) site photos
    whose rows get a fixed share of the loss."""
    stats = {}
    all_idx = np.concatenate([g for g, _ in groups])
    stats[None] = stats_of(d, all_idx, cfg)
    if cfg['std'] == 'source':
        for g, k in groups: stats[k] = stats_of(d, g, cfg)
    xs, ts, ws = [], [], []
    def rows(idx, key, weight):
        m, s = stats.get(key, stats[None]) if cfg['std'] == 'source' else stats[None]
        for v in ('orig', 'flip') + tuple(cfg['aug']):
            x = d.view(v, idx); ok = ~np.isnan(x).any(1)
            if not ok.any(): continue
            xs.append((transform(x[ok], cfg) - m) / s); ts.append(d.y[idx][ok]); ws.append(np.full(ok.sum(), weight, np.float32))
    for g, k in groups: rows(g, k, 1.0)
    if extra is not None:
        eidx, ekey, share = extra[:3]
        if cfg['std'] == 'source': stats[ekey] = extra[3] if extra[3] is not None else stats[groups[0][1]]
        n0 = sum(len(t) for t in ts); rows(eidx, ekey, 1.0)
    x, t, w = np.concatenate(xs), np.concatenate(ts), np.concatenate(ws)
    if extra is not None and extra[2]:
        share = extra[2]; site = np.zeros(len(x), bool); site[n0:] = True
        w[site] = share / (1 - share) * (~site).sum() / site.sum()
    if cfg['balance']:
        cnt = np.bincount(t, minlength=len(SIX)).astype(np.float32)
        w = w * (len(t) / (len(SIX) * cnt))[t]
    weighted = cfg['balance'] or (extra is not None and extra[2])
    head = fit(x, t, len(SIX), w if weighted else None, cfg, seed)
    return Model(head, stats, cfg)

# ---------------------------------------------------------------- metrics
def softmax(z, T=1.0): z = z / T; z = z - z.max(1, keepdims=True); e = np.exp(z); return e / e.sum(1, keepdims=True)

def auroc(score_in, score_out):
    "P(an in-distribution photo scores higher than a never-taught one)"
    from scipy.stats import rankdata
    r = rankdata(np.concatenate([score_in, score_out]))
    n1, n2 = len(score_in), len(score_out)
    return float((r[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))

def scores(lg, y, lg_ood=None, T=1.0, thresh=THRESH):
    "accuracy, per class, not-sure rate, accuracy among sure, never-taught not-sure rate and AUROCs"
    p = softmax(lg, T); pred = p.argmax(1); top = p.max(1); sure = top >= thresh
    out = dict(acc=float((pred == y).mean()), n=int(len(y)), unsure=float(1 - sure.mean()),
               sure_acc=float((pred == y)[sure].mean()) if sure.any() else None,
               per_class={c: round(float((pred == y)[y == i].mean()), 4) for i, c in enumerate(SIX) if (y == i).any()})
    if lg_ood is not None:
        po = softmax(lg_ood, T)
        out.update(ood_unsure=float((po.max(1) < thresh).mean()), n_ood=int(len(lg_ood)),
                   auroc_msp=auroc(top, po.max(1)), auroc_maxlogit=auroc(lg.max(1), lg_ood.max(1)),
                   auroc_energy=auroc(np.logaddexp.reduce(lg / T, 1), np.logaddexp.reduce(lg_ood / T, 1)))
    return out

def fit_T(lg, y, grid=np.exp(np.linspace(np.log(0.2), np.log(5), 81))):
    "the temperature minimising the NLL of (out-of-fold) logits"
    nll = [-np.log(softmax(lg, T)[np.arange(len(y)), y].clip(1e-12)).mean() for T in grid]
    return float(grid[int(np.argmin(nll))])

def log(row):
    row = dict(when=datetime.now(timezone.utc).isoformat(timespec='seconds'), data=DATA_NAME, **row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, 'a') as f: f.write(json.dumps(row, default=lambda o: o.tolist() if hasattr(o, 'tolist') else str(o)) + '\n')

def pct(v): return '' if v is None else f'{100*v:.1f}'

# ---------------------------------------------------------------- experiments
def loso(d, cfg, seed=42):
    """Both directions: TrashNet (all 2,096) -> garbage12 six classes (+ never-taught), and garbage12 six classes ->
    TrashNet (never-taught: garbage12's own). Under std='source' the new source is standardised by its own photos'
    statistics (all of them, never-taught included: a site's unlabelled stream), the training source by its own."""
    G_known, G_never = np.where(d.g & (d.y >= 0))[0], np.where(d.g & (d.y < 0))[0]
    TN = np.where(d.tn)[0]; out = {}
    if cfg['std'] == 'source':
        tgt_G, tgt_T = stats_of(d, np.where(d.g)[0], cfg), stats_of(d, TN, cfg)
    t0 = time.time()
    m = train_model(d, [(TN, 'trashnet')], cfg, seed)
    kG = tgt_G if cfg['std'] == 'source' else None
    out['T>G'] = dict(lg=m.logits(d, G_known, kG), y=d.y[G_known], lg_ood=m.logits(d, G_never, kG) if len(G_never) else None, s=time.time() - t0)
    t0 = time.time()
    m = train_model(d, [(G_known, 'garbage12')], cfg, seed)
    kT = tgt_T if cfg['std'] == 'source' else None
    out['G>T'] = dict(lg=m.logits(d, TN, kT), y=d.y[TN], lg_ood=m.logits(d, G_never, 'garbage12') if len(G_never) else None, s=time.time() - t0)
    LOGITS[json.dumps({k: v for k, v in cfg.items() if BASE.get(k) != v}, sort_keys=True) + f'|{seed}'] = out
    return out

LOGITS = {}   # every LOSO run's logits, saved for the calibration analysis

def tn_valid(d, cfg, seed=42):
    "the product check: trained on TrashNet train, accuracy on TrashNet valid"
    tr, va = np.where(d.tn & (d.split == 'train'))[0], np.where(d.tn & (d.split == 'valid'))[0]
    m = train_model(d, [(tr, 'trashnet')], cfg, seed)
    return float((m.logits(d, va, 'trashnet').argmax(1) == d.y[va]).mean())

def run_loso(d, variants, seeds, check_valid=False, title='LOSO'):
    print(f'\n## {title}\n')
    print('| variant | T>G acc | G>T acc | mean | T>G not sure / sure acc | G>T not sure / sure acc | never-taught not sure (T>G, G>T) | AUROC msp/maxlogit/energy (T>G) | TN valid | s/fit |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    res = {}
    for name, over in variants:
        cfg = {**BASE, **over}; runs = [loso(d, cfg, s) for s in seeds]
        sc = {k: [scores(r[k]['lg'], r[k]['y'], r[k]['lg_ood'], cfg['T']) for r in runs] for k in ('T>G', 'G>T')}
        mean = lambda k, f: float(np.mean([s.get(f, np.nan) for s in sc[k]]))
        valid = tn_valid(d, cfg) if check_valid else None
        secs = float(np.mean([r[k]['s'] for r in runs for k in r]))
        print(f"| {name} | {pct(mean('T>G','acc'))} | {pct(mean('G>T','acc'))} | {pct((mean('T>G','acc')+mean('G>T','acc'))/2)} | "
              f"{pct(mean('T>G','unsure'))} / {pct(mean('T>G','sure_acc'))} | {pct(mean('G>T','unsure'))} / {pct(mean('G>T','sure_acc'))} | "
              f"{pct(mean('T>G','ood_unsure'))}, {pct(mean('G>T','ood_unsure'))} | "
              f"{mean('T>G','auroc_msp'):.3f}/{mean('T>G','auroc_maxlogit'):.3f}/{mean('T>G','auroc_energy'):.3f} | {pct(valid)} | {secs:.0f} |", flush=True)
        log(dict(exp=title, variant=name, cfg={k: v for k, v in cfg.items()}, seeds=list(seeds), tn_valid=valid,
                 **{k: {f: (mean(k, f) if f != 'per_class' else sc[k][0]['per_class']) for f in sc[k][0] if f not in ('n', 'n_ood')} for k in sc}))
        res[name] = (cfg, runs, sc)
    return res

def per_class_table(res, names):
    print('\n| variant | direction | ' + ' | '.join(SIX) + ' |'); print('|---|---|' + '---|' * len(SIX))
    for n in names:
        for k in ('T>G', 'G>T'):
            pc = res[n][2][k][0]['per_class']
            print(f'| {n} | {k} | ' + ' | '.join(pct(pc.get(c)) for c in SIX) + ' |')

def calibration(d, cfg, seed=42, folds=0):
    """Temperature for the "not sure" threshold: fitted on in-source out-of-fold logits (5-fold CV in the training
    source), and across directions (fitted on one LOSO direction's new source, applied to the other)."""
    print('\n## Calibration: temperature and the 0.6 threshold\n')
    G_known, TN = np.where(d.g & (d.y >= 0))[0], np.where(d.tn)[0]
    key_ = json.dumps({k: v for k, v in cfg.items() if BASE.get(k) != v}, sort_keys=True) + f'|{seed}'
    r = LOGITS[key_] if key_ in LOGITS else loso(d, cfg, seed); Ts = {}
    for k, idx, key in (('T>G', TN, 'trashnet'), ('G>T', G_known, 'garbage12')):
        Ts[k] = dict(insource=float('nan'), loso=fit_T(r[k]['lg'], r[k]['y']))
        if not folds: continue
        lg = np.zeros((len(idx), len(SIX)), np.float32)
        for f in range(folds):
            te = d.fold[idx] % folds == f
            m = train_model(d, [(idx[~te], key)], cfg, seed)
            # held-out fold standardised as a new site would be: by its own photos under std='source'
            st = stats_of(d, idx[te], cfg) if cfg['std'] == 'source' else None
            lg[te] = m.logits(d, idx[te], st if st is not None else key)
        Ts[k] = dict(insource=fit_T(lg, d.y[idx]), loso=fit_T(r[k]['lg'], r[k]['y']))
    other = {'T>G': 'G>T', 'G>T': 'T>G'}
    print('| direction | T (in-source CV) | T fitted on this LOSO target (not usable) | T | not sure | acc among sure | never-taught not sure | AUROC energy |')
    print('|---|---|---|---|---|---|---|---|')
    rows = []
    for k in ('T>G', 'G>T'):
        cands = [('1 (none)', 1.0), ('from the other direction', Ts[other[k]]['loso'])]
        if folds: cands += [('in-source CV', Ts[k]['insource']), ('mean in-source CV, both', float(np.mean([Ts[j]['insource'] for j in Ts])))]
        for nm, T in cands:
            s = scores(r[k]['lg'], r[k]['y'], r[k]['lg_ood'], T)
            print(f"| {k} | {Ts[k]['insource']:.2f} | {Ts[k]['loso']:.2f} | {nm}: {T:.2f} | {pct(s['unsure'])} | {pct(s['sure_acc'])} | {pct(s.get('ood_unsure'))} | {s.get('auroc_energy', float('nan')):.3f} |")
            rows.append(dict(direction=k, T_name=nm, T=T, **{f: s.get(f) for f in ('acc', 'unsure', 'sure_acc', 'ood_unsure', 'auroc_energy')}))
    # what threshold would the targets need (for reading, not choosing)
    for k in ('T>G', 'G>T'):
        p = softmax(r[k]['lg']); top = p.max(1); ok = p.argmax(1) == r[k]['y']
        po = softmax(r[k]['lg_ood']).max(1) if r[k]['lg_ood'] is not None else np.array([np.nan])
        for th in (0.5, 0.6, 0.7, 0.8, 0.9):
            print(f'  {k} T=1 threshold {th}: not sure {pct((top < th).mean())}%, sure acc {pct(ok[top >= th].mean())}%, never-taught not sure {pct((po < th).mean())}%')
    log(dict(exp='calibration', cfg=cfg, Ts=Ts, rows=rows))
    return Ts

def both(d, cfg, seeds=(42,), folds=range(5)):
    "Both sources together: 5-fold by photo hash over each source's known photos; held-out accuracy per source"
    known = d.y >= 0; G_never = np.where(d.g & ~known)[0]; acc = {'trashnet': [], 'garbage12': []}; ood = []
    tn_va = []
    for s in seeds:
        for f in folds:
            groups = [(np.where(d.src == src)[0][(d.fold[d.src == src] != f) & known[d.src == src]], src) for src in ('trashnet', 'garbage12')]
            m = train_model(d, groups, cfg, s)
            for src in acc:
                te = np.where((d.src == src) & known & (d.fold == f))[0]
                acc[src].append((m.logits(d, te, src).argmax(1) == d.y[te]).mean())
            ood.append((softmax(m.logits(d, G_never, 'garbage12'), cfg['T']).max(1) < THRESH).mean())
        # TrashNet valid when trained on TrashNet train + all of garbage12
        groups = [(np.where(d.tn & (d.split == 'train'))[0], 'trashnet'), (np.where(d.g & known)[0], 'garbage12')]
        m = train_model(d, groups, cfg, s); va = np.where(d.tn & (d.split == 'valid'))[0]
        tn_va.append((m.logits(d, va, 'trashnet').argmax(1) == d.y[va]).mean())
    return {k: float(np.mean(v)) for k, v in acc.items()}, float(np.mean(ood)), float(np.mean(tn_va))

def run_both(d, variants, seeds, folds):
    print('\n## Both sources (5-fold by photo hash; per-source held-out accuracy)\n')
    print('| variant | TrashNet held out | garbage12 held out | TrashNet valid (train: TN train + all garbage12) | garbage12 never-taught not sure |')
    print('|---|---|---|---|---|')
    for name, over in variants:
        cfg = {**BASE, **over}; a, o, v = both(d, cfg, seeds, folds)
        print(f"| {name} | {pct(a['trashnet'])} | {pct(a['garbage12'])} | {pct(v)} | {pct(o)} |", flush=True)
        log(dict(exp='both', variant=name, cfg=cfg, folds=list(folds), heldout=a, tn_valid=v, ood_unsure=o))

BASES = {}
DIRECTIONS = ()   # adapt: only these directions (all when empty)

def adapt_runs(d, methods, draws, shots=5, n_unlab=200):
    """Adapt to a site from `shots` labelled photos a class. T>G: base trained on TrashNet train; site = garbage12;
    other source = TrashNet valid. G>T: base trained on garbage12 (folds 1-4); site = TrashNet; other = garbage12 fold 0.
    Each method re-fits the head on the source + site photos from cached features (timed)."""
    print(f'\n## Adapt: {shots} labelled photos a class of the new source ({len(draws)} draws, mean ± sd)\n')
    print('| method | direction | rest of site acc | other source acc (before → after) | site not sure / sure acc | s per adapt |')
    print('|---|---|---|---|---|---|')
    known = d.y >= 0
    setups = {'T>G': (np.where(d.tn & (d.split == 'train'))[0], 'trashnet', np.where(d.tn & (d.split == 'valid'))[0], np.where(d.g & known)[0], np.where(d.g)[0]),
              'G>T': (np.where(d.g & known & (d.fold != 0))[0], 'garbage12', np.where(d.g & known & (d.fold == 0))[0], np.where(d.tn)[0], np.where(d.tn)[0])}
    for k, (src_idx, skey, other, site_pool, site_all) in setups.items():
        if DIRECTIONS and k not in DIRECTIONS: continue
        for mname, over, share, stats_from in methods:
            cfg = {**BASE, **over}
            bkey = (k, json.dumps({q: v for q, v in cfg.items() if q != 'std'}, sort_keys=True))
            if bkey not in BASES: BASES[bkey] = train_model(d, [(src_idx, skey)], {**cfg, 'std': 'source'})
            base = Model(BASES[bkey].head, BASES[bkey].stats, cfg)   # one source: its own statistics are the pooled ones
            before = float((base.logits(d, other, skey).argmax(1) == d.y[other]).mean())
            accs, others, uns, sas, secs = [], [], [], [], []
            for r in draws:
                rng = np.random.default_rng(r)
                lab = np.concatenate([rng.choice(site_pool[d.y[site_pool] == c], shots, replace=False) for c in range(len(SIX))])
                rest = np.setdiff1d(site_pool, lab)
                t0 = time.time()
                if stats_from == 'none': st = None
                elif stats_from == 'labelled': st = stats_of(d, lab, cfg)
                else:  # the labelled photos + n_unlab unlabelled photos of the site (never-taught included for garbage12)
                    unl = rng.choice(np.setdiff1d(site_all, lab), n_unlab, replace=False)
                    st = stats_of(d, np.concatenate([lab, unl]), cfg)
                if mname.startswith('no re-fit'):
                    m = base
                else:
                    extra = (lab, 'site', share, st) if cfg['std'] == 'source' else (lab, None, share)
                    m = train_model(d, [(src_idx, skey)], cfg, 42, extra=extra)
                secs.append(time.time() - t0)
                lg = m.logits(d, rest, st if (st is not None and cfg['std'] == 'source') else ('site' if 'site' in m.stats else skey))
                s = scores(lg, d.y[rest]); accs.append(s['acc']); uns.append(s['unsure']); sas.append(s['sure_acc'])
                others.append(float((m.logits(d, other, skey).argmax(1) == d.y[other]).mean()))
            print(f'| {mname} | {k} | {pct(np.mean(accs))} ± {100*np.std(accs):.1f} | {pct(before)} → {pct(np.mean(others))} ± {100*np.std(others):.1f} | '
                  f'{pct(np.mean(uns))} / {pct(np.mean(sas))} | {np.mean(secs):.1f} |', flush=True)
            log(dict(exp='adapt', method=mname, direction=k, cfg=cfg, share=share, stats_from=stats_from, draws=list(draws),
                     site_acc=float(np.mean(accs)), site_acc_sd=float(np.std(accs)), other_before=before, other_after=float(np.mean(others)),
                     other_sd=float(np.std(others)), site_unsure=float(np.mean(uns)), site_sure_acc=float(np.mean(sas)), seconds=float(np.mean(secs))))

# ---------------------------------------------------------------- main
if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cache-dir', default='/work/cache/features', help='the package feature cache (filled by sources_embed.py)')
    ap.add_argument('--npz', default='/work/cache/sources-default.npz')
    ap.add_argument('--views-dir', default='/work/cache/views')
    ap.add_argument('--quick', action='store_true', help='one seed, 3 adapt draws, 2 folds')
    ap.add_argument('--only', default='loso,per_class,calib,both,adapt', help='comma-separated experiments')
    ap.add_argument('--variants', default=None, help='JSON list of [name, overrides] to run in the LOSO table instead of the built-in list')
    ap.add_argument('--calib-folds', type=int, default=0, help='in-source CV folds for the temperature (0: skip; each fold is a head fit)')
    ap.add_argument('--both-folds', type=int, default=5, help='how many of the 5 hash folds to hold out in turn for the both-sources table')
    ap.add_argument('--draws', type=int, default=0, help='adapt: random draws of the site photos (default 10, 3 with --quick)')
    ap.add_argument('--directions', default=None, help='adapt: T>G, G>T or both comma-separated (default both)')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seeds', default='42', help='comma-separated head seeds for the LOSO table')
    ap.add_argument('--best', default=None, help='JSON overrides of the recipe used for calibration, both and adapt')
    ap.add_argument('--methods', default=None, help='adapt methods whose names contain one of these |-separated strings')
    ap.add_argument('--epochs', type=int, default=None, help='head epochs for every fit (default: the package default, 40)')
    a = ap.parse_args()
    if a.epochs: BASE['epochs'] = a.epochs
    if a.directions: DIRECTIONS = tuple(a.directions.split(','))
    torch.set_num_threads(a.threads)   # 1 on the shared 2-core machine: 2 threads spun under contention
    if not Path(a.npz).exists():
        sys.exit(f'{a.npz} missing: run bench/explore/sources_embed.py --cache-dir {a.cache_dir} first')
    d = Data(a.npz, a.views_dir); DATA_NAME = Path(a.npz).name
    print(f'{len(d.paths)} photos; TrashNet {d.tn.sum()}, garbage12 {d.g.sum()} ({(d.g & (d.y >= 0)).sum()} six-class, '
          f'{(d.g & (d.y < 0)).sum()} never taught); extra views: {", ".join(f"{k} ({(~np.isnan(v[:, 0])).sum()})" for k, v in d.views.items())}')
    seeds = tuple(int(x) for x in a.seeds.split(','))
    only = a.only.split(',')
    if a.variants: variants = [tuple(v) for v in json.loads(a.variants)]
    else:
        variants = [('default (pooled std, power 0.5)', {}),
                    ('power 1', dict(power=1.0)),
                    ('L2-normalised', dict(l2=True)),
                    ('per-source std (new source: its own photos)', dict(std='source')),
                    ('per-source std + L2', dict(std='source', l2=True)),
                    ('class-balanced loss', dict(balance=True)),
                    ('label smoothing 0', dict(ls=0.0)),
                    ('label smoothing 0.3', dict(ls=0.3)),
                    ('logistic regression (hidden 0)', dict(hidden=0)),
                    ('in_drop 0.8', dict(in_drop=0.8))]
        variants += [(f'aug {v}', dict(aug=(v,))) for v in ('grey', 'lowres', 'bg', 'jitter', 'crop80') if v in d.views]
        variants += [(f'tta {v}', dict(tta=(v,))) for v in ('grey', 'crop80') if v in d.views]
    if 'loso' in only:
        res = run_loso(d, variants, seeds, check_valid=not a.quick)
        if 'per_class' in only: per_class_table(res, [variants[0][0]] + [n for n, _ in variants if n.startswith('per-source')][:1])
    best = {**BASE, **json.loads(a.best)} if a.best else {**BASE}
    print('\nrecipe for calibration / both / adapt:', json.dumps({k: v for k, v in best.items() if BASE.get(k) != v}))
    if 'calib' in only: calibration(d, best, folds=a.calib_folds)
    if LOGITS: np.savez('/work/cache/sources-study-logits.npz', **{f'{k}||{dr}||{f}': v[dr][f] for k, v in LOGITS.items() for dr in v for f in ('lg', 'y', 'lg_ood') if v[dr][f] is not None})
    if 'both' in only:
        run_both(d, [('default', {}), ('recipe', json.loads(a.best or '{}'))], seeds[:1], range(a.both_folds))
    if 'adapt' in only:
        draws = range(a.draws or (3 if a.quick else 10))
        src = best['std'] == 'source'
        methods = [('no re-fit (base model)', {**best, 'std': 'pooled'}, 0, 'none'),
                   ('re-train plainly (site rows weight 1)', {**best, 'std': 'pooled'}, 0, 'none'),
                   ('re-train, site share 0.3', {**best, 'std': 'pooled'}, 0.3, 'none'),
                   ('re-train, site share 0.15', {**best, 'std': 'pooled'}, 0.15, 'none'),
                   ('re-train, site share 0.5', {**best, 'std': 'pooled'}, 0.5, 'none'),
                   ('no re-fit, site std (labelled + 200 unlabelled)', {**best, 'std': 'source'}, 0, 'unlabelled'),
                   ('re-train, site share 0.3, site std (labelled only)', {**best, 'std': 'source'}, 0.3, 'labelled'),
                   ('re-train, site share 0.3, site std (labelled + 200 unlabelled)', {**best, 'std': 'source'}, 0.3, 'unlabelled'),
                   ('re-train, site share 0.5, site std (labelled + 200 unlabelled)', {**best, 'std': 'source'}, 0.5, 'unlabelled')]
        if a.methods: methods = [m for m in methods if any((x[1:] == m[0]) if x.startswith('=') else (x in m[0]) for x in a.methods.split('|'))]
        adapt_runs(d, methods, draws)
