#!/usr/bin/env bash
# Set up (or check) the Python environment of longtail_d2 in a virtualenv.
#
#   bash tools/setup_env.sh            # creates ./.venv (or $LONGTAIL_VENV)
#
# Idempotent: a second run only verifies the imports (a few seconds).
# Where `import detectron2` already works (an existing environment, LONGTAIL_VENV=path), that
# detectron2 and its torch are kept as they are. Otherwise it installs torch 2.14.1 /
# torchvision 0.29.1 and the pure-Python part of the sal-detectron2 wheel (whose C++
# extension targets another Python/torch and is removed). Then the pinned requirements.txt,
# lvis (without its opencv-python dependency) and this package (editable).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LONGTAIL_VENV:-.venv}
PY="$VENV/bin/python"
STAMP="$VENV/.longtail_d2_setup"
HASH=$(cat requirements.txt setup.py tools/setup_env.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && \
   "$PY" -c "import detectron2, longtail_d2, faster_coco_eval, lvis, higher" 2>/dev/null; then
  echo "[setup_env] environment $VENV is ready"
  exit 0
fi

[ -x "$PY" ] || python3 -m venv "$VENV"
# The machine's pip config lists local package folders that may be absent: drop that noise.
pip_install() {
  "$PY" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}

if "$PY" -c "import detectron2" 2>/dev/null; then
  # An existing detectron2 was built against this torch (maybe with CUDA): keep both.
  echo "[setup_env] detectron2 already imports: keeping torch $("$PY" -c "import torch; print(torch.__version__)") and torchvision as they are"
else
  echo "[setup_env] torch 2.14.1 / torchvision 0.29.1"
  "$PY" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null || \
    pip_install torch==2.14.1 torchvision==0.29.1
fi

echo "[setup_env] pinned requirements"
pip_install -r requirements.txt
pip_install --no-deps lvis==0.5.3 six==1.17.0

if ! "$PY" -c "import detectron2" 2>/dev/null; then
  echo "[setup_env] detectron2: pure-Python part of sal-detectron2==0.7.2 (no _C)"
  SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  pip_install --target "$SITE" --python-version 3.10 \
    --only-binary=:all: --no-deps --upgrade sal-detectron2==0.7.2
  rm -f "$SITE"/detectron2/_C*.so
fi

echo "[setup_env] longtail_d2 (editable)"
pip_install --no-deps --no-build-isolation -e .

"$PY" -c "import detectron2, longtail_d2, faster_coco_eval, lvis, higher, cv2"
echo "$HASH" > "$STAMP"
echo "[setup_env] environment $VENV is ready"
