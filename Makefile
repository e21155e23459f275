# `make demo` and `make test` each create the virtual environment they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test sklearn-checks docs lint format bench clean

# Installing: uv (pinned in requirements/ci.txt) puts the environment in place in about 10 s
# where pip takes 84 s (measured on 2 cores); pip is the fallback where uv can't be had. uv
# reads no pip configuration, so pip's find-links (where a machine keeps wheels, such as this
# one's CPU build of torch) are passed on. Nothing is byte-compiled ahead: Python compiles
# what it imports, once, as it imports it (6,500 of the environment's 19,000 modules in
# `make test`) -- also where the environment says PYTHONDONTWRITEBYTECODE, which would have
# every test process compile torch again (9 s against 5 s per import of the study's modules).
FIND_LINKS := $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^.*find-links='\(.*\)'$$/\1/p" | sort -u)
export PYTHONDONTWRITEBYTECODE :=

$(STAMP): pyproject.toml requirements/ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements/ci.txt uv \
	  && $(BIN)/uv pip install --quiet --python $(BIN)/python $(addprefix --find-links ,$(FIND_LINKS)) \
	    -c requirements/ci.txt -e ".[dev]" \
	  || $(BIN)/python -m pip install --quiet --no-compile -c requirements/ci.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# the main job: compare no penalty / L1 / L2 / elastic net / group lasso on the
# bundled diabetes data; prints the table and writes shrinkage-study/report.html
demo: $(STAMP)
	$(BIN)/shrinkage study --dataset diabetes --out shrinkage-study

# the suite (all but the tests marked slow) on TEST_WORKERS processes (pytest-xdist); the
# tests of one shared fixture stay on one worker (--dist loadgroup). pytest's exit code 5
# (no tests) fails. mypy (a minute on one core, from a fresh clone) runs beside the suite,
# its report printed after it; either failing fails the target.
TEST_WORKERS ?= 2

test: $(STAMP)
	scripts/ensure-chromium
	$(BIN)/ruff check src tests benchmarks examples
	@$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & mypy=$$!; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup; tests=$$?; \
	wait $$mypy; typed=$$?; echo "mypy:"; cat $(VENV)/mypy.log; \
	test $$tests -eq 0 && test $$typed -eq 0

# scikit-learn's estimator checks on the CV estimators at their default settings, alone
# (`make test` runs them with the rest: 2 to 2.7 min of it on 2 cores)
sklearn-checks: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) tests/test_estimators.py -k cv_estimators_at_their_defaults

# the documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or
# reference, or a docstring it cannot read, fails the build (tests/test_docs.py builds
# it too, so `make test` covers it)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site shrinkage-study
