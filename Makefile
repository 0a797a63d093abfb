# Two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
TORCH_VERSION ?= 2.13.0

.PHONY: demo test test-slow test-sd15 lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, the build this machine can use: without an NVIDIA GPU the CPU build (PyTorch's CPU index, else
	# a local CPU wheel), with one the CUDA build; a plain `pip install torch` on Linux pulls the multi-GB CUDA one.
	$(BIN)/python tools/install_torch.py --version $(TORCH_VERSION)
	# The base install is the lean runtime; the demo and the tests need the tuner, exporter and service too.
	# Not -q: minutes of downloads show as they go. The filter drops setuptools' "Editable installation" note,
	# which every editable install of a package-dir layout prints (information, not a problem to fix).
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -e ".[cpu,export,serve,test]"
	# CLIP's BPE vocabulary ships inside clip-anytorch; its own deps (torchvision) are not needed.
	$(BIN)/pip install -q --no-deps "clip-anytorch>=2.6"
	$(BIN)/python -m tav.cpp_ext  # pre-build the kv_gather CPU twin (cached; falls back, never fails)
	touch $(STAMP)

install: $(STAMP)

# The whole chain on the built-in tiny model: make model -> (make clip) -> tune -> export -> run.
# The tiny model is random, so the video is abstract; every stage is the real one.
# Use your own clip with `make demo VIDEO=path/to/clip.mp4`.
VIDEO ?=
CLIP = $(or $(VIDEO),$(DEMO_DIR)/clip.mp4)
demo: $(STAMP)
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(BIN)/tav-make-tiny $(DEMO_DIR)/sd
	$(if $(VIDEO),,$(BIN)/tav-make-clip $(CLIP) --frames 24 --size 128)
	$(BIN)/tav-tune --pretrained $(DEMO_DIR)/sd --video "$(CLIP)" --prompt "a ball is bouncing" \
	  --out $(DEMO_DIR)/run --frames 6 --height 64 --width 64 --steps 30 --inversion-steps 20
	$(BIN)/tav-export --weights $(DEMO_DIR)/run --out $(DEMO_DIR)/engine
	$(BIN)/tav-run --engine $(DEMO_DIR)/engine --prompt "a red apple is bouncing, cartoon style" \
	  --steps 20 --out $(DEMO_DIR)/edited.mp4
	@echo "demo video: $$(cd $(DEMO_DIR) && pwd)/edited.mp4"

# ruff's rules and line length live in pyproject.toml; `make test` (what CI runs) lints first.
lint: $(STAMP)
	$(BIN)/ruff check .

# Two pytest-xdist workers (tests/conftest.py keeps each module, and modules sharing a costly artefact, on one
# worker); `make test TEST_WORKERS=0` runs in this process, one test at a time.
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# Debian's Chromium for the studio's browser tests: Playwright drives this browser, never a download of its own.
# Installed when missing and we are root (as in CI); otherwise one line says what to run.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the studio's browser tests (about a minute)"; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }; \
	else echo "the browser tests need Chromium at $(CHROMIUM): sudo apt-get install chromium (or make CHROMIUM=PATH)"; \
	  exit 1; fi

# The end-to-end checks left out of `make test` (CI runs both): the bench, the README's blocks, the lean install,
# two Ray nodes, and the studio in a real browser, the Python client and the notebook against a real tav-serve.
test-slow: $(STAMP) $(CHROMIUM)
	TAV_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -m slow

# Every stage at SD-1.5 size within its memory bound (tests/test_real_size.py): about an hour on 2 cores, 8 GB
# of host memory, 15 GB of disk; TAV_SD15_WORK=DIR keeps the model and tuned run for the next time.
test-sd15: $(STAMP)
	$(BIN)/python -m pytest -q -s -m sd15

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
