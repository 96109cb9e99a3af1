# The two commands of the README. Both set up first (idempotent).
.PHONY: setup run test lint

setup:
	@bash scripts/setup.sh

# Main job: train the main model (preset small, dense cross-attention wiring) on bible:es-en for 30 minutes, then
# print test BLEU (beam 4); dropout and batch size as measured best for this machine's training precision.
run: setup
	bash scripts/main_job.sh

# The main suite, then its bf16 leg: the bf16 tests again with precision auto forced to bf16, so a
# CPU without native bf16 (where the main suite skips them) still exercises that path.
test: setup
	@lscpu | grep 'Model name' || true
	@echo "native bf16: $$(grep -o -m1 -E 'avx512_bf16|amx_bf16' /proc/cpuinfo || echo none)"
	.venv/bin/python -m pytest
	ENCDEC_FORCE_PRECISION=bf16 .venv/bin/python -m pytest -m bf16

lint: setup
	.venv/bin/ruff check src tests
