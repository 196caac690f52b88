# Set-up and the main commands. `make figures` and `make test` create .venv
# from the pinned requirements first when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup figures test clean bench test-slurm lint

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -c "import transformer_lens, curvlinops, snakemake, cv2"
	touch $@

figures: setup
	$(BIN)/snakemake --cores $(CORES) --configfile presets/quick.yaml

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check Snakefile workflow/rules

# Removes the quick preset's outputs only; the paper's results/ stay.
clean:
	rm -rf results/quick figures/quick

# Times the notebook's method against the workflow's growth job (not a test).
bench: setup
	$(BIN)/python bench/run_benchmark.py

# Runs a tiny preset through a real one-node SLURM cluster on localhost.
test-slurm: setup
	bash tests/slurm/run_slurm_test.sh
