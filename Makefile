# Two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[cpu,test]"
	# CLIP's BPE vocabulary ships inside clip-anytorch; its own deps (torchvision) are not needed.
	$(BIN)/pip install -q --no-deps "clip-anytorch>=2.6"
	$(BIN)/python -m tav.cpp_ext  # pre-build the kv_gather CPU twin (cached; falls back, never fails)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tav.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
