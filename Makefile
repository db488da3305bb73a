# Deep Learning for Computer Vision, Part 3 — build everything from solutions/ and book/.
#   make course     venv + student release + autograder bundle + book   (the main job)
#   make test       the whole test suite          make test-fast   without the slow tests
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
# The released assignments, from their manifests (autograder/manifests/<id>.toml); drafts are skipped.
ASSIGNMENTS = $(shell test -x $(PY) && $(PY) -m autograder list)
JOBS        ?= 2

.PHONY: help venv grading-deps secret system-deps course release autograder-bundle book test test-fast bench lock clean publish

help:
	@echo "make course            create .venv, set up grading (bubblewrap, course secret), the student release, the autograder bundles and the book"
	@echo "make secret [NEW=1]    create (NEW=1: replace, for a new term) the course secret the evaluation sets come from"
	@echo "make test              run the whole test suite (creates .venv if needed)"
	@echo "make test-fast         the suite without tests marked slow"
	@echo "make release           regenerate assignments/ from solutions/ (nbgrader)"
	@echo "make autograder-bundle build the Gradescope autograder zips into dist/"
	@echo "make book              build the Jupyter Book into book/_build/html"
	@echo "make publish           write the public repository into build/public (PREVIEW=1: despite placeholders)"
	@echo "make bench             run the benchmarks (not part of make test)"
	@echo "assignments: $(ASSIGNMENTS)"

# The virtual environment is (re)installed only when the pins change.
$(STAMP): pyproject.toml requirements-lock.txt
	@echo "==> creating $(VENV) and installing the pinned environment (about 2 minutes the first time)"
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --upgrade --disable-pip-version-check "pip>=23" >/dev/null
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -c requirements-lock.txt -e ".[course]"
	$(PY) -c "import torch, torchvision; from torchvision.ops import nms; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ops ok')"
	@touch $@

venv: $(STAMP)

# Grading needs bubblewrap (the worker's sandbox; without it grading refuses) and a course secret (the evaluation
# sets are derived from it; kept out of git). Installed/created here; `python -m autograder sandbox` says what holds.
grading-deps: venv
	@if ! command -v bwrap >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "==> installing bubblewrap (the grading sandbox)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
		else echo "note: bubblewrap is missing and cannot be installed from here (not root, or no apt-get): grading will refuse until \`sudo apt-get install bubblewrap\`"; fi; \
	fi
	@$(PY) -m autograder secret
	@echo "==> grading sandbox: $$($(PY) -m autograder sandbox | head -n 3)"

secret: venv
	$(PY) -m autograder secret $(if $(NEW),--new,)

# Debian packages the tests use: bubblewrap (grading sandbox), Chromium and CJK fonts (browser check).
# Installed when running as root with apt-get; elsewhere grading refuses and the browser check is skipped,
# both with a message.
SYSTEM_PACKAGES := bubblewrap chromium fonts-noto-cjk
system-deps: grading-deps
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "==> installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "note: missing$$missing (install them for the full sandbox and the browser check)"; fi

course: venv grading-deps release autograder-bundle book
	@echo "==> course built: assignments/, dist/autograder-*.zip, book/_build/html"

release: venv
	@echo "==> generating the student release for: $(ASSIGNMENTS)"
	$(PY) -m autograder release $(ASSIGNMENTS)

autograder-bundle: venv grading-deps
	@echo "==> building Gradescope autograder bundles"
	@for a in $(ASSIGNMENTS); do $(PY) -m autograder bundle --assignment $$a --out dist/autograder-$$a.zip; done

# Warnings (broken references, failed cells) fail the build; notebook execution is cached.
book: venv
	@echo "==> building the book (cached execution; the first build executes every page, about 2-3 minutes)"
	@start=$$(date +%s); \
	$(PY) book/_ext/sync_sources.py && \
	$(VENV)/bin/jupyter-book build book --warningiserror --keep-going; \
	echo "==> book built in $$(( $$(date +%s) - start )) s: book/_build/html/index.html"

# The public repository (book with its Pages workflow, releases, student package `lecture_utils`,
# README, LICENSE) in $(PUBLIC); its .git is kept. Refuses while lecture_utils/config.py holds the
# template's placeholders (organisation, Gradescope course) unless PREVIEW=1.
PUBLIC ?= build/public
publish: release
	$(PY) book/_ext/sync_sources.py
	$(PY) -m autograder.publish --out $(PUBLIC) $(if $(PREVIEW),--preview)

# The suites check the built book (links, leaks, browser), so the book is built first (cached).
test: venv system-deps book
	$(PY) -m pytest -n $(JOBS)

test-fast: venv system-deps book
	$(PY) -m pytest -n $(JOBS) -m "not slow"

# Each script prints its table and writes benchmarks/results/<name>.{json,md}; the README collects them.
bench: venv
	@for b in benchmarks/bench_*.py; do echo "==> $$b"; $(PY) $$b; done
	@{ cat benchmarks/README.header.md; for t in benchmarks/results/*.md; do echo; cat $$t; done; } > benchmarks/README.md
	@echo "==> benchmarks/README.md updated"

lock: venv
	head -n 2 requirements-lock.txt > requirements-lock.txt.new
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' >> requirements-lock.txt.new
	mv requirements-lock.txt.new requirements-lock.txt

clean:
	rm -rf book/_build dist .pytest_cache

# The README's screenshots of the TA tools (class report, similarity page), rendered by headless Chromium.
.PHONY: ta-screenshots
ta-screenshots: venv
	$(PY) benchmarks/ta_screenshots.py
