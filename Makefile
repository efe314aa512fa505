# Two commands do all set-up: `make demo` and `make test` (both create .venv on first use).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO ?= runs/demo
PARSER_EPOCHS ?= 3
RECOG_EPOCHS ?= 10
# the demo's faces carry identity only in these regions (parsing.synth --identity-regions)
ID_REGIONS ?= nose,mouth
comma := ,
# glibc would map/unmap every >32 MB tensor (reference §8): keep freed memory instead (1.2-1.8x on CPU).
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 100000000000
export MALLOC_TOP_PAD_ ?= 1073741824
export HF_HUB_OFFLINE := 1

.PHONY: test demo lint clean-venv

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "fserasing needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@# Real-photo tools (reference §7): MediaPipe must go in --no-deps, with these four beside it.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt \
		mediapipe facenet-pytorch absl-py attrs flatbuffers protobuf
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The whole pipeline on synthetic faces and the packaged photos (< 10 min on 2 CPU cores).
demo: $(STAMP)
	rm -rf $(DEMO)
	@echo "== 1. synthetic faces with exact 25-class masks"
	$(PY) -m parsing.synth --out $(DEMO)/synth --identities 100 --images-per-identity 6 \
		--seed 0 --identity-regions $(ID_REGIONS) --sheet $(DEMO)/synth_sheet.png
	$(PY) -m parsing.synth --out $(DEMO)/synth_val --identities 20 --images-per-identity 6 \
		--seed 1 --identity-regions $(ID_REGIONS)
	@echo "== 2. FSErasing under every fill mode"
	$(PY) -m fserasing --data $(DEMO)/synth --sheet $(DEMO)/fserasing_sheet.png
	@# the default parser of benchmarks.study_parsing (RESULTS.md): width 16 + class weights
	@echo "== 3. train a small face parser, predict masks for the recognition set"
	$(PY) -m parsing.train --data synth:$(DEMO)/synth --out $(DEMO)/parser --width 16 \
		--epochs $(PARSER_EPOCHS) --batch-size 8 --lr 1e-2 --augment flip --class-weights
	$(PY) -m parsing.evaluate --checkpoint $(DEMO)/parser --data synth:$(DEMO)/synth_val \
		--split all --out $(DEMO)/parser/eval.json
	$(PY) -m parsing.predict --checkpoint $(DEMO)/parser --images $(DEMO)/synth/images \
		--out $(DEMO)/masks --sheet $(DEMO)/parser_sheet.png
	@echo "== 4. train a recognizer with FSErasing on the predicted masks"
	$(PY) -m recognition.train --data $(DEMO)/synth --val synth:$(DEMO)/synth_val \
		--network mbf --network-kwargs '{"blocks": [1, 2, 3, 1], "scale": 1}' --channels-last \
		--loss cosface --aug fserasing --masks $(DEMO)/masks --epochs $(RECOG_EPOCHS) \
		--batch-size 32 \
		--warmup-epochs 1 --workers 1 --val-every 32 --out $(DEMO)/recognition
	@echo "== 5. evaluation: IJB-C-layout protocol, .bin verification, occlusion per region"
	$(PY) -m parsing.synth --out $(DEMO)/eval_loose --identities 24 --images-per-identity 6 \
		--seed 2 --size 160 --loose --identity-regions $(ID_REGIONS)
	$(PY) -m recognition.make_ijbc_protocol --faces $(DEMO)/eval_loose --out $(DEMO)/ijbc
	$(PY) -m recognition.eval_ijbc --checkpoint $(DEMO)/recognition/model.pt --data $(DEMO)/ijbc \
		--out $(DEMO)/ijbc_eval --batch-size 32 --workers 0
	$(PY) -m recognition.make_verification_bin --faces $(DEMO)/synth_val \
		--out $(DEMO)/synth_ver.bin --pairs 200
	$(PY) -m recognition.eval_verification --checkpoint $(DEMO)/recognition/model.pt \
		--bin $(DEMO)/synth_ver.bin --out $(DEMO)/verification
	$(PY) -m recognition.eval_occlusion --checkpoint $(DEMO)/recognition/model.pt \
		--data $(DEMO)/synth_val --out $(DEMO)/occlusion --pairs 100 --elsewhere \
		--groups $(subst $(comma),+,$(ID_REGIONS)),eyes,hair --protect $(ID_REGIONS)
	@echo "== 6. FS-CAM beside Grad-CAM, RISE and Group-CAM for the trained model"
	$(PY) -m cam.fscam --image $(DEMO)/synth_val/images/000000.png \
		--reference $(DEMO)/synth_val/images/000001.png --aligned \
		--model $(DEMO)/recognition/model.pt --parser $(DEMO)/parser \
		--method all --rise-masks 500 --mark $(ID_REGIONS) --out $(DEMO)/explain
	@echo "== 7. real photos: detect, align, annotate 25 regions, erase, recolour"
	$(PY) -m parsing.photos --out $(DEMO)/photos
	$(PY) -m parsing.annotate --images $(DEMO)/photos --out $(DEMO)/photos_anno \
		--sheet $(DEMO)/photos_regions.png
	$(PY) -m parsing.align --images $(DEMO)/photos --out $(DEMO)/photos_aligned
	$(PY) -m parsing.annotate --images $(DEMO)/photos_aligned/images --out $(DEMO)/photos_aligned
	$(PY) -m fserasing --data $(DEMO)/photos_aligned --sheet $(DEMO)/fserasing_photos.png
	$(PY) -m parsing.edit --image $(DEMO)/photos/astronaut.png --annotate --regions lips \
		--color "#b01040" --strength 0.8 --out $(DEMO)/astronaut_lips.png
	@echo "== 8. one page of results: $(DEMO)/report.md"
	$(PY) -m benchmarks.demo_report --demo $(DEMO) --identity-regions $(ID_REGIONS)
	@echo "demo outputs are in $(DEMO)/ (see README.md, 'make demo writes'; start with report.md)"

clean-venv:
	rm -rf $(VENV)
