"""Execute notebooks in place so their outputs are stored (tutorials are read on GitHub with their outputs), then clean them.

    python tools/run_notebook.py nbs/tutorials/why_relus.ipynb [more.ipynb ...]

Cells that nbdev_test skips here are skipped too and keep no output: `#| cuda` (no GPU on the CPU box; run those on a
GPU machine with --cuda) and `#| eval: false`. Everything else runs, `#| slow` cells included, so their stored output is
from a full run. Runs each notebook from its own folder, with one torch thread (OMP_NUM_THREADS=1).
"""
import os, subprocess, sys
from pathlib import Path
import nbformat
from nbclient import NotebookClient

def run(path:Path, cuda:bool=False):
    nb = nbformat.read(path, as_version=4)
    skipped = {}
    for i, c in enumerate(nb.cells):
        flags = {l.strip().replace(' ', '') for l in c.source.splitlines() if l.startswith('#|')}
        if c.cell_type == 'code' and ('#|eval:false' in flags or ('#|cuda' in flags and not cuda)):
            skipped[i] = c; nb.cells[i] = nbformat.v4.new_code_cell('pass')
    NotebookClient(nb, timeout=1800, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    for i, c in skipped.items():
        c.outputs, c.execution_count = [], None
        nb.cells[i] = c
    nbformat.write(nb, path)
    subprocess.run(['nbdev_clean', '--fname', str(path)], check=True)
    print(f"ran {path} ({len(skipped)} cell(s) skipped)")

if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    args = [a for a in sys.argv[1:] if a != '--cuda']
    if not args: sys.exit(__doc__)
    for a in args: run(Path(a), cuda='--cuda' in sys.argv)
