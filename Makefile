# `make test` is the project's test command (README, .ci/run): unit tests, notebook pairs, the whole book.
PY ?= python
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/SHA256SUMS),)
export MMVAE_LITE_DATA ?= $(SHARED_DATA)
endif
export MMVAE_LITE_PROGRESS ?= 0

.PHONY: setup test unit pairs book browser clean
setup:
	$(PY) -m pip install -r requirements.txt

test: unit pairs book browser

unit:
	$(PY) -m pytest -q --durations=10

# Each chapter is MyST markdown (the source) paired with an output-free .ipynb for Colab.
pairs:
	jupytext --quiet --to ipynb --update book/[0-9]*.md
	git diff --exit-code --stat -- book/ || (echo "book/*.ipynb out of sync with book/*.md: run 'make pairs' and commit" && exit 1)

book:
	$(PY) tools/check_book.py sources
	jupyter-book build book/ -W --keep-going

# The built book as a reader gets it: every page in headless Chromium, offline (math typeset, images
# loaded, links resolve, launch/download buttons, no machine paths); screenshots in
# _build/html/_screenshots/. Needs chromium + chromedriver (Debian: chromium chromium-driver).
browser:
	$(PY) tools/check_book.py browser _build/html

clean:
	rm -rf book/_build _build
