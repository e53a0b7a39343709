# normtext: `make book` builds the book, `make test` runs every test.
# Both create the virtual environment from requirements.txt first, when it is
# missing or older than requirements.txt / pyproject.toml.

PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# The book's source folder (tests/test_packaging.py builds a one-notebook book with these targets).
BOOK   ?= .
# Each build mode has its own folder, hence its own jupyter-cache and doctrees:
# a full build never reuses the outputs of a quick one, nor the reverse.
FULL_HTML  = $(BOOK)/_build/html
QUICK_OUT  = $(BOOK)/_build/quick
QUICK_HTML = $(QUICK_OUT)/_build/html
# The browser test opens the book built last (quick or full), unless told which.
BOOK_HTML ?= $(patsubst %/index.html,%,$(firstword $(shell ls -t $(FULL_HTML)/index.html $(QUICK_HTML)/index.html 2>/dev/null) $(FULL_HTML)/index.html))
# Results of long training runs are cached here, keyed by configuration and code.
export NORMTEXT_CACHE ?= $(CURDIR)/_build/normtext-cache
export PYTHONHASHSEED = 0

.PHONY: book test unit notebooks quick-book page browser-test clean env current-stack \
        current-stack-env current-stack-tests mutation

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

# The book with the full experiments, every notebook executed (cached by jupyter-cache
# in _build/.jupyter_cache), into _build/html.
book: $(STAMP)
	NORMTEXT_QUICK=0 NORMTEXT_JUPYTER_CACHE=$(abspath $(BOOK))/_build/.jupyter_cache \
	    $(BIN)/jupyter-book build $(BOOK) -W --keep-going

# The book with the quick experiments (NORMTEXT_QUICK=1), as CI builds it, in its
# own folder: _build/quick/_build/html, with its own cache beside it.
# (NORMTEXT_JUPYTER_CACHE tells book/how-built.md which cache to read.)
quick-book: $(STAMP)
	NORMTEXT_QUICK=1 NORMTEXT_JUPYTER_CACHE=$(abspath $(QUICK_OUT))/_build/.jupyter_cache \
	    $(BIN)/jupyter-book build $(BOOK) --path-output $(QUICK_OUT) -W --keep-going

# One chapter alone, quick experiments, to read and measure while writing it:
# `make page PAGE=layer-norm` builds the introduction and book/layer-norm into
# _build/pages/layer-norm/_build/html (its own execution cache; links to the other
# chapters dangle there, so no -W), then `make browser-test BOOK_HTML=...` reads it.
PAGE ?= intro
PAGE_OUT = $(BOOK)/_build/pages/$(PAGE)
page: $(STAMP)
	mkdir -p $(PAGE_OUT)
	printf 'format: jb-book\nroot: book/intro\nchapters:\n  - file: book/%s\n' $(PAGE) > $(PAGE_OUT)/_toc.yml
	NORMTEXT_QUICK=1 NORMTEXT_JUPYTER_CACHE=$(abspath $(PAGE_OUT))/_build/.jupyter_cache \
	    $(BIN)/jupyter-book build $(BOOK) --toc $(PAGE_OUT)/_toc.yml --path-output $(PAGE_OUT) --keep-going
	@echo "built $(PAGE_OUT)/_build/html/book/$(PAGE).html"

# Unit tests plus every notebook run by nbval, in quick mode.
test: $(STAMP)
	NORMTEXT_QUICK=1 $(BIN)/python -m pytest tests book --nbval-lax --nbval-current-env -p no:randomly -q

# The built book as a reader sees it: every page in headless Chromium (Debian's
# package chromium, driven by Playwright; nothing downloaded). Needs a built book.
browser-test: $(STAMP)
	@echo "browser test of $(BOOK_HTML)"
	NORMTEXT_BROWSER_TEST=1 NORMTEXT_HTML_DIR=$(BOOK_HTML) $(BIN)/python -m pytest tests/browser -q -p no:randomly
	cat $(BOOK_HTML)/../screenshots/browser-report.txt

# The package as a reader installs it on a current stack (CI's second stage): a fresh
# Python 3.13 venv, the newest numpy 2 and torch pip takes there, `pip install .[data,test]`
# (ranges from pyproject.toml, no pins, no MXNet); the unit tests of the installed package
# (MXNet tests skip with their reason) and one chapter under nbval, in quick mode.
PYTHON_CURRENT ?= python3.13
VENV_CURRENT   ?= .venv313
CHAPTER_CURRENT ?= book/layer-norm.ipynb
# The NumPy and PyTorch floors, the testing harness and the packaging (tools, distributed
# runs, experiments and program transforms run in the book's stage only).
TESTS_CURRENT = $(addprefix tests/test_,$(addsuffix .py,spec batch_norm layer_norm \
    instance_group_lrn more_norms unified normfree edge_cases input_checks precision \
    conventions errata compare numerics rules layout packaging batch_norm_mxnet mxnet_numerics))
current-stack: current-stack-env current-stack-tests

# (CI runs the install in the background while the book's stage runs: it is mostly downloads.)
current-stack-env:
	test -x $(VENV_CURRENT)/bin/python || $(PYTHON_CURRENT) -m venv $(VENV_CURRENT)
	$(VENV_CURRENT)/bin/python -m pip install -q --upgrade pip
	$(VENV_CURRENT)/bin/python -m pip install -q --progress-bar off --no-compile --upgrade "numpy>=2" torch ".[data,test]"

current-stack-tests:
	@# What a chapter's first cell prints here (versions, device, the note that MXNet cells skip).
	cd book && NORMTEXT_QUICK=1 $(abspath $(VENV_CURRENT))/bin/python -c "import normtext; print('normtext from', normtext.__file__); from normtext.experiments.notebook import setup; setup()"
	NORMTEXT_QUICK=1 $(VENV_CURRENT)/bin/pytest $(TESTS_CURRENT) -q -rfEsxX -p no:randomly
	NORMTEXT_QUICK=1 $(VENV_CURRENT)/bin/pytest $(CHAPTER_CURRENT) --nbval-lax --nbval-current-env -q -p no:randomly

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

# Mutation testing of the core (spec, errors, moments, the NumPy and PyTorch floors) with
# mutmut, configured in pyproject.toml ([tool.mutmut]): each mutant is one small change to
# the code, run against the tests that reach the changed function; one that no test
# notices survives. Every one of the ~6,000 mutants would take many hours here, so this is
# never part of `make test` or CI. MUTANTS=N tests a random sample of N mutants, drawn with
# random.Random(MUTATION_SEED) from the sorted names; MUTANTS=all tests every one.
# It ends with the score and the mutants no test detected; `$(BIN)/mutmut show NAME` shows one.
MUTANTS ?= 300
MUTATION_SEED ?= 0
MUTATION_JOBS ?= 2
define MUTATION_SAMPLE
import contextlib, json, pathlib, random, sys
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths
from mutmut.mutation.trampoline import set_mutant_under_test
n, seed, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
set_mutant_under_test("mutant_generation")
pathlib.Path("mutants").mkdir(exist_ok=True)
with contextlib.redirect_stdout(sys.stderr):
    copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(jobs)
names = sorted(k for meta in pathlib.Path("mutants").rglob("*.meta")
               for k in json.loads(meta.read_text())["exit_code_by_key"])
pick = names if n == "all" else sorted(random.Random(seed).sample(names, min(int(n), len(names))))
print(f"mutation: {len(pick)} of {len(names)} mutants (seed {seed})", file=sys.stderr)
pathlib.Path("mutants/sample.txt").write_text("" if n == "all" else " ".join(pick))
endef
export MUTATION_SAMPLE
# The score over the mutants run (a timeout counts as detected), and every one not detected.
define MUTATION_SUMMARY
import collections, json, pathlib
from mutmut.stats import status_by_exit_code
sample = set(pathlib.Path("mutants/sample.txt").read_text().split())
status = {k: status_by_exit_code[v] for meta in pathlib.Path("mutants").rglob("*.meta")
          for k, v in json.loads(meta.read_text())["exit_code_by_key"].items()
          if not sample or k in sample}
counts = collections.Counter(status.values())
detected = counts["killed"] + counts["timeout"]
print(f"mutation score: {detected}/{len(status)} = {detected / max(len(status), 1):.1%} detected "
      f"({dict(counts)})")
for name in sorted(k for k, s in status.items() if s not in ("killed", "timeout")):
    print(f"  {status[name]}: {name}")
endef
export MUTATION_SUMMARY

mutation: $(STAMP)
	rm -rf mutants
	NORMTEXT_QUICK=1 $(BIN)/python -c "$$MUTATION_SAMPLE" $(MUTANTS) $(MUTATION_SEED) $(MUTATION_JOBS)
	NORMTEXT_QUICK=1 $(BIN)/mutmut run --max-children $(MUTATION_JOBS) $$(cat mutants/sample.txt)
	$(BIN)/python -c "$$MUTATION_SUMMARY"

clean:
	rm -rf _build
