# Two commands for a fresh machine (Python 3.11 + pip):  `make train`  and  `make test`.
# Both build .venv once (`make setup`). A GPU user brings a CUDA torch:  make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: setup train test bench clean
setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH) numpy 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import torch" 2>/dev/null || (echo "torch failed to install: try  make setup TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu'"; exit 1)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import drq, dm_control, mujoco, gymnasium, hydra, wandb, cv2, imageio_ffmpeg, xdist, onnxruntime" && touch $@

train: setup
	$(PY) train.py $(ARGS)

# Two pytest-xdist workers, one test file at a time each (a file's shared fixtures are built once), the longest files
# first (tests/conftest.py). One process instead:  make test XDIST=
XDIST  ?= -n 2 --dist loadfile --no-loadscope-reorder
test: setup
	$(PY) -m pytest -q $(XDIST) tests $(ARGS)

clean:
	rm -rf $(VENV)
