"""Layers that only look down, checked (the rules and their demonstration: nbs/96_layers.ipynb): every import between
the package's modules must go to a lower layer of the table in docs/ARCHITECTURE.md, or to a module of the same layer
(or room) listed above it; a stage never imports another stage. The table is the one source: a module it does not
list fails, and the notebook numbers follow its order."""
import re
from pathlib import Path
import pytest
from recycle_classifier.layers import layer_table, module_sources, violations

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def table(): return layer_table((ROOT/'docs'/'ARCHITECTURE.md').read_text())


@pytest.fixture(scope='module')
def sources(): return module_sources(ROOT/'recycle_classifier')


def test_every_module_is_in_the_table(table, sources):
    assert set(sources) - set(table) == set(), f'modules missing from docs/ARCHITECTURE.md: {sorted(set(sources) - set(table))}'
    assert set(table) - set(sources) == set(), f'the table lists modules that do not exist: {sorted(set(table) - set(sources))}'


def test_imports_only_look_down(table, sources):
    bad = violations(table, sources)
    assert not bad, 'imports against the layers:\n' + '\n'.join(f'  {m} -> {d}: {why}' for m, d, why in bad)


def test_notebooks_follow_the_table(table):
    "Each row names the notebook that exports the module, and notebook numbers grow down the table"
    numbers = []
    for mod, (_, _, _, nb) in table.items():
        path = ROOT/'nbs'/f'{nb}.ipynb'
        assert path.exists(), f'{mod}: no notebook {path.name}'
        assert re.search(rf'#\|\s*default_exp\s+{re.escape(mod)}\b', path.read_text()), f'{path.name} does not export {mod}'
        numbers.append(int(re.match(r'\d+', nb).group()))
    assert numbers == sorted(numbers), 'notebook numbers out of layer order'


def test_the_check_fails_on_an_upward_or_sideways_import(table):
    "The rule is not vacuous: a primitive importing a stage, one stage another, or a room's part importing a later part"
    sources = {'base.layout': 'from ..train.run import train\n',
               'evaluate.scoring': 'def f():\n    from recycle_classifier.clean.scores import suggest\n',
               'clean.scores': 'from .journal import journal_path\n',
               'clean.journal': 'from .scores import suggest\n',
               'base.images': 'from .core import UserError\n', 'cli': 'from .train.run import train\n',
               'testing': 'from .data import SafePILImage\n', 'data': 'from .testing import small_learner\n'}
    got = {(m, d) for m, d, _ in violations(table, sources)}
    assert got == {('base.layout', 'train.run'), ('evaluate.scoring', 'clean.scores'), ('clean.scores', 'clean.journal'),
                   ('data', 'testing')}
