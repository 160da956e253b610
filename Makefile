# Two commands on a fresh machine: `make demo` (locate a real divergence in a
# bundled sample) and `make test` (the whole suite, what CI runs). Both create .venv first.
# `make test-fast` is the tier to run after every change (tests not marked slow).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv samples clean bench fleet

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,ray,bench,explorer,keras,transforms,zoo,diffusers,monai]'
	@command -v dot >/dev/null || test -x $(BIN)/graphviz-pure || echo "note: graphviz 'dot' is missing: apt-get install -y graphviz (graph.svg falls back to graph.dot)"
	touch $(STAMP)

venv: $(STAMP)

samples: $(STAMP)
	$(BIN)/python samples/build.py samples/build

# The sample diverges on purpose, only at masked positions: with --strict-masked, exit code 1
# (divergence found) is the demo's success (without it such a divergence exits 0).
demo: samples
	$(BIN)/nodebisect locate samples/build/SdpaFullyMaskedRow.pt2 --strict-masked --report nodebisect-out/SdpaFullyMaskedRow; test $$? -eq 1

# The whole suite, Ray included, each property test at its full Hypothesis count, on two
# pytest-xdist workers (the Ray tests kept together on one of them: tests/conftest.py).
test: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=25 tests

# Everything not marked slow, Hypothesis at 25 examples a test, on two pytest-xdist workers (one per core).
test-fast: $(STAMP)
	HYPOTHESIS_PROFILE=dev $(BIN)/python -m pytest -q -n 2 -m "not slow" --durations=25 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_locate.py

# Every --zoo family through `nodebisect sweep` (hours on 2 cores), the table written to benchmarks/fleet/.
# A partial run: make fleet FLEET_ARGS="--limit 5". An interrupted one continues where it stopped.
fleet: $(STAMP)
	$(BIN)/python benchmarks/fleet.py $(FLEET_ARGS)

clean:
	rm -rf $(VENV) samples/build nodebisect-out
