"""The cleaning stage: ranking quality on the sample with flipped labels, junk flags, the shared feature cache,
journaled apply / resume / undo that never loses a byte, the widget's logic and the `clean` CLI."""
import random, shutil
from collections import Counter
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from PIL import Image
import recycle_classifier.clean.scores as clean
import recycle_classifier.clean.journal as journal
from recycle_classifier.clean.scores import suggest, list_photos, split_label, oof_probs, STATE_DIR
from recycle_classifier.clean.journal import apply_decisions, undo_last, dataset_files, read_journal
from recycle_classifier.clean.review import Cleaner
from recycle_classifier.base.core import UserError, SAMPLE_DIR as SAMPLE
from recycle_classifier.base.layout import QUARANTINE, walk_dataset
from recycle_classifier.features.cache import FeatureCache
from conftest import CLASSES, cli, run_cli

BODIES = 'mobilenet_v2@96'  # one small body keeps the embedding quick; the cache makes every later run quicker still


@pytest.fixture(scope='session')
def features(tmp_path_factory):
    "This test session's feature cache folder (never the user's)"
    return tmp_path_factory.mktemp('features')


@pytest.fixture(scope='session')
def base(tmp_path_factory, features):
    "The sample with 6 labels flipped (seeded) and three kinds of junk, embedded once; (path, flipped, suggestions)"
    d = tmp_path_factory.mktemp('clean')/'data'
    shutil.copytree(SAMPLE, d)
    rng, flipped = random.Random(1), {}
    for rel in rng.sample([r for r in list_photos(d) if r.startswith('train/')], 6):
        s, c = split_label(rel)
        new = rng.choice([k for k in CLASSES if k != c])
        (d/rel).rename(d/s/new/Path(rel).name)
        flipped[f'{s}/{new}/{Path(rel).name}'] = c
    glass = sorted((d/'train'/'glass').iterdir())[0]
    shutil.copy(glass, d/'valid'/'glass'/'copy.jpg')
    (d/'train'/'paper'/'truncated.jpg').write_bytes(glass.read_bytes()[:2500])
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(d/'train'/'metal'/'noise.png')
    return d, flipped, suggest(d, bodies=BODIES, folds=4, cache_dir=features)


@pytest.fixture
def ds(base, tmp_path):
    "A fresh copy of the base dataset (its features are in the shared cache, found by content)"
    dst = tmp_path/'data'
    shutil.copytree(base[0], dst)
    return dst


def multiset(root) -> Counter:
    return Counter(dataset_files(root).values())


def test_ranking_finds_flipped_labels_and_junk(base):
    d, flipped, sg = base
    t = sg.table.set_index('path')
    assert len(sg.table) == 243 and sg.table.path.is_unique and list(sg.table['rank']) == list(range(1, 244))
    assert np.allclose(sg.table[[f'p_{c}' for c in CLASSES]].dropna().sum(axis=1), 1)
    top = set(sg.table.path[:24])  # the top 10%; chance would put 0.6 of the 6 flips there
    assert sum(f in top for f in flipped) >= 3, sg.table[sg.table.path.isin(flipped)]
    assert sg.table.path[0] == 'train/paper/truncated.jpg' and t.reason['train/paper/truncated.jpg'].startswith('unreadable')
    assert 'near-duplicate of train/glass/' in t.reason['valid/glass/copy.jpg'] and 'leaks the validation' in t.reason['valid/glass/copy.jpg']
    assert 'outlier' in t.reason['train/metal/noise.png']
    assert sg.counts()['label'] > 0 and set(sg.flagged.path) >= {'train/paper/truncated.jpg', 'train/metal/noise.png'}
    for f in flipped: assert t.label[f] == split_label(f)[1]


def test_oof_probabilities_do_not_trust_the_given_label():
    "A point labelled against its cluster gets a low out-of-fold probability for that label"
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (40, 8)) + 4, rng.normal(0, 1, (40, 8)) - 4])
    y = np.array([0]*40 + [1]*40); y[3] = 1
    p = oof_probs(X, y, 2, folds=5, C=1.0)
    assert p[3, 1] < 0.2 and p[3, 0] > 0.8 and (p.argmax(1)[np.arange(80) != 3] == y[np.arange(80) != 3]).all()


def test_cache_embeds_only_new_or_changed_photos(ds, features):
    "The shared feature cache finds every photo of a copy by content; a moved photo is not embedded again, new bytes are"
    emb, cache = clean.clean_embedder(bodies=BODIES), FeatureCache(features)
    good, X, bad = clean.embed_photos(ds, list_photos(ds), emb, cache)
    assert len(good) == 242 and [r for r, _ in bad] == ['train/paper/truncated.jpg']
    assert cache.stats['hits'] == 242 and cache.stats['misses'] == 1  # all cached; the truncated file is tried again
    moved = sorted(p.name for p in (ds/'train'/'glass').iterdir())[1]
    (ds/'train'/'glass'/moved).rename(ds/'train'/'plastic'/'moved.jpg')  # found by content hash
    shutil.copy(SAMPLE/'train'/'paper'/sorted(p.name for p in (SAMPLE/'train'/'paper').iterdir())[0], ds/'train'/'paper'/'new.jpg')
    Image.new('RGB', (120, 90), 'red').save(ds/'train'/'paper'/'red.jpg')
    good2, X2, _ = clean.embed_photos(ds, list_photos(ds), emb, cache)
    assert cache.stats['misses'] == 1 + 2  # the truncated file again, and the red square: the only new bytes
    i, j = good.index(f'train/glass/{moved}'), good2.index('train/plastic/moved.jpg')
    assert np.array_equal(X[i], X2[j]) and len(good2) == 244
    assert np.allclose(np.linalg.norm(X2, axis=1), 1, atol=1e-5)


def test_apply_undo_keeps_every_byte_random_sequences(ds):
    "Random sequences of apply, re-apply, stale decisions, interrupted apply and undo never lose or add a file"
    start, start_files = multiset(ds), dataset_files(ds)
    rng = random.Random(5)
    old_lists, applied, last = [], 0, None
    for step in range(24):
        photos = list_photos(ds)
        op = rng.choice(['apply', 'apply', 'reapply', 'stale', 'cut', 'undo'])
        if op in ('apply', 'cut') or not old_lists:
            dec = [(p, rng.choice(['keep', 'remove'] + CLASSES), '') for p in rng.sample(photos, 6)]
            old_lists.append(dec)
        else: dec = old_lists[-1] if op != 'stale' else rng.choice(old_lists)
        if op == 'undo':
            try: undo_last(ds); applied -= 1
            except UserError: assert applied <= 0
        elif op == 'cut':
            real, n = journal._move, rng.randint(0, 3)
            def cut(src, dst, calls=[0]):
                calls[0] += 1
                if calls[0] > n: raise KeyboardInterrupt
                real(src, dst)
            journal._move = cut
            try: apply_decisions(ds, dec); applied += 1
            except KeyboardInterrupt: applied += 1
            finally: journal._move = real
        else:
            r = apply_decisions(ds, dec); applied += bool(r.moves)
            if op == 'reapply' and last == 'apply': assert r.moves == [] and not r.problems  # idempotent
        last = op
        assert multiset(ds) == start, (step, op)
        assert all(not f.startswith(QUARANTINE) for f in list_photos(ds))
    while True:
        try: undo_last(ds)
        except UserError: break
    assert dataset_files(ds) == start_files  # every file back at its exact path
    assert not (ds/QUARANTINE).exists()


def test_interrupted_between_link_and_unlink_resumes_or_undoes(ds):
    before = dataset_files(ds)
    dec = [('train/metal/noise.png', 'remove', ''), ('train/paper/truncated.jpg', 'remove', ''),
           ('valid/glass/copy.jpg', 'plastic', '')]
    real_unlink = journal.os.unlink
    def crash_on_second(path, calls=[0]):
        calls[0] += 1
        if calls[0] == 2: raise KeyboardInterrupt  # the file is now at both names
        real_unlink(path)
    journal.os.unlink = crash_on_second
    try:
        with pytest.raises(KeyboardInterrupt): apply_decisions(ds, dec)
    finally: journal.os.unlink = real_unlink
    ops = [r['op'] for r in read_journal(ds)]
    assert ops == ['apply', 'move', 'move'] and (ds/'train'/'paper'/'truncated.jpg').exists()
    assert (ds/QUARANTINE/'train'/'paper'/'truncated.jpg').exists()  # linked, not yet unlinked
    snapshot = dataset_files(ds)
    undo_last(ds)  # undo as it stands
    assert dataset_files(ds) == before
    r = apply_decisions(ds, dec)  # a fresh apply after the undo
    assert len(r.moves) == 3 and not r.resumed and snapshot != dataset_files(ds)
    assert (ds/'valid'/'plastic'/'copy.jpg').exists() and Counter(dataset_files(ds).values()) == Counter(before.values())


def test_resume_completes_the_same_apply(ds):
    before = dataset_files(ds)
    dec = [(p, 'remove', '') for p in list_photos(ds)[:5]]
    real = journal._move
    def cut(src, dst, calls=[0]):
        calls[0] += 1
        if calls[0] > 2: raise KeyboardInterrupt
        real(src, dst)
    journal._move = cut
    try:
        with pytest.raises(KeyboardInterrupt): apply_decisions(ds, dec)
    finally: journal._move = real
    r = apply_decisions(ds, dec)
    assert r.resumed and len(r.moves) == 2 and len(r.unchanged) == 3
    assert len({rec['id'] for rec in read_journal(ds)}) == 1  # one apply, resumed
    assert len(list((ds/QUARANTINE).rglob('*.*'))) == 5
    undo_last(ds)
    assert dataset_files(ds) == before
    with pytest.raises(UserError, match='nothing to undo'): undo_last(ds)


def test_relabel_never_overwrites_and_quarantine_is_not_data(ds):
    name = sorted(p.name for p in (ds/'train'/'glass').iterdir())[0]
    (ds/'train'/'plastic'/name).write_bytes(b'someone else')
    r = apply_decisions(ds, [(f'train/glass/{name}', 'plastic', ''), ('train/metal/noise.png', 'remove', '')])
    stem, ext = name.rsplit('.', 1)
    assert ('relabelled', f'train/glass/{name}', f'train/plastic/{stem}-1.{ext}') in r.moves
    assert (ds/'train'/'plastic'/name).read_bytes() == b'someone else'
    found = walk_dataset(ds)  # every stage's walker (and so training) does not see the quarantine
    assert not any(QUARANTINE in str(p.path) for p in found.photos) and (ds/QUARANTINE/'train'/'metal'/'noise.png').exists()
    with pytest.raises(UserError, match='decision'): apply_decisions(ds, [('train/glass/x.jpg', 'compost', '')])
    with pytest.raises(UserError, match='not a photo path'): apply_decisions(ds, [('../etc/passwd', 'remove', '')])


def test_widget_keeps_decisions_across_filters_and_applies(base, ds):
    sg = base[2]
    sg = clean.Suggestions(ds, sg.classes, sg.table, sg.oof_accuracy, sg.embedder)
    before = dataset_files(ds)
    c = Cleaner(sg, per_page=4)
    assert len(c.grid.children) == 4 and c.apply_button.disabled
    first = next(iter(c.menus))
    c.menus[first].value = 'remove'
    c.cls.value = 'trash'
    assert first not in c.menus or split_label(first)[1] == 'trash'
    c.split.value = 'valid'; c.show.value = 'all'
    second = next(iter(c.menus))
    c.menus[second].value = 'glass' if split_label(second)[1] != 'glass' else 'paper'
    c.goto(2); c.cls.value = 'all'; c.split.value = 'all'; c.show.value = 'flagged'
    assert c.decisions[first] == 'remove' and c.menus[first].value == 'remove' and len(c.decisions) == 2
    assert c.apply_button.description == 'Apply 2 decisions'
    c.apply_button.click()
    assert (ds/QUARANTINE/first).exists() and not (ds/second).exists() and c.decisions == {}
    assert multiset(ds) == Counter(before.values()) and 'Applied' in c.status.value
    c.undo_button.click()
    assert dataset_files(ds) == before and first in set(c.visible()['where'])


def test_cli_suggest_apply_undo(ds, tmp_path, features):
    out = tmp_path/'suggestions.csv'
    r = run_cli('clean', 'suggest', ds, '--bodies', BODIES, '--folds', '4', '--out', out, '--cache-dir', features)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'likely wrong labels' in r.stdout and 'clean apply' in r.stdout
    df = pd.read_csv(out)
    assert list(df.columns[:4]) == ['rank', 'decision', 'path', 'label'] and set(df.decision) == {'keep'}
    df.loc[df.path == 'train/metal/noise.png', 'decision'] = 'remove'
    df.loc[df.path == 'valid/glass/copy.jpg', 'decision'] = 'metal'
    df.to_csv(out, index=False)
    before = dataset_files(ds)
    r = run_cli('clean', 'apply', out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '1 removed, 1 relabelled' in r.stdout and (ds/QUARANTINE/'train'/'metal'/'noise.png').exists()
    assert (ds/'valid'/'metal'/'copy.jpg').exists()
    r = run_cli('clean', 'undo', ds)
    assert r.returncode == 0 and '2 restored' in r.stdout and dataset_files(ds) == before


def test_cli_errors_are_one_line(ds, tmp_path, capsys):
    "User mistakes exit 2 with `error: ...` and move nothing (in-process `main`: the same code, no start-up cost)"
    from recycle_classifier.cli import main
    before = dataset_files(ds)
    out = tmp_path/'s.csv'
    pd.DataFrame(dict(rank=[1], decision=['compost'], path=['train/metal/noise.png'], data_dir=[str(ds)])).to_csv(out, index=False)
    for args, msg in [(['clean', 'apply', str(out)], 'compost'), (['clean', 'apply', str(tmp_path/'missing.csv')], 'no such file'),
                      (['clean', 'undo', str(ds)], 'nothing to undo'),
                      (['clean', 'suggest', str(ds), '--model', str(tmp_path/'nope.pkl'), '--out', str(out)], 'no such model file')]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and msg in err and err.count('\n') == 1
    assert dataset_files(ds) == before


def test_model_body_is_used(tmp_path):
    "`--model`: the exported learner's body (here untrained, so unlike ImageNet's) embeds the photos, cached apart"
    from fastai.vision.all import vision_learner, DataBlock, ImageBlock, CategoryBlock, parent_label, Resize, RandomSplitter
    from torchvision.models import mobilenet_v2
    from recycle_classifier.base.layout import image_files
    from recycle_classifier.data import SafePILImage
    from recycle_classifier.base.images import open_image
    d, cache_dir = tmp_path/'tiny', tmp_path/'features'
    for c in ('glass', 'paper', 'metal'):
        (d/c).mkdir(parents=True)
        for f in sorted((SAMPLE/'train'/c).iterdir())[:6]: shutil.copy(f, d/c/f.name)
    dls = DataBlock(blocks=(ImageBlock(cls=SafePILImage), CategoryBlock), get_items=image_files, get_y=parent_label,
                    splitter=RandomSplitter(seed=0), item_tfms=Resize(64)).dataloaders(d, bs=8, num_workers=0)
    vision_learner(dls, mobilenet_v2, pretrained=False).export(tmp_path/'m.pkl')
    sg_model = suggest(d, model=tmp_path/'m.pkl', size=64, folds=2, cache_dir=cache_dir)
    sg_imagenet = suggest(d, bodies='mobilenet_v2', size=64, folds=2, cache_dir=cache_dir)
    assert len([k for k in cache_dir.iterdir() if k.is_dir()]) == 2 and 'm.pkl' in sg_model.embedder
    emb = clean.clean_embedder(tmp_path/'m.pkl', 64)   # the model's own body (features.classifier.learner_embedder)
    X = dict(zip(*clean.embed_photos(d, list_photos(d), emb, FeatureCache(cache_dir))[:2]))
    rel = list_photos(d)[0]
    direct = emb.embed([open_image(d/rel)])[0, 0]
    assert np.allclose(X[rel], direct / np.linalg.norm(direct), atol=1e-4)
    assert not np.allclose(sg_model.table.filter(like='p_').values, sg_imagenet.table.filter(like='p_').values)


def test_default_bodies_are_trains_and_read_its_cache(model_path, tmp_path):
    "Without options `suggest` judges with train's bodies, so the features the session's `train` cached are read, not embedded"
    import json
    from recycle_classifier.features.embedder import default_embedder
    d = tmp_path/'data'
    shutil.copytree(SAMPLE, d)   # a copy: found in the cache by content
    r = run_cli('clean', 'suggest', d, '--out', tmp_path/'s.csv', '--json')   # the default cache: the one `train` used
    assert r.returncode == 0, r.stderr
    *recs, last = [json.loads(l) for l in r.stdout.splitlines()]
    summary = last['summary']
    assert summary['cache'] == {'hits': 240, 'misses': 0} and summary['embedder'].startswith('efficientnet_lite0-384')
    assert summary['flagged'] == len(recs) == len(pd.read_csv(tmp_path/'s.csv')) and summary['photos'] == 240
    assert all(set(rec) == {'rank', 'path', 'split', 'label', 'suggested', 'quality', 'reason'} for rec in recs)
    assert '\r' not in r.stderr   # no progress-bar fragments when stderr is not a terminal
    print(f"default bodies on the sample: flagged {summary['flagged']} of 240 {summary['counts']}, out-of-fold accuracy {summary['oof_accuracy']}")
    # --model: the bodies that model was trained on, read from the same cache (the .pkl and its .onnx alike)
    for model in (model_path, model_path.with_suffix('.onnx')):
        sg = suggest(d, model=model, folds=4)
        assert sg.cache == {'hits': 240, 'misses': 0} and model.name in sg.embedder
    with pytest.raises(UserError, match='--size'): suggest(d, model=model_path, size=96)
    assert summary['embedder'] == f'{default_embedder().key} ImageNet'   # every stage's default embedder


def test_cli_json_quiet_and_exit_codes(ds, tmp_path, features):
    "--json gives one object a line, --quiet the summary only, problems go to stderr with exit 1, old option names still work"
    import json
    out = tmp_path/'s.csv'
    r = run_cli('clean', 'suggest', ds, '--embedder', BODIES, '--folds', '4', '--out', out, '--quiet', '--cache', features)
    assert r.returncode == 0 and r.stdout.count('\n') == 2 and r.stdout.startswith('243 photos')   # summary and 'wrote'
    df = pd.read_csv(out)
    df.loc[df.path == 'train/metal/noise.png', 'decision'] = 'remove'
    df.loc[df.path == 'train/paper/truncated.jpg', 'decision'] = 'remove'
    df.to_csv(out, index=False)
    (ds/'train'/'paper'/'truncated.jpg').unlink()   # gone since the suggestions: that decision cannot be carried out
    r = run_cli('clean', 'apply', out, '--json')
    assert r.returncode == 1 and r.stderr == ''
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert recs[0] == dict(action='removed', src='train/metal/noise.png', dst=f'{QUARANTINE}/train/metal/noise.png', dry_run=False)
    assert recs[1]['problem'] == 'train/paper/truncated.jpg' and recs[-1]['summary']['problems'] == 1
    r = run_cli('clean', 'undo', ds, '--quiet')
    assert r.returncode == 0 and r.stdout == '1 restored\n'
    r = run_cli('clean', 'apply', out)
    assert r.returncode == 1 and 'problem: train/paper/truncated.jpg: not found' in r.stderr and 'problem:' not in r.stdout
    r = run_cli('clean', 'suggest', ds, '--size', '96', '--out', out)
    assert r.returncode == 2 and '--size is for a body named without @PX' in r.stderr
