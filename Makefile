# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.eqbench-installed

.PHONY: demo test install lint clean

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

lint: $(STAMP)
	$(BIN)/ruff check eqbench tests

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
