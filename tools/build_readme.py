"""Build README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed here).

Run from the repo root: python tools/build_readme.py
Executes nothing: the committed notebook outputs are used. nbdev directives are stripped and
hidden cells dropped.
"""
import re, subprocess, sys, tempfile
from pathlib import Path
import nbformat

def main():
    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
    cells = []
    for c in nb.cells:
        src = c.source
        if c.cell_type == 'code':
            lines = src.splitlines()
            flags = [l for l in lines if l.startswith('#|')]
            if any('hide' in l or 'default_exp' in l for l in flags): continue
            c.source = '\n'.join(l for l in lines if not l.startswith('#|'))
        cells.append(c)
    nb.cells = cells
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)/'README.ipynb'
        nbformat.write(nb, p)
        subprocess.run([sys.executable, '-m', 'nbconvert', '--to', 'markdown', str(p), '--output-dir', d], check=True, capture_output=True)
        md = (Path(d)/'README.md').read_text()
    md = re.sub(r'\n{3,}', '\n\n', md)
    # links in index.ipynb are relative to nbs/ (so they work in the notebook and the Quarto site); README sits at the root
    md = re.sub(r'\]\((?!https?:|#|/)([^)\s]+)\)', lambda m: f"](nbs/{m.group(1)})", md)
    (root/'README.md').write_text(md)
    print(f"wrote {root/'README.md'} ({len(md):,} chars)")

if __name__ == '__main__': main()
