# `make test` is the project's test command (README, .ci/run): unit tests, notebook pairs, the whole book.
PY ?= python
export MMVAE_LITE_PROGRESS ?= 0
# The book downloads its data like a fresh machine: into $MMVAE_LITE_DATA if set, else ~/.cache/mmvae_lite.
# Where a mirror of the data directory sits beside the checkout (this project's CI: ../shared/data), the
# build starts from an EMPTY data directory under _build/ and fills it through the loaders' own download
# path, served over 127.0.0.1 by data_prep.serve_mirror ($MMVAE_LITE_MIRROR): a missing download step
# fails the build instead of hiding behind files that happen to be there.
MIRROR_DIR ?= $(abspath ../shared/data)
BOOK_DATA := $(abspath _build/data)
ifneq ($(wildcard $(MIRROR_DIR)/MNIST/raw),)
BOOK_ENV := MMVAE_LITE_DATA=$(BOOK_DATA) MMVAE_LITE_CACHE=$(abspath _build/cache)
BOOK_RUN := $(PY) -m data_prep.serve_mirror --dir $(MIRROR_DIR) --
endif

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
ifdef BOOK_RUN
	rm -rf $(BOOK_DATA) && mkdir -p $(BOOK_DATA)
endif
	$(BOOK_ENV) $(BOOK_RUN) jupyter-book build book/ -W --keep-going

# The built book as a reader gets it: every page in headless Chromium, offline (math typeset, images
# loaded, links resolve, launch/download buttons, no machine paths); screenshots in
# _build/html/_screenshots/. Needs chromium + chromedriver (Debian: chromium chromium-driver).
browser:
	$(PY) tools/check_book.py browser _build/html

clean:
	rm -rf book/_build _build
