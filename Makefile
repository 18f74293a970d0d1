# Set-up and common tasks. Every target works from a clean clone with only Python 3.11 installed.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# Where torch comes from. Empty: pip's configured index (PyPI: a CUDA build on Linux x86_64, several GB; the CPU
# build on macOS and Windows). CPU-only Linux machines: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install test test-all lint format demo smoke screenshot clean bench results

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first and pinned, so that no later resolve replaces it (with TORCH_INDEX: that index's build).
	$(PIP) install torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -e '.[dev,sweeps,app]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ''

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The main job: the paper's latent model (both stages) on the bundled photos, low-light enhancement, in minutes
# on 2 CPU cores. DEMO=demo_pixel trains the pixel model instead; DEMO_ARGS="task=shadow optim=adamw" another task.
DEMO_ARGS ?= task=lowlight optim=adamw
DEMO ?= demo

demo: install
	$(PY) -m refusion_pl.train experiment=$(DEMO) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# Speed benchmark (not part of `make test`): ratios against the original network + sampler, timed side by side.
# BENCH_ARGS=--quick for a few minutes; results in benchmarks/results/bench*.{json,md}.
BENCH_ARGS ?=
bench: install
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# The README's results table: make demo's recipe on each synthetic task (identity vs restored PSNR/SSIM on the
# held-out photos, fewer steps, a crops figure), then a miniature ablation on shadow (Hydra multiruns). About
# 1.5-2 h with OMP_NUM_THREADS=1; resumable (finished tasks are skipped). RESULTS_ARGS="--tasks sr --no-ablation".
RESULTS_ARGS ?=
results: install
	$(PY) -m refusion_pl.benchmark $(RESULTS_ARGS)

smoke: install
	$(PY) -m refusion_pl.train experiment=smoke

# The README's picture of the web demo (docs/app.png): serve CKPT, restore IMAGE in the system's headless Chromium
# (apt-get install chromium chromium-driver; nothing is downloaded) and save the page.
SCREENSHOT_ARGS ?= sampler=posterior spacing=logsnr sample_steps=10 device=cpu
screenshot: install
	@test -n "$(CKPT)" -a -n "$(IMAGE)" || { echo "usage: make screenshot CKPT=path/last.ckpt IMAGE=photo.png" >&2; exit 2; }
	$(PY) -m refusion_pl.app_browser $(CKPT) $(IMAGE) docs/app.png $(SCREENSHOT_ARGS)
