# The course's commands. Each one creates or refreshes .venv from requirements.txt first.
#   make lab         set up and open the course in JupyterLab
#   make test        set up and run the whole test suite (pytest, then strict nbval over every notebook, twice)
#   make notebooks   execute every notebook headless on CPU and rewrite its stored outputs
#   make bench       per-step time of each model's train step at the notebook scale
#   make slides | students | site | map    classroom material in build/ (map: docs/course_map.png)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
NOTEBOOKS ?= $(sort $(wildcard notebooks/*.ipynb))
NBVAL := $(BIN)/pytest --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider
export JAX_PLATFORMS ?= cpu
export PYTHONHASHSEED = 0

.PHONY: setup lab test unit nbval notebooks bench slides students site map browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

lab: setup
	$(BIN)/jupyter lab notebooks/

test: unit nbval

unit: setup browser
	$(BIN)/pytest tests -q

nbval: setup
	$(NBVAL) $(NOTEBOOKS)
	$(NBVAL) $(NOTEBOOKS)

notebooks: setup
	for nb in $(NOTEBOOKS); do \
	  start=$$(date +%s.%N); \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$$nb" --log-level=WARN \
	    --ExecutePreprocessor.timeout=600 \
	    --ExecutePreprocessor.extra_arguments="['--IPKernelApp.capture_fd_output=False']" || exit 1; \
	  echo "$$nb: $$(echo "$$(date +%s.%N) - $$start" | bc) s"; \
	done

bench: setup
	$(BIN)/python -m course bench

slides students site map: setup
	$(BIN)/python -m course.classroom $@

# Chromium and its driver from Debian's packages, for the test that opens the built site in a real browser.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  { echo "install Debian's chromium and chromium-driver (the site test needs them)"; exit 1; }

clean:
	rm -rf $(VENV) build *.egg-info
