"""The docs build wherever Quarto is: nbdev's doc processor runs, in a fresh kernel, every notebook cell that is
exported or holds an import (`nbdev.processors._do_eval`), to render the API docs (in notebooks that have any). Such a cell must stand alone:
exported code, or imports only. A test cell that also imports would run there without the cells before it
(the `NameError` that used to stop the docs at `00c_layout`), and nbdev warns about it."""
import ast, json
from pathlib import Path
import pytest
from nbdev.processors import _do_eval
from nbdev.process import NBProcessor

NBS = sorted((Path(__file__).resolve().parents[1]/'nbs').glob('*.ipynb'))
EXPORTED = {'export', 'exports', 'exporti', 'exec_doc'}


def _imports_only(src: str) -> bool:
    body = '\n'.join(l for l in src.splitlines() if not l.startswith('#|'))
    tree = ast.parse(body)
    return all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body)


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_doc_processor_runs_only_standalone_cells(nb):
    cells = NBProcessor(nb, procs=[]).nb.cells   # the cells with directives parsed, as the doc processor sees them
    if not any(c.directives_.keys() & EXPORTED or 'show_doc(' in c.source for c in cells if c.cell_type == 'code'):
        return   # no API docs (the tour, index): nbdev renders the saved outputs and executes nothing
    bad = [c.source[:160] for c in cells
           if c.cell_type == 'code' and _do_eval(c) and not (c.directives_.keys() & EXPORTED) and not _imports_only(c.source)]
    assert not bad, f'{nb.name}: cells mixing imports with other code (put the imports in a cell of their own):\n' + '\n---\n'.join(bad)


def test_the_check_catches_a_mixed_cell(tmp_path):
    "The rule above fails on the kind of cell that broke the docs"
    nb = json.loads(NBS[0].read_text())
    nb['cells'].append(dict(cell_type='code', id='mixed001', metadata={}, execution_count=None, outputs=[],
                            source=['import os\n', 'x = ds.path']))
    (tmp_path/'mixed.ipynb').write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match='mixing imports'): test_doc_processor_runs_only_standalone_cells(tmp_path/'mixed.ipynb')
