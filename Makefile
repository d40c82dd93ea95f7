.PHONY: run test lint bench clean

# Set up and run the platform on embedded defaults (no PostgreSQL, Redis or cloud needed).
run:
	bash scripts/run.sh

# Set up and run the whole suite on real PostgreSQL and Redis (started when not running), ruff and mypy.
test:
	bash scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/mypy rtv ingestion quality features modelling

bench:
	bash scripts/bench.sh

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
