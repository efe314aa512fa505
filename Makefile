# Two commands do all set-up: `make demo` and `make test` (both create .venv on first use).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO ?= runs/demo
# glibc would map/unmap every >32 MB tensor (SPEC §8): keep freed memory instead (1.2-1.8x on CPU).
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 100000000000
export MALLOC_TOP_PAD_ ?= 1073741824
export HF_HUB_OFFLINE := 1

.PHONY: test demo lint landmarks clean-venv

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "fserasing needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Optional: MediaPipe Face Mesh + MTCNN for real photos (SPEC §7: mediapipe goes in --no-deps).
landmarks: $(STAMP)
	$(PY) -m pip install --quiet --no-deps -c constraints.txt \
		mediapipe facenet-pytorch absl-py attrs flatbuffers protobuf

demo: $(STAMP)
	$(PY) -m parsing.synth --out $(DEMO)/synth --identities 40 --images-per-identity 10 \
		--seed 0 --sheet $(DEMO)/synth_sheet.png
	@echo "demo outputs are in $(DEMO)/"

clean-venv:
	rm -rf $(VENV)
