"""The repository reads well without a docs build: the Quarto config is in sync with settings.ini and points at
files that exist, README.md is the rendering of nbs/index.ipynb and links every tutorial, and the tutorials'
committed outputs are small and free of machine-specific text."""
import io, json, re, subprocess, sys, contextlib
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
TUTORIALS = sorted((NBS/'tutorials').glob('*.ipynb'))

def test_nbdev_yml_matches_settings_ini():
    from nbdev.quarto import _nbdev_yml
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    vals = {k: cfg[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    vals['doc_path'] = cfg.doc_path.name
    assert (NBS/'nbdev.yml').read_text() == _nbdev_yml.format(**vals), \
        "nbs/nbdev.yml is out of date: run `python -c 'from nbdev.quarto import refresh_quarto_yml; refresh_quarto_yml()'`"

def test_quarto_yml_points_at_existing_files():
    q = yaml.safe_load((NBS/'_quarto.yml').read_text())
    assert q['project']['type'] == 'website'
    assert (NBS/q['format']['html']['css']).exists()
    for r in q['project'].get('resources', []): assert (NBS/r).exists(), r
    for m in q['metadata-files']: assert (NBS/m).exists(), f"nbs/{m} missing: run nbdev_sidebar / refresh_quarto_yml"
    items = []
    for it in q['website']['navbar']['left']:
        items += it.get('menu', []) + ([it['href']] if 'href' in it else [])
    for it in items: assert (NBS/it).exists(), f"_quarto.yml navbar names {it}, which does not exist"
    assert {f"tutorials/{p.name}" for p in TUTORIALS} <= set(items), "every tutorial belongs in the Tutorials menu"

def test_sidebar_lists_every_notebook():
    from nbdev.quarto import nbdev_sidebar
    out = io.StringIO()
    with contextlib.redirect_stdout(out): nbdev_sidebar(path=NBS, printit=True, force=True)
    assert (NBS/'sidebar.yml').read_text().strip() == out.getvalue().strip(), "nbs/sidebar.yml is stale: run `nbdev_sidebar --force`"

def test_readme_is_index_rendered():
    before = (ROOT/'README.md').read_text()
    try:
        subprocess.run([sys.executable, str(ROOT/'tools'/'build_readme.py')], check=True, capture_output=True)
        assert (ROOT/'README.md').read_text() == before, "README.md differs from nbs/index.ipynb: run `python tools/build_readme.py`"
    finally: (ROOT/'README.md').write_text(before)

def test_readme_links_resolve_and_cover_the_tutorials():
    md = (ROOT/'README.md').read_text()
    links = [l.split('#')[0] for l in re.findall(r'\]\(([^)\s]+)\)', md) if not l.startswith(('http', '#'))]
    for l in links: assert (ROOT/l).exists(), f"README links {l}, which does not exist"
    for p in TUTORIALS: assert f"nbs/tutorials/{p.name}" in links, f"README does not link {p.name}"
    assert md.index('## Quick start') < md.index('```bash')

ABS = re.compile(r'(/tmp/|/work/|/home/|/root/|/Users/|[A-Z]:\\\\)')
TIMING = re.compile(r'(\d+(\.\d+)?\s?(it/s|s/it|img/s|images/s)|Wall time|CPU times|elapsed|\d+:\d\d<\d+:\d\d)')
GPU = re.compile(r'(NVIDIA|H100|H200|A100|Tesla|GeForce|cuda:\d)')

def _outputs_text(nb):
    for c in nb['cells']:
        for o in c.get('outputs', []):
            if 'text' in o: yield c, ''.join(o['text'])
            for k, v in o.get('data', {}).items():
                if k.startswith('text/') or k.endswith('json'): yield c, v if isinstance(v, str) else ''.join(v) if isinstance(v, list) else json.dumps(v)

@pytest.mark.parametrize('path', TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_outputs_are_small_and_portable(path):
    nb = json.loads(path.read_text())
    assert path.stat().st_size < 400_000, f"{path.name} is {path.stat().st_size:,} bytes: shrink its chart outputs"
    first = ''.join(nb['cells'][0]['source'])
    assert first.startswith('# ') and '\n> ' in first, f"{path.name} needs a '# Title' and '> summary' first cell"
    assert not any(l.startswith(('#| default_exp', '#| export')) for c in nb['cells'] for l in ''.join(c['source']).splitlines()), \
        "tutorials export nothing"
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    ran = [c for c in code if c.get('outputs')]
    assert ran, f"{path.name} has no stored outputs: execute it and commit the outputs"
    for c, t in _outputs_text(nb):
        for rx, what in ((ABS, 'an absolute path'), (TIMING, 'a timing'), (GPU, 'a GPU name')):
            m = rx.search(t)
            assert not m, f"{path.name}: an output holds {what} ({m.group(0)!r}) in cell starting {''.join(c['source'])[:60]!r}"
    for c in code:
        for o in c.get('outputs', []):
            assert o.get('output_type') != 'error', f"{path.name}: a stored output is an error"
            assert not (o.get('name') == 'stderr' and 'Warning' in ''.join(o.get('text', ''))), \
                f"{path.name}: a stored output is a warning: filter or fix it"
    for c in code:
        for o in c.get('outputs', []):
            mimes = set(o.get('data', {}))
            js = {m for m in mimes if 'vegalite' in m or 'vega' in m or m in ('application/javascript', 'application/vnd.jupyter.widget-view+json')}
            assert not js or mimes & {'image/png', 'image/svg+xml'}, \
                f"{path.name}: an output renders only with JavaScript ({sorted(js)}): show charts as PNG (viz.save_chart + IPython.display.Image)"
