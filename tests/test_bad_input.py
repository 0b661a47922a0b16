"""Bad input gets a clear one-line error, never a traceback, and loses nothing."""
import io, json, shutil
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from conftest import cli, run_cli, SAMPLE

PHOTO = sorted((SAMPLE/'valid'/'plastic').glob('*.jpg'))[0]


def assert_clean_error(r, *words, code=2):
    "Exit `code`, an `error:` line naming `words`, and no traceback"
    text = r.stdout + r.stderr
    assert r.returncode == code, text
    assert 'Traceback' not in text, text
    assert 'error:' in r.stderr, text
    for w in words: assert w in r.stderr, (w, r.stderr)


@pytest.fixture(scope='module')
def odd_photos(tmp_path_factory):
    "The same real photo in every awkward format a phone, a scanner or the web produces"
    d = tmp_path_factory.mktemp('odd')
    src = Image.open(PHOTO).convert('RGB')
    src.convert('CMYK').save(d/'cmyk.jpg')
    src.convert('L').save(d/'gray.jpg')
    rgba = src.convert('RGBA'); rgba.putalpha(200); rgba.save(d/'alpha.png')
    src.convert('P', palette=Image.ADAPTIVE).save(d/'palette.png')
    Image.fromarray((np.asarray(src.convert('L'), dtype=np.uint16) * 257)).save(d/'sixteen.png')
    frames = [src, src.rotate(90)]
    frames[0].save(d/'animated.gif', save_all=True, append_images=frames[1:], duration=100, loop=0)
    src.save(d/'photo.webp')
    exif = Image.Exif(); exif[0x0112] = 6
    src.save(d/'rotated.jpg', exif=exif)
    return d


@pytest.fixture(scope='module')
def broken_files(tmp_path_factory):
    "Files that look like photos but are not"
    d = tmp_path_factory.mktemp('broken')
    (d/'zero.jpg').write_bytes(b'')
    (d/'truncated.jpg').write_bytes(PHOTO.read_bytes()[:1200])
    (d/'page.jpg').write_text('<!DOCTYPE html><html><body>Access denied</body></html>')
    (d/'notes.txt').write_text('just text')
    Image.new('L', (30_000, 30_000)).save(d/'bomb.png')  # 900 Mpx, under 1 MB on disk
    return d


def test_every_odd_format_is_classified(model_path, odd_photos):
    r = run_cli('predict', model_path, odd_photos, '--json')
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert sorted(Path(x['path']).name for x in recs) == sorted(p.name for p in odd_photos.iterdir())
    assert all('label' in x for x in recs), recs


def test_broken_files_are_error_lines_and_never_stop_the_others(model_path, broken_files):
    files = [PHOTO, *sorted(broken_files.iterdir()), PHOTO]
    r = cli('predict', model_path, *files, '--json')
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert [x['path'] for x in recs] == [str(f) for f in files]
    assert 'label' in recs[0] and 'label' in recs[-1]
    errors = {Path(x['path']).name: x['error'] for x in recs[1:-1]}
    assert set(errors) == {'zero.jpg', 'truncated.jpg', 'page.jpg', 'notes.txt', 'bomb.png'}
    assert 'refused' in errors['bomb.png'] and 'truncated' in errors['truncated.jpg']
    assert '5 of 7 file(s) could not be classified' in r.stderr


def test_decompression_bomb_is_refused_without_decoding(broken_files):
    import subprocess, sys
    # 900 Mpx of L is 900 MB decoded: the refusal must come from the header, so peak memory barely moves
    code = ("import resource; from recycle_classifier.base.images import check_image\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(check_image(%r))\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)" % str(broken_files/'bomb.png'))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    reason, grew_mb = out.stdout.splitlines()
    assert 'refused' in reason and int(grew_mb) < 50, out.stdout


def test_training_skips_and_lists_unreadable_files_losing_nothing(tmp_path, broken_files):
    data = tmp_path/'data'
    for c in ('glass', 'metal'):
        shutil.copytree(SAMPLE/'train'/c, data/c)
    for f in broken_files.iterdir(): shutil.copy(f, data/'glass'/f.name)
    before = sorted(p.relative_to(data) for p in data.rglob('*'))
    r = run_cli('train', data, '--arch', 'mobilenet_v2', '--epochs', '1', '--freeze-epochs', '0', '--size', '64',
            '--out', tmp_path/'m.pkl')
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'skipped 1 file(s), left in place' in r.stdout            # the report before training: not photos
    assert 'skipped 4 unreadable photo(s), left in place' in r.stdout   # found while embedding
    for name in ('zero.jpg', 'truncated.jpg', 'page.jpg', 'notes.txt', 'bomb.png'): assert name in r.stdout
    assert sorted(p.relative_to(data) for p in data.rglob('*')) == before


@pytest.mark.parametrize('setup,words', [
    ('missing', ['no such folder']),
    ('file', ['is a file']),
    ('empty', ['no class folders']),
    ('one_class', ['at least 2 classes']),
    ('empty_classes', ['at least 2 classes']),
])
def test_unusable_training_folders(tmp_path, setup, words):
    d = tmp_path/'d'
    if setup == 'file': d.write_text('x')
    elif setup == 'empty': d.mkdir()
    elif setup == 'one_class': shutil.copytree(SAMPLE/'train'/'glass', d/'glass')
    elif setup == 'empty_classes': (d/'glass').mkdir(parents=True); (d/'metal').mkdir()
    r = run_cli('train', d, '--arch', 'mobilenet_v2', '--out', tmp_path/'m.pkl')
    assert_clean_error(r, *words)


def test_empty_class_folder_is_a_warning_not_a_failure(tmp_path):
    d = tmp_path/'d'
    for c in ('glass', 'metal'): shutil.copytree(SAMPLE/'train'/c, d/c)
    (d/'paper').mkdir()
    r = run_cli('train', d, '--arch', 'mobilenet_v2', '--epochs', '1', '--freeze-epochs', '0', '--size', '64',
            '--out', tmp_path/'m.pkl')
    assert r.returncode == 0, r.stderr
    assert 'class folder paper has no usable photos; skipped' in r.stdout


def test_explicit_resnet_offline_fails_before_training(tmp_path):
    r = run_cli('train', SAMPLE, '--arch', 'resnet18', '--out', tmp_path/'m.pkl')
    assert_clean_error(r, 'resnet18', 'could not be downloaded', '--arch mobilenet_v2')
    assert 'epoch' not in r.stdout and not (tmp_path/'m.pkl').exists()


def test_unwritable_destination_fails_before_training(tmp_path):
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o500)
    try:
        import os
        if os.access(ro, os.W_OK): pytest.skip('running as a user who can write anywhere (root)')
        r = run_cli('train', SAMPLE, '--arch', 'mobilenet_v2', '--out', ro/'m.pkl')
        assert_clean_error(r, 'cannot write')
    finally: ro.chmod(0o700)


def test_destination_that_is_a_folder(tmp_path):
    r = run_cli('train', SAMPLE, '--arch', 'mobilenet_v2', '--out', tmp_path)
    assert_clean_error(r, 'is a folder')


def test_model_that_is_not_an_export(tmp_path):
    bogus = tmp_path/'model.pkl'; bogus.write_text('hello')
    assert_clean_error(run_cli('predict', bogus, PHOTO), 'not a model exported')
    assert_clean_error(run_cli('predict', tmp_path/'missing.pkl', PHOTO), 'no such model file')


def test_predict_needs_photos(model_path, tmp_path):
    assert_clean_error(run_cli('predict', model_path), 'at least one photo')
    assert_clean_error(run_cli('predict', model_path, tmp_path), 'no photos found')
    r = run_cli('predict', model_path, tmp_path/'nope.jpg')
    assert r.returncode == 1 and 'no such file' in r.stderr and not r.stdout   # an error line, on stderr


def test_bad_option_values(tmp_path, model_path):
    assert_clean_error(run_cli('train', SAMPLE, '--epochs', '0', '--freeze-epochs', '0'), 'nothing to train')
    assert_clean_error(run_cli('train', SAMPLE, '--size', '8'), 'too small')
    assert_clean_error(run_cli('predict', model_path, PHOTO, '--top-k', '0'), '--top-k')
