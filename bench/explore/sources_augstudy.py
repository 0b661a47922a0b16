"""Issue 23, session 2026-12-03: do training-time augmented views help leave-one-source-out (LOSO)?

Heads are the package's own `recycle_classifier.train.head.fit_head` with the default recipe (`FEATURE_DEFAULTS`: 40 epochs,
class-balanced, power 0.5, standardisation, MLP 512, dropout 0.5/0.5, label smoothing 0.1), trained on the SAME
subset of photos (`sources_augembed.subset`: TrashNet train up to 150 a class = 841 photos; garbage12 six classes
150 a mapped class = 900 photos) with and without the augmented views that `sources_augembed.py` cached under
/work/cache/augviews. Every view of a photo is a row (as `fit_head` treats orig and flip); augmented rows may
weigh less (`w`). Standardisation (mean, std) comes from the orig + flip rows unless the variant says otherwise.
Evaluation on ALL cached photos of the other source (/work/cache/sources-default.npz): T>G = garbage12's 2,734
six-class photos (+400 never-taught), G>T = TrashNet's 2,096 photos; logits of orig + flip averaged (as
`head_probs`); plus TrashNet valid (338 photos) for the T>G (TrashNet-trained) heads.

    OMP_NUM_THREADS=1 .venv/bin/python bench/explore/sources_augstudy.py [--seeds 42,43] [--only base,mix1,...]

Prints a markdown table; appends rows to bench/results/sources-study.jsonl (session='augviews-2026-12-03').
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import argparse, json, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from recycle_classifier.features.classifier import standardise, power_features
from recycle_classifier.train.head import fit_head
from recycle_classifier.train.settings import FEATURE_DEFAULTS as D
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sources_augembed import subset, OUT as AUGDIR, NPZ

RESULTS = Path(__file__).resolve().parent.parent/'results'/'sources-study.jsonl'
SIX = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash']
G_MAP = {'brown-glass': 'glass', 'green-glass': 'glass', 'white-glass': 'glass', **{c: c for c in SIX}}
THRESH = 0.6
HP = dict(hidden=D['hidden'], in_drop=D['in_drop'], drop=D['drop'], epochs=D['epochs'], bs=D['bs'], lr=D['lr'], wd=D['wd'],
          label_smoothing=D['label_smoothing'], balance=D['balance'])

class Data:
    def __init__(self):
        z = np.load(NPZ)
        self.paths = [str(p) for p in z['paths']]; self.row = {p: i for i, p in enumerate(self.paths)}
        self.F = power_features(z['feats'], D['power']).astype(np.float32)      # (n, 2 [orig, flip], dim)
        self.src, self.lab, self.split = z['source'], z['label'], z['split']
        self.y = np.array([SIX.index(G_MAP[l]) if l in G_MAP else -1 for l in self.lab])
        self.sub = {k: np.array([self.row[p] for p in v]) for k, v in subset(z).items()}
        self.aug = {}
        for f in sorted(AUGDIR.glob('*.npy')):
            ps = (AUGDIR/f'{f.stem}.paths.txt').read_text().split('\n')
            a = np.full((len(self.paths), self.F.shape[-1]), np.nan, np.float32)
            a[[self.row[p] for p in ps]] = power_features(np.load(f), D['power'])
            if f.stem.startswith('ccrop') and 'ccrop' in self.aug:   # ccrop (TrashNet) + ccrop_g12 (garbage12): one view
                a = np.where(np.isnan(a), self.aug['ccrop'], a)
            self.aug['ccrop' if f.stem.startswith('ccrop') else f.stem] = a

    def rows(self, idx, views):
        "(features (m, 1, dim), photo index (m,), is-augmented (m,)) of the views of photos idx that exist"
        xs, ix, au = [self.F[idx, 0], self.F[idx, 1]], [idx, idx], [np.zeros(len(idx), bool)] * 2
        for v in views:
            a = self.aug[v][idx]; ok = ~np.isnan(a).any(1)
            xs.append(a[ok]); ix.append(idx[ok]); au.append(np.ones(ok.sum(), bool))
        return np.concatenate(xs)[:, None], np.concatenate(ix), np.concatenate(au)

def softmax(z): z = z - z.max(1, keepdims=True); e = np.exp(z); return e / e.sum(1, keepdims=True)

@torch.no_grad()
def logits(head, mean, std, feats):
    "view-averaged logits of feats (n, views, dim), as the package's `head_probs` averages them"
    return head.eval()(torch.from_numpy(((feats - mean) / std).astype(np.float32))).mean(1).numpy()

def scores(lg, y, lg_ood=None):
    p = softmax(lg); pred = p.argmax(1); sure = p.max(1) >= THRESH
    out = dict(acc=float((pred == y).mean()), n=int(len(y)), unsure=float(1 - sure.mean()),
               sure_acc=float((pred == y)[sure].mean()) if sure.any() else None,
               per_class={c: round(float((pred == y)[y == i].mean()), 4) for i, c in enumerate(SIX) if (y == i).any()})
    if lg_ood is not None: out['ood_unsure'] = float((softmax(lg_ood).max(1) < THRESH).mean())
    return out

def test_feats(d, idx, tta):
    "orig + flip (+ the centre crop when `tta`; None where the centre crop was not embedded for these photos)"
    f = d.F[idx]
    if tta:
        c = d.aug['ccrop'][idx]
        if np.isnan(c).any(): return None
        f = np.concatenate([f, c[:, None]], 1)
    return f

HEADS = Path('/tmp/augheads')   # trained heads, so a later pass (TTA once `ccrop` is cached) evaluates without re-fitting

def train(d, direction, variant, name, seed):
    "the head for (variant, direction, seed), fitted once and kept in HEADS"
    views, w_aug, stats, full = (variant.get(k) for k in ('views', 'w', 'stats', 'full'))
    views, w_aug = views or [], 1.0 if w_aug is None else w_aug
    if direction == 'T>G': tr = np.where((d.src == 'trashnet') & (d.split == 'train'))[0] if full else d.sub['trashnet']
    else: tr = np.where((d.src == 'garbage12') & (d.y >= 0))[0] if full else d.sub['garbage12']
    f = HEADS/f"{name.replace(' ', '_').replace('+', 'p')}-{direction.replace('>', '')}-{seed}.pt"
    if f.exists(): return torch.load(f, weights_only=False)
    x, ix, au = d.rows(tr, views)
    mean, std = standardise(x) if stats == 'all' else standardise(d.F[tr])
    w = np.where(au, w_aug, 1.0).astype(np.float32) if w_aug != 1.0 else None
    t0 = time.time()
    head, mean, std = fit_head(x, d.y[ix], len(SIX), seed=seed, weights=w, mean_std=(mean, std), **HP)
    info = dict(fit_s=round(time.time() - t0, 1), n_train_photos=int(len(tr)), n_rows=int(len(x)), n_aug_rows=int(au.sum()))
    HEADS.mkdir(exist_ok=True); torch.save((head, mean, std, info), f)
    return head, mean, std, info

def evaluate(d, direction, head, mean, std, align, tta):
    "scores on the other source (test-time standardisation by its own photos when `align`; + centre-crop view when `tta`)"
    if direction == 'T>G':
        te, ood, tgt = np.where((d.src == 'garbage12') & (d.y >= 0))[0], np.where((d.src == 'garbage12') & (d.y < 0))[0], np.where(d.src == 'garbage12')[0]
    else:
        te, ood, tgt = np.where(d.src == 'trashnet')[0], np.where((d.src == 'garbage12') & (d.y < 0))[0], np.where(d.src == 'trashnet')[0]
    m_te, s_te = standardise(d.F[tgt]) if align else (mean, std)
    m_o, s_o = (m_te, s_te) if direction == 'T>G' else (mean, std)      # G>T: never-taught photos come from the training source
    ft, fo = test_feats(d, te, tta), test_feats(d, ood, tta)
    out = {} if ft is None else scores(logits(head, m_te, s_te, ft), d.y[te], None if fo is None else logits(head, m_o, s_o, fo))
    if direction == 'T>G':
        va = np.where((d.src == 'trashnet') & (d.split == 'valid'))[0]
        fv = test_feats(d, va, tta)
        if fv is not None: out['tn_valid'] = float((logits(head, mean, std, fv).argmax(1) == d.y[va]).mean())
    return out

VARIANTS = {   # name: views added in training (+ options); 'full': all photos of the source, no augmentation (reference)
    'base': {},
    'mix1': dict(views=['mix1']),
    'crop': dict(views=['crop']),
    'colour': dict(views=['colour']),
    'degrade': dict(views=['degrade']),
    'bg': dict(views=['bg']),
    'crop+colour+degrade+bg': dict(views=['crop', 'colour', 'degrade', 'bg']),
    'mix1+2': dict(views=['mix1', 'mix2']),
    'mix1+2 w0.5': dict(views=['mix1', 'mix2'], w=0.5),
    'mix1+2+3': dict(views=['mix1', 'mix2', 'mix3']),
    'mix1+2 stats-all': dict(views=['mix1', 'mix2'], stats='all'),
    'full (all photos) base': dict(full=True),
}
EVALS = {'': (False, False), ' + align': (True, False), ' + tta': (False, True), ' + align + tta': (True, True)}

def pct(v): return '' if v is None else f'{100*v:.1f}'

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', default='42,43')
    ap.add_argument('--only', default='')
    ap.add_argument('--no-log', action='store_true', help='print only (a check run)')
    ap.add_argument('--evals', default='', help='only these evaluations, e.g. " + tta, + align + tta"')
    ap.add_argument('--directions', default='T>G,G>T', help='log rows of these directions only')
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(',')]
    d = Data(); have = set(d.aug)
    timing = {}
    if (AUGDIR/'timing.jsonl').exists():
        for l in (AUGDIR/'timing.jsonl').read_text().splitlines(): r = json.loads(l); timing[r['view']] = r
    print('augmented views cached:', sorted(have), flush=True)
    names = [n for n in (a.only.split(',') if a.only else VARIANTS)]
    print('\n| variant | T>G acc | G>T acc | TN valid | T>G not sure / sure acc | G>T not sure / sure acc | never-taught not sure (T>G, G>T) | embed s (both subsets) | fit s |')
    print('|---|---|---|---|---|---|---|---|---|')
    for name in names:
        v = VARIANTS[name]
        need = set(v.get('views', []))
        if not need <= have: print(f'| {name} | skipped: views {sorted(need - have)} not cached |', flush=True); continue
        heads = {(dr, s): train(d, dr, v, name, s) for dr in ('T>G', 'G>T') for s in seeds
                 if not (dr == 'G>T' and name == 'bg')}           # garbage12 has no bg view: G>T 'bg' is 'base'
        emb_s = sum(timing[x]['s'] for x in v.get('views', []) if x in timing)
        up = subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
        for ev, (align, tta) in EVALS.items():
            if a.evals and ev not in [e for e in a.evals.split(',')]: continue
            if tta and 'ccrop' not in have: continue
            res = {dr: [dict(**evaluate(d, dr, *heads[(dr, s)][:3], align, tta), **heads[(dr, s)][3]) for s in seeds]
                   for dr in ('T>G', 'G>T') if (dr, seeds[0]) in heads}
            for dr, rs in res.items():
                for s, r in zip(seeds, rs):
                    row = dict(when=datetime.now(timezone.utc).isoformat(timespec='seconds'), session='augviews-2026-12-03',
                               data='sources-default.npz + augviews', experiment='loso-aug', variant=name + ev, direction=dr, seed=s,
                               train_subset=not v.get('full'), head='fit_head default (40 epochs, balanced)', embed_s=emb_s, uptime=up,
                               align=align, tta=tta, **{k: v_ for k, v_ in v.items()}, **r)
                    if not a.no_log and dr in a.directions.split(','):
                        with open(RESULTS, 'a') as f: f.write(json.dumps(row) + '\n')
            def m(dr, k):
                xs = [r[k] for r in res.get(dr, []) if r.get(k) is not None]
                return (np.mean(xs), np.std(xs)) if xs else (None, None)
            def ms(dr, k):
                mu, sd = m(dr, k); return '' if mu is None else f'{100*mu:.1f} ± {100*sd:.1f}'
            print(f"| {name + ev} | {ms('T>G', 'acc')} | {ms('G>T', 'acc')} | {ms('T>G', 'tn_valid')} | "
                  f"{pct(m('T>G', 'unsure')[0])} / {pct(m('T>G', 'sure_acc')[0])} | {pct(m('G>T', 'unsure')[0])} / {pct(m('G>T', 'sure_acc')[0])} | "
                  f"{pct(m('T>G', 'ood_unsure')[0])}, {pct(m('G>T', 'ood_unsure')[0])} | {emb_s:.0f} | "
                  f"{np.mean([h[3]['fit_s'] for h in heads.values()]):.0f} |", flush=True)
