# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.eqbench-installed

.PHONY: demo test install lint clean bench-peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned through constraints.txt, so that no other
# requirement can pull a CUDA build; the extras give the tests tblite, submitit, psycopg2, qm9pack (real QM9)
# and pytest.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q --upgrade pip
	@if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/python -m pip install -q -c constraints.txt torch; fi
	$(BIN)/python -m pip freeze | grep -i '^torch==' > $(VENV)/torch-pin.txt
	$(BIN)/python -m pip install -q -c $(VENV)/torch-pin.txt -e '.[xtb,slurm,postgres,qm9,dev]'
	touch $(STAMP)

install: $(STAMP)

# The quickstart ablation sweep (SchNet vs PaiNN vs PaiNN without vector features, parameter-matched,
# 2 seeds, ~5 minutes on 2 cores; resumes where it stopped when run again), then its report:
# reports/quickstart/index.md with the table (printed here), the profile plot and the learning curves.
demo: $(STAMP)
	$(BIN)/eqbench sweep run sweeps/quickstart.yaml --workers 2
	$(BIN)/eqbench report sweeps/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# Benchmark peers (eqbench never imports them): for `eqbench bench` and the weight-transfer tests, which
# skip without them. schnetpack 2.1.1 pins sympy<=1.12, which torch 2.13 cannot use: it is installed
# without its dependencies, which are then installed by hand.
bench-peers: $(STAMP)
	$(BIN)/python -m pip install -q -c $(VENV)/torch-pin.txt torch-geometric==2.7.0 so3krates-torch==0.2.1
	$(BIN)/python -m pip install -q --no-deps schnetpack==2.1.1
	$(BIN)/python -m pip install -q -c $(VENV)/torch-pin.txt hydra-core dirsync fasteners tensorboardX matscipy

lint: $(STAMP)
	$(BIN)/ruff check eqbench tests

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
