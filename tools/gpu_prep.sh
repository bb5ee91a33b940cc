#!/usr/bin/env bash
# Prepare a session on the lent GPU machine (see bench/RESULTS.md, "Pending GPU runs").
#   .whl/          wheels the machine's image lacks (fastcore, optuna and its needs), for Python 3.12 x86-64
#   .cifar/p1..p3  CIFAR-10 in three parts of at most two batch files (about 59 MiB each: a call carries 64 MiB)
# Both folders are git-ignored. Usage: bash tools/gpu_prep.sh [path to a CIFAR-10 folder holding cifar-10-batches-py/]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-../shared/data/cifar10}/cifar-10-batches-py"
rm -rf .whl .cifar; mkdir -p .whl .cifar/p1 .cifar/p2 .cifar/p3
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
for w in fastcore==1.14.5 optuna==5.0.0 alembic sqlalchemy colorlog mako greenlet; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl "$w" \
    || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl "$w"
done
cp "$SRC"/data_batch_1 "$SRC"/data_batch_2 .cifar/p1/
cp "$SRC"/data_batch_3 "$SRC"/data_batch_4 .cifar/p2/
cp "$SRC"/data_batch_5 "$SRC"/test_batch "$SRC"/batches.meta .cifar/p3/
du -sh .whl .cifar/p*
ls .whl
