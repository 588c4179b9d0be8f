# Two entry points, each making and using .venv itself:
#   make report   the default CPU sweep and its report, into reports/cpu
#   make test     the test suite
# and the jobs whose committed results the report also reads: make peers, make solvers,
# make checks, make fit, make conditional; make compile has a report of its own.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c  # a job piped into tee fails when the job fails
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# each job's wall time, commit and load, into reports/timing.json (the README's commands block)
TIMED = $(BIN)/python -m harness.timing

.PHONY: venv kernels startup test test-fast test-jax test-timed report peers solvers checks fit conditional compile report-gpu asv-quick example lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile -c constraints.txt -e '.[dev,peers,jax]'
	@# pip compiles the packages' bytecode one file at a time (about 45 of a fresh venv's 65 s);
	@# compileall does it on every core (about 20 s). Without it, every process (this machine
	@# sets PYTHONDONTWRITEBYTECODE) would compile torch's modules on each import.
	$(BIN)/python -m compileall -q -j 0 -x '/torch/testing/_internal/py312' $(VENV)/lib
	touch $(STAMP)

venv: $(STAMP)

# pytest exits 5 when it collected no test: that is a failure here, not a pass. Three
# workers (pytest-xdist) share the suite, more than the two cores, because much of it
# waits on subprocesses, sleeps and deadlines; a module's tests go to one worker
# (loadscope), so a module-scoped fixture (a rendered report, a git repository, a copied
# harness) is built once. The modules go out longest first (tests/seconds.json, from the
# last `make test-timed`; tests/conftest.py), not by their count of tests, so no worker
# ends with a long module alone. PYTEST_ARGS= runs it in one process.
PYTEST_ARGS ?= -n 3 --dist loadscope --no-loadscope-reorder
# pytest with its arguments; its exit 5 (no test collected) made a failure
PYTEST = rc=0; $(BIN)/python -m pytest $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest ran no test" >&2; exit 1; fi; exit $$rc
# The numba kernels compiled into their on-disk cache once, before the workers start:
# on a fresh clone each worker and each process it starts would compile them again.
kernels: $(STAMP)
	@$(BIN)/python -m harness.models.warm

# --help, models and readme --check timed as whole commands (five runs each), into reports/timing.json
startup: $(STAMP)
	$(BIN)/python -m harness.timing startup

test: kernels
	@$(call PYTEST,$(PYTEST_ARGS) -m "not jax")

# The inner loop, about a minute: every test but those marked slow (they start processes,
# measure or draw for seconds); make test runs them all.
test-fast: kernels
	@$(call PYTEST,$(PYTEST_ARGS) -m "not slow and not jax")

# The JAX peers' adapters (tests/test_jax.py, marked jax): XLA compiles for seconds per op
# and shape on every core, past make test's four minutes; CI runs it after make test.
test-jax: $(STAMP)
	@$(call PYTEST,-q -m jax tests/test_jax.py)

# make test, its wall time and load recorded in reports/timing.json (the README's commands block)
test-timed: $(STAMP)
	$(TIMED) start make test
	$(MAKE) test PYTEST_ARGS="$(PYTEST_ARGS) --record-seconds"
	$(TIMED) end make test
	$(BIN)/python -m harness readme

# The main job: the default CPU sweep (all models, d = 2..256, log_prob, sample with the
# default solver and train_step, batch 1024, 1 thread; the reference solvers where they
# fit a 10 s budget) and the report. The report also reads what the other targets left
# committed: the peers and contests (make peers), the solver A/B (make solvers), the
# correctness checks (make checks) and the fit (make fit). The default grid is measured
# whatever the load; the budget cuts only reference solvers. A new run moves what the
# earlier one left aside into reports/cpu/previous/ (--fresh); after an interruption,
# `make report SWEEP_ARGS=--resume` keeps the rows already measured.
SWEEP_ARGS ?= --fresh
SOURCES = reports/cpu reports/cpu/peers reports/cpu/solvers reports/cpu/checks reports/cpu/fit reports/cpu/conditional reports/cpu/conditional/fit
report: $(STAMP)
	$(TIMED) start make report
	$(BIN)/python -m harness sweep --device cpu --budget 10 --out reports/cpu $(SWEEP_ARGS)
	$(BIN)/python -m harness paper-table --out reports/cpu > /dev/null
	$(BIN)/python -m harness report $(SOURCES) --out reports/cpu
	mkdir -p reports/cpu/quick
	$(BIN)/python -m harness sweep --quick --device cpu --models maf,bnaf --solvers default --no-progress --fresh --out /tmp/quick > reports/cpu/quick/output.txt
	$(TIMED) end make report
	$(BIN)/python -m harness readme

# The peers at matched shapes (d = 8, 32, 128) where they fit a 10 s budget, and the A/B
# contests of ours against them (reports/cpu/peers), then the report.
peers: $(STAMP)
	$(TIMED) start make peers
	$(BIN)/python -m harness sweep --device cpu --models peers --dims 8,32,128 --budget 10 --out reports/cpu/peers $(SWEEP_ARGS)
	$(BIN)/python -m harness versus --out reports/cpu/peers
	$(TIMED) end make peers
	$(BIN)/python -m harness report $(SOURCES) --out reports/cpu
	$(BIN)/python -m harness readme

# Conditional flows at the shapes of simulation-based inference (sbibm's tasks: 2 to 10
# parameters, contexts of up to 100 features, 10,000 posterior draws per observation):
# every flow that takes a context (ours, zuko's and nflows') at d = 2, 4, 10 with
# contexts of 0 (itself, unconditional), 8, 32 and 100 features, 10,000 (x, c) pairs per
# log_prob and training step and 10,000 draws for one context per sample, into
# reports/cpu/conditional; then each conditional flow fitted to sbibm's gaussian_linear
# (theta 10, x 10; an exact posterior) with seeds 0, 1, 2, at most 20 s each, judged at
# five fixed observations (reports/cpu/conditional/fit); then the A/B contests at sbibm's
# shapes (theta 2 and 10, contexts 10 and 100), every contender conditioned alike, 15
# interleaved rounds each (reports/cpu/conditional/versus.csv).
CONDITIONAL = made,maf,iaf,nsf,naf,bnaf,zuko.maf,zuko.nsf,zuko.naf,nflows.maf,nflows.nsf,sbi.maf
conditional: $(STAMP)
	$(TIMED) start make conditional
	$(BIN)/python -m harness sweep --device cpu --models $(CONDITIONAL) --dims 2,4,10 --context 0,10,32,100 --batch 10000 --solvers default --budget 10 --out reports/cpu/conditional $(SWEEP_ARGS)
	mkdir -p reports/cpu/conditional/fit
	$(BIN)/python -m harness fit --models $(CONDITIONAL) --data gaussian_linear --wall 20 --out reports/cpu/conditional/fit $(SWEEP_ARGS) | tee reports/cpu/conditional/fit/output.txt
	$(BIN)/python -m harness versus --contests maf.log_prob,maf.sample,naf.log_prob,nsf.log_prob,nsf.sample --dims 2,10 --context 10,100 --batch 10000 --rounds 15 --min-rounds 15 --no-naf --frameworks torch --out reports/cpu/conditional
	$(TIMED) end make conditional
	$(BIN)/python -m harness report $(SOURCES) --out reports/cpu
	$(BIN)/python -m harness readme

# Every slow-direction solver against its family's reference, interleaved, at d = 32 and
# 256 (NSF at 32 and 128: its fixed-point solve at 256 is ~2 min a call), into
# reports/cpu/solvers, then the report.
solvers: $(STAMP)
	$(TIMED) start make solvers
	$(BIN)/python -m harness solvers --models maf,iaf,naf,bnaf --dims 32,256 --rounds 5 --max-call-s 4 --out reports/cpu/solvers
	$(BIN)/python -m harness solvers --models nsf --dims 32,128 --rounds 5 --max-call-s 4 --out reports/cpu/solvers --resume
	$(TIMED) end make solvers
	$(BIN)/python -m harness report $(SOURCES) --out reports/cpu
	$(BIN)/python -m harness readme

# The correctness checks of every model and peer (reports/cpu/checks), then the report.
checks: $(STAMP)
	mkdir -p reports/cpu/checks
	$(TIMED) start make checks
	$(BIN)/python -m harness check all --out reports/cpu/checks --exit-zero > reports/cpu/checks/checks.txt
	$(TIMED) end make checks
	$(BIN)/python -m harness report $(SOURCES) --out reports/cpu
	$(BIN)/python -m harness readme

# The default fit (every model on the four toys and digits, seeds 0, 1 and 2, at most
# 30 s and 4000 steps per fit: at most 38 minutes of training), then the report again.
# Its own target: `make report` reads the committed reports/cpu/fit.
fit: $(STAMP)
	mkdir -p reports/cpu/fit
	$(TIMED) start make fit
	$(BIN)/python -m harness fit --out reports/cpu/fit $(SWEEP_ARGS) | tee reports/cpu/fit/output.txt
	$(TIMED) end make fit
	$(BIN)/python -m harness report $(SOURCES) --out reports/cpu
	$(BIN)/python -m harness readme

# Does compiling pay? Our models at d = 16 and 64, each direction eager, as the numba loop
# (where one exists) and under torch.compile, timed in the same interleaved rounds, with
# the seconds compiling took; its own report in reports/cpu/compile. torch.compile of a
# d-step loop can take minutes: --compile-limit bounds each configuration.
compile: $(STAMP)
	$(TIMED) start make compile
	$(BIN)/python -m harness sweep --device cpu --dims 16,64 --ops log_prob,sample --solvers default --backends eager,numba,compile --compile-limit 300 --budget 20 --out reports/cpu/compile $(SWEEP_ARGS)
	$(TIMED) end make compile
	$(BIN)/python -m harness report reports/cpu/compile --out reports/cpu/compile
	$(BIN)/python -m harness readme

# The same on a GPU machine, with larger dims and batches (bring your own CUDA torch).
# FLOPs do not depend on the device: reports/cpu counts them.
GPU_SWEEP = --device cuda --dims 2,4,8,16,32,64,128,256,512,1024 --batch 1024,16384 --solvers all --no-flops
report-gpu: $(STAMP)
	$(BIN)/python -m harness sweep $(GPU_SWEEP) --out reports/gpu $(SWEEP_ARGS)
	$(BIN)/python -m harness report reports/gpu reports/cpu --out reports/gpu

# asv's development loop: this checkout's code in .venv, one quick pass of the
# log_prob benchmarks, saved under the current commit (asv's --python=same saves
# nothing without --set-commit-hash), ready for `harness asv-table` and `harness report`.
ASV_BENCH ?= time_log_prob
asv-quick: $(STAMP)
	$(BIN)/asv machine --yes > /dev/null
	$(BIN)/asv run --python=same --quick --record-samples --set-commit-hash $$(git rev-parse HEAD) --bench '$(ASV_BENCH)'

# The README's "Benchmark your own flow", end to end: check, quick sweep beside MAF, a
# contest against MAF sampling, and a report (CI runs it).
example: $(STAMP)
	@set -e; out=$$(mktemp -d); set -x; \
	$(BIN)/python -m harness check examples.linear_flow:make --out $$out; \
	$(BIN)/python -m harness sweep --models examples.linear_flow:make,maf --quick --device cpu --no-progress --out $$out; \
	$(BIN)/python -m harness versus --contest examples.linear_flow:make=maf.sample --dims 8 --no-naf --rounds 5 --out $$out; \
	$(BIN)/python -m harness report $$out --out $$out; \
	grep -q "examples.linear_flow:make" $$out/REPORT.md

lint: $(STAMP)
	$(BIN)/ruff check harness benchmarks tests examples
	$(BIN)/ruff format --check harness benchmarks tests examples

format: $(STAMP)
	$(BIN)/ruff format harness benchmarks tests examples
	$(BIN)/ruff check --fix harness benchmarks tests examples

clean:
	rm -rf $(VENV) .asv
