# The two commands of the README. Both set up first (idempotent).
.PHONY: setup run test lint

setup:
	@bash scripts/setup.sh

# Main job: train the main model (preset small, dense cross-attention wiring) on bible:es-en for 30 minutes, then print test BLEU (beam 4).
run: setup
	.venv/bin/encdec train --out runs/main --minutes 30 --set model.wiring=dense

test: setup
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check src tests
