# Two entry points, each making and using .venv itself:
#   make report   the default CPU sweep and its report, into reports/cpu
#   make test     the test suite
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test report lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest ran no test" >&2; exit 1; fi; exit $$rc

report: $(STAMP)
	$(BIN)/python -m harness models

lint: $(STAMP)
	$(BIN)/ruff check harness benchmarks tests
	$(BIN)/ruff format --check harness benchmarks tests

format: $(STAMP)
	$(BIN)/ruff format harness benchmarks tests
	$(BIN)/ruff check --fix harness benchmarks tests

clean:
	rm -rf $(VENV) .asv
