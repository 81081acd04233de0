# lamina: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEVICE ?= cpu

.PHONY: install demo test data bench bench-all lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

data: install
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST found in /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	     (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)); then \
	  echo "installed Debian's dataset-fashion-mnist"; \
	else $(VENV)/bin/lamina data fetch fashion-mnist; fi

demo: data
	$(VENV)/bin/lamina train fashion-mnist --recipe demo --report

test: install
	$(PY) -m pytest -q

# The speed benchmark (issue 4): lamina against the PyTorch MNIST example and Lightning, <= 15 min on 2 CPU cores.
bench: install
	$(PY) benchmarks/fashion_mnist.py --device $(DEVICE)

# Every benchmark behind a number in the READMEs.
bench-all: bench
	$(PY) benchmarks/demo.py --device $(DEVICE)
	$(PY) benchmarks/checkpoint.py
	$(PY) benchmarks/trainer_overhead.py
	$(PY) benchmarks/inspection.py
	$(PY) benchmarks/recipe_sweep.py --seeds 2 --variant "epochs=5" --variant "model.width=24"
	$(PY) benchmarks/austen_lm.py
	$(PY) benchmarks/generate_cache.py
	$(PY) benchmarks/austen_novels.py
	$(PY) benchmarks/adversarial.py --eval-n 2000 --keep runs/bench-adversarial
	$(PY) benchmarks/attacks.py --run runs/bench-adversarial/pgd
	$(PY) benchmarks/curve.py --epochs 3
	$(PY) benchmarks/energy_overhead.py
	$(PY) benchmarks/energy_check.py --device $(DEVICE)
	$(PY) benchmarks/keywords.py --data data/keywords --seeds 2
	$(VENV)/bin/lamina data fetch rrna16s
	$(PY) benchmarks/rrna16s.py
	$(PY) benchmarks/tables.py
	$(PY) benchmarks/quick_commands.py
	$(PY) benchmarks/generative.py --chain-samples 100
	$(PY) benchmarks/minatar_dqn.py --frames 300000 --seeds 0
	$(PY) benchmarks/distributed.py
	$(PY) benchmarks/scaling_model.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
