# normtext: `make book` builds the book, `make test` runs every test.
# Both create the virtual environment from requirements.txt first, when it is
# missing or older than requirements.txt / pyproject.toml.

PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# Results of long training runs are cached here, keyed by configuration and code.
export NORMTEXT_CACHE ?= $(CURDIR)/_build/normtext-cache
export PYTHONHASHSEED = 0

.PHONY: book test unit notebooks quick-book browser-test clean env

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

# The book with the full experiments, every notebook executed (cached by jupyter-cache).
book: $(STAMP)
	$(BIN)/jupyter-book build . -W --keep-going

# The book with the quick experiments (NORMTEXT_QUICK=1), as CI builds it.
quick-book: $(STAMP)
	NORMTEXT_QUICK=1 $(BIN)/jupyter-book build . -W --keep-going

# Unit tests plus every notebook run by nbval, in quick mode.
test: $(STAMP)
	NORMTEXT_QUICK=1 $(BIN)/python -m pytest tests book --nbval-lax --nbval-current-env -p no:randomly -q

# The built book as a reader sees it: every page in headless Chromium (Debian's
# package chromium, driven by Playwright; nothing downloaded). Needs a built book.
browser-test: $(STAMP)
	NORMTEXT_BROWSER_TEST=1 $(BIN)/python -m pytest tests/browser -q -p no:randomly

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

clean:
	rm -rf _build
