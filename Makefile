# The two commands that matter: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo ui test lint bench mutants clean help

help:
	@echo "make demo   run the nightly pipeline on a demo shop and show what was sent"
	@echo "make ui     after make demo: Airflow's api-server with the Retention page (prints URL and login)"
	@echo "make test   install and run the test suite (PostgreSQL tests need RETENTION_TEST_PG_URL)"
	@echo "make bench  time each nightly stage against peers (SIZE=small|medium|large, BENCH_WAREHOUSE=postgresql://...)"
	@echo "make lint   ruff over the code, sqlfluff over the SQL models (.sqlfluff)"
	@echo "make mutants  mutation run over delivery, extract and quality; lists the survivors (minutes)"
	@echo "make clean  remove var/ (warehouse, demo shop, Airflow metadata, received mail)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[airflow,dev,demo,sink,charts]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: install
	@bash scripts/demo.sh

ui: install
	@bash scripts/ui.sh

lint: install
	$(BIN)/ruff check retention dags plugins tests bench
	$(BIN)/sqlfluff lint sql/

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# SIZE: small (10k customers), medium (100k), large (1M); BENCH_CUSTOMERS overrides the count,
# BENCH_WAREHOUSE=postgresql://... runs on PostgreSQL (in a scratch database bench_* made there).
SIZE ?= medium
BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	@rm -f $(VENV)/.bench-* && touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --size $(SIZE) \
		$${BENCH_CUSTOMERS:+--customers $$BENCH_CUSTOMERS} $${BENCH_WAREHOUSE:+--warehouse-url $$BENCH_WAREHOUSE}

mutants: install
	$(BIN)/python scripts/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf var
