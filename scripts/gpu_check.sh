#!/usr/bin/env bash
# Both methods' tests on a CUDA GPU, bfloat16 included (issue #16), from the repository root, on the
# fixture data alone:
#
#   scripts/gpu_check.sh          # a venv in .venv-gpu, devnets in it, then `pytest -m cuda`
#   scripts/gpu_check.sh wheels   # where PyPI is reachable: put in .whl/ the wheels an offline GPU machine lacks
#
# The `cuda` cases are the conftest's `device` fixture's GPU cases (the methods' exact-value tensor tests,
# the dtype test, and short training runs with trainer.accelerator=cuda/gpu). The check fails when one
# fails, when one is skipped or when none runs, so a machine where torch sees no GPU cannot pass.
#
# Where $PYTHON (python3) already has a CUDA build of torch, as GPU images do, the venv reuses its packages
# (a .pth file) instead of downloading torch's 3 GB again; pip then installs what is missing: from .whl/
# without the network when that folder is there, else from PyPI (with the default, CUDA, torch wheels
# where there is no torch). The JUnit report is written to $OUT/gpu_check.xml when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_DEFAULT_TIMEOUT=30

if [ "${1:-}" = wheels ]; then
    # What devnets needs beyond a GPU image's PyTorch stack (torch, torchvision, lightning, tensorboard,
    # pandas, matplotlib, pytest, pyyaml, joblib, cloudpickle): Hydra, its launchers and what only they
    # need, all pure Python. Without their other requirements (--no-deps): wheels of those built for this
    # machine's Python could clash with the image's. antlr4's runtime is an sdist alone: built here.
    "$PYTHON" -m pip download -q --no-deps -d .whl hydra-core "omegaconf>=2.2,<2.4" hydra-joblib-launcher \
        hydra-submitit-launcher submitit
    "$PYTHON" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.*"
    ls .whl
    exit
fi

if "$PYTHON" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    "$PYTHON" -m venv --without-pip "$VENV"  # pip, setuptools and the rest come from $PYTHON's packages
    host_site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; site.addsitedir('$host_site')" >"$venv_site/host_packages.pth"
    echo "reusing the CUDA torch in $host_site"
else
    "$PYTHON" -m venv "$VENV"
fi
. "$VENV/bin/activate"
if [ -d .whl ]; then
    python -m pip install -q --no-index --find-links .whl --no-build-isolation -e .
else
    python -m pip install -q -e ".[dev]"
fi

python - <<'EOF'
import lightning
import torch

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
      f"lightning {lightning.__version__}")
if torch.cuda.is_available():
    name, capability = torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
    print(f"device: {name}, compute capability {capability}, bf16 supported: {torch.cuda.is_bf16_supported()}")
else:
    print("device: none (torch.cuda.is_available() is False)")
EOF

report=${OUT:-$(mktemp -d)}/gpu_check.xml
python -m pytest -m cuda -rs -p no:cacheprovider --junitxml="$report"
python - "$report" <<'EOF'
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot().find("testsuite")
tests, skipped = int(suite.get("tests")), int(suite.get("skipped"))
if tests == 0 or skipped:
    sys.exit(f"gpu_check: FAILED, {skipped} of {tests} CUDA tests skipped (a GPU torch cannot see?)")
print(f"gpu_check: all {tests} CUDA tests passed")
EOF
