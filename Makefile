# The two commands of the README: `make demo` and `make test`.
# Both create .venv when it is missing: CPU torch first (the local 2.13.0 wheel), then the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= demo

.PHONY: venv demo book check-book test test-slow test-all clean-demo lab

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(VENV)/.installed

# every notebook of profiles/$(PROFILE).yml through papermill into book/notebooks/, then the book
demo: venv
	$(PY) -m synth7t.cli run-profile $(PROFILE)
	$(PY) -m synth7t.cli book

# the book from the executed notebooks already in book/notebooks/ (warnings are errors)
book: venv
	$(PY) -m synth7t.cli book

# build, then open the front page and every chapter in headless Chromium (apt-get install chromium chromium-driver)
check-book: venv
	$(PY) -m synth7t.cli book --browser

# two pytest workers with one thread each (small CPU tests use a second thread poorly; two workers of two threads
# would oversubscribe the cores); each test file stays in one worker, so a file's shared fixtures are built once
test: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile

# JupyterLab on notebooks/; its kernels start in the repository root, as papermill's, so that the notebooks'
# relative paths (data/demo, runs) mean the same (LAB_OPTS: e.g. --no-browser --port 8889; as root, as in a
# container, --allow-root is added)
lab: venv
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR)/notebooks --MappingKernelManager.root_dir=$(CURDIR) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_OPTS)

# the tests marked slow, alone (one process: notebook 01's smoke run, deepbet against the truth, the lone-3T template
# alignment, inductor's C++ code generation, the atlas on a full-size subject, the 3T/7T edge widths at the paper's
# voxels, the README's lone-3T command with every kind of demo model; 9.8 min from a fresh clone on 2026-12-03)
test-slow: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -m slow

# everything: the quick suite, then the slow tests (what CI runs)
test-all: venv
	$(MAKE) test
	$(MAKE) test-slow

clean-demo:
	rm -rf data/demo runs/demo book/notebooks _build
