# The two commands: `make test` and `make demo` set everything up, then run.
VENV := .venv
PYTHON := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-done
XVFB := xvfb-run -a -s "-screen 0 1280x1024x24"

.PHONY: setup test demo clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml scripts/install-system-deps.sh
	./scripts/install-system-deps.sh
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[test]"
	touch $(SETUP_STAMP)

test: setup
	$(XVFB) $(PYTHON) -m pytest

demo: setup
	$(XVFB) $(VENV)/bin/perfroi demo --out demo_output

clean:
	rm -rf $(VENV) demo_output build dist
