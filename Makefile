# hf_gaf — every command a user or CI needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUNS ?= runs
# every benchmark and demo target refuses to replace its earlier results in $(RUNS): OVERWRITE=1 lets it; on the
# comparison targets REUSE=1 keeps the finished runs recorded with the same flags and runs the rest
OVERWRITE_FLAG := $(if $(OVERWRITE),--overwrite)
COMPARE_FLAGS := $(OVERWRITE_FLAG) $(if $(REUSE),--reuse)

.PHONY: help install test lint test-all gpu-check study-depth bench-optim bench-map bench-digits bench-cifar10 bench-cifar100 bench-imagenet demo-detr demo-frcnn bench-voc-detr bench-voc-frcnn bench-trees bench-spikes bench-trainer-map demo

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

install: $(STAMP)  ## make .venv and install hf_gaf editable with its dev extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install  ## run the default (fast) test suite and the docstring examples
	$(PY) -m pytest

lint: install  ## ruff check (the house rules of pyproject.toml)
	$(VENV)/bin/ruff check .

test-all: install  ## run every test, the slow ones too
	$(PY) -m pytest -m ''

gpu-check:  ## GPU: paths vs float64, step/training-step/hook ratios, detection images/s (about 5 min on one H200; offline, installs nothing)
	PYTHONPATH=.:$$PYTHONPATH $(PYTHON) recipes/gpu_check.py --out $(RUNS)/gpu-check $(OVERWRITE_FLAG)

bench-optim: install  ## optimizer-step benchmark on resnet50 and resnet10t parameters: GAFSGD vs torch SGD, AdamW+attach_gaf vs AdamW, hot and cold caches, the default schedule cold and warm (about 31 min on 2 cores)
	$(PY) recipes/bench_optimizer_step.py --out $(RUNS)/bench_optim.json $(OVERWRITE_FLAG)

study-depth: install  ## CPU: plain MLP/CNN (no normalisation) depth 4-16 on digits, 10 presets (the sgd-gain and clip-gain controls, the agc/zclip/gc treatments) x 5 seeds, CIs (16 min with 7 presets on 2 cores)
	$(PY) recipes/study_depth.py --out $(RUNS)/study-depth $(OVERWRITE_FLAG)

bench-map: install  ## mAP speed: voc_eval vs torchmetrics on 5,000 images x 100 detections x 20 classes
	$(PY) recipes/bench_map.py --out $(RUNS)/bench_map.json $(OVERWRITE_FLAG)

bench-trainer-map: install  ## mAP in a plain transformers.Trainer: DetrComputeMetrics vs the object-detection example's torchmetrics compute_metrics, peak memory and time (2 min on 2 cores)
	$(PY) recipes/bench_trainer_map.py --out $(RUNS)/bench_trainer_map.json $(OVERWRITE_FLAG)

# --- classification benchmarks (recipes/compare.py over presets x seeds) -------------------------------
SEEDS ?= 0 1 2
CLS_PRESETS ?= sgd gaf gaf-grad clip-norm clip-value sgd-gain clip-gain
CLS := recipes/classification/train.py

bench-digits: install  ## CPU, offline: digits, resnet10t, 3 seeds x 5 presets (about 8 min on 2 cores)
	$(PY) recipes/compare.py $(COMPARE_FLAGS) --script $(CLS) --presets $(CLS_PRESETS) --also-vs sgd-gain --seeds $(SEEDS) \
		--metric eval_accuracy --out $(RUNS)/bench-digits --title "digits (sklearn), resnet10t, 5 epochs, CPU" -- \
		--dataset digits --model resnet10t --image_size 32 --num_train_epochs 5 --per_device_train_batch_size 64

define cifar_bench
	$(PY) recipes/compare.py $(COMPARE_FLAGS) --script $(CLS) --presets $(CLS_PRESETS) --seeds $(SEEDS) --metric eval_accuracy \
		--out $(RUNS)/bench-cifar$(1) --title "CIFAR-$(1), $(or $(MODEL),resnet18), $(or $(EPOCHS),200) epochs" -- \
		--dataset $(or $(DATASET),cifar$(1)) --model $(or $(MODEL),resnet18) --cifar_stem true --image_size 32 \
		--num_train_epochs $(or $(EPOCHS),200) --per_device_train_batch_size 256 --learning_rate 0.1 \
		--lr_scheduler_type cosine --bf16 true --dataloader_num_workers 8
endef

bench-cifar10: install  ## GPU: CIFAR-10 as in the paper (ResNet-18, batch 256, lr 0.1, 200 epochs, cosine); MODEL= EPOCHS= SEEDS= DATASET=
	$(call cifar_bench,10)

bench-cifar100: install  ## GPU: CIFAR-100, same setting; MODEL= EPOCHS= SEEDS= DATASET=
	$(call cifar_bench,100)

bench-imagenet: install  ## GPUs: ResNet-18/50 on ImageNet, accelerate multi-GPU (lr 0.4 at 256 x 8, cosine); IMAGENET_DIR= required
	@test -n "$(IMAGENET_DIR)" || { echo "set IMAGENET_DIR=/path/with/train/<class>/*.JPEG and val/<class>/*.JPEG"; exit 2; }
	$(PY) recipes/compare.py $(COMPARE_FLAGS) --script $(CLS) --presets $(or $(PRESETS),sgd gaf) --seeds $(or $(SEEDS_IMAGENET),0) \
		--metric eval_accuracy --out $(RUNS)/bench-imagenet --title "ImageNet, $(or $(MODEL),resnet50)" \
		--launcher "$(VENV)/bin/accelerate launch --config_file recipes/accelerate_configs/multi_gpu_ddp.yaml" -- \
		--dataset $(IMAGENET_DIR) --eval_split validation --model $(or $(MODEL),resnet50) --image_size 224 \
		--num_train_epochs $(or $(EPOCHS),90) --per_device_train_batch_size 256 --learning_rate 0.4 \
		--lr_scheduler_type cosine --warmup_steps 0.05 --bf16 true --dataloader_num_workers 12

# --- detection (PASCAL VOC) -----------------------------------------------------------------------------
DETR := recipes/detection/train_detr.py
FRCNN := recipes/detection/train_faster_rcnn.py
ACCELERATE_MULTI := $(VENV)/bin/accelerate launch --config_file recipes/accelerate_configs/multi_gpu_ddp.yaml

demo-detr: install  ## CPU: tiny RT-DETR on synthetic VOC (96 px), scratch-adamw vs scratch-adamw-gaf, 30 epochs (about 9 min on 2 cores)
	$(VENV)/bin/hf-gaf demo $(OVERWRITE_FLAG) --task detr --epochs $(or $(EPOCHS),30) --out $(RUNS)/demo-detr

demo-frcnn: install  ## CPU: Faster R-CNN (timm resnet18 + FPN) on synthetic VOC (96 px), sgd vs gaf (about 10 min)
	$(VENV)/bin/hf-gaf demo $(OVERWRITE_FLAG) --task faster_rcnn --epochs $(or $(EPOCHS),8) --out $(RUNS)/demo-frcnn

bench-voc-detr: install  ## GPUs: DETR-R50 on VOC 07+12, tested on VOC2007 test; VOC_ROOT= (and CHECKPOINT= a local DETR folder) required
	@test -n "$(VOC_ROOT)" || { echo "set VOC_ROOT=/path/holding/VOCdevkit (VOC2007 + VOC2012)"; exit 2; }
	$(PY) recipes/compare.py $(COMPARE_FLAGS) --script $(DETR) --presets adamw adamw-gaf --seeds $(or $(SEEDS_VOC),0) --baseline adamw \
		--metric eval_voc07_map --out $(RUNS)/bench-voc-detr --title "DETR-R50, VOC 07+12 -> VOC07 test" \
		--launcher "$(ACCELERATE_MULTI)" -- --voc_root $(VOC_ROOT) --years 2007+2012 --eval_years 2007 \
		$(if $(CHECKPOINT),--model_name_or_path $(CHECKPOINT) --ignore_mismatched_sizes true,--model_config detr-r50) \
		--image_size 800 --num_train_epochs $(or $(EPOCHS),50) --per_device_train_batch_size 4 --bf16 true \
		--dataloader_num_workers 8

bench-voc-frcnn: install  ## GPUs: Faster R-CNN R50-FPN on VOC 07+12, VOC2007 test, sgd vs gaf; VOC_ROOT= (and WEIGHTS= local backbone/detector weights)
	@test -n "$(VOC_ROOT)" || { echo "set VOC_ROOT=/path/holding/VOCdevkit (VOC2007 + VOC2012)"; exit 2; }
	$(PY) recipes/compare.py $(COMPARE_FLAGS) --script $(FRCNN) --presets sgd gaf --seeds $(or $(SEEDS_VOC),0) --metric eval_voc07_map \
		--out $(RUNS)/bench-voc-frcnn --title "Faster R-CNN R50-FPN, VOC 07+12 -> VOC07 test" \
		--launcher "$(ACCELERATE_MULTI)" -- --voc_root $(VOC_ROOT) --years 2007+2012 --eval_years 2007 \
		--backbone resnet50_fpn $(if $(WEIGHTS),--weights_path $(WEIGHTS)) --image_size 800 \
		--num_train_epochs $(or $(EPOCHS),12) --per_device_train_batch_size 2 --dataloader_num_workers 8

# --- real aerial tree crowns (NEON via the deepforest wheel; train YELL, test OSBS + SOAP) -------------------
TREES := $(RUNS)/trees
TREE_SEEDS ?= 0 1 2
FRCNN_TREES = --backbone timm:resnet18 --anchor_sizes 8 16 32 64 128 --timm_out_indices 1 2 3 4 --fpn_channels 64 \
	--rpn_pre_nms_top_n 1000 --rpn_post_nms_top_n 500 --rpn_batch_size_per_image 256 --box_batch_size_per_image 256 \
	--max_zoom_out 1.0 --per_device_train_batch_size 4 \
	$(if $(FAST),--image_size 256 --num_train_epochs 10,--image_size 400 --num_train_epochs $(or $(EPOCHS),36))
DETR_TREES = --model_config tiny-rt-detr --learning_rate 1e-3 --backbone_lr 1e-3 --max_zoom_out 1.0 \
	--per_device_train_batch_size 8 \
	$(if $(FAST),--image_size 256 --num_train_epochs 30,--image_size 400 --num_train_epochs $(or $(EPOCHS),150))

$(TREES)/HF_GAF_TREES: | $(STAMP)
	$(VENV)/bin/hf-gaf make-trees $(TREES)

bench-trees: install $(TREES)/HF_GAF_TREES  ## real tree crowns, both detection recipes: baseline, GAF, sgd-gain and clip-gain controls, the agc/zclip/gc treatments, 3 seeds (FAST=1: CPU size; about 2 h on 2 cores)
	$(PY) recipes/compare.py $(COMPARE_FLAGS) --script $(FRCNN) --presets sgd gaf sgd-gain clip-gain agc zclip gc --also-vs sgd-gain --seeds $(TREE_SEEDS) \
		--out $(RUNS)/bench-trees$(if $(FAST),-fast)/faster_rcnn --title "Faster R-CNN (timm resnet18, random init), \
		tree crowns: train YELL, test OSBS+SOAP$(if $(FAST), [FAST])" -- --voc_root $(TREES) --classes tree \
		--report_to none --save_models false $(FRCNN_TREES)
	$(PY) recipes/compare.py $(COMPARE_FLAGS) --script $(DETR) --presets adamw adamw-gaf adamw-gain adamw-clip-gain adamw-agc adamw-zclip adamw-gc --also-vs adamw-gain \
		--seeds $(TREE_SEEDS) --out $(RUNS)/bench-trees$(if $(FAST),-fast)/detr --title "tiny RT-DETR (random \
		init), tree crowns: train YELL, test OSBS+SOAP$(if $(FAST), [FAST])" -- --voc_root $(TREES) --classes tree \
		--report_to none --save_models false $(DETR_TREES)

bench-spikes: install  ## CPU: gradient spikes (x100 on 3 steps) in a tiny RT-DETR and Faster R-CNN, each treatment vs the baseline with and without spikes, 3 seeds: divergences and mAP (26 min on 2 cores)
	$(PY) recipes/bench_spikes.py --out $(RUNS)/bench-spikes $(COMPARE_FLAGS)

# --- the newcomer's demo --------------------------------------------------------------------------------
demo: install  ## CPU: digits, synthetic VOC (RT-DETR) and real tree crowns (Faster R-CNN), GAF vs baseline and the gain control, plots, summary (9.2 min on 2 cores from a fresh clone)
	$(VENV)/bin/hf-gaf demo $(OVERWRITE_FLAG) --out $(RUNS)/demo
