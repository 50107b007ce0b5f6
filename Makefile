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
	@echo "make bench  time each nightly stage on a larger demo shop (BENCH_CUSTOMERS=100000)"
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

bench: install
	$(BIN)/python -m bench.run --customers $${BENCH_CUSTOMERS:-100000}

mutants: install
	$(BIN)/python scripts/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf var
