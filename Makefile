# chatsite: `make run` serves the app, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check --require-hashes
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup setup-dev lock run serve test fuzz lint migrate bench load capacity replies clean

# What runs in production: requirements.txt, every version locked with its hashes (from requirements.in).
$(VENV)/.installed-runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $@

# Tests, benchmarks and development tools on top (requirements-dev.txt, from requirements-dev.in).
$(VENV)/.installed-dev: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt -r requirements-dev.txt
	touch $(VENV)/.installed-runtime $@

setup: $(VENV)/.installed-runtime

setup-dev: $(VENV)/.installed-dev

# Lock the .in files again after editing them: pip-tools runs from a throwaway venv, never from .venv.
LOCK_VENV := $(or $(TMPDIR),/tmp)/chatsite-pip-tools
COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools)
	$(COMPILE) --output-file=requirements.txt requirements.in
	$(COMPILE) --output-file=requirements-dev.txt requirements-dev.in
	rm -rf $(LOCK_VENV)

migrate: setup
	DEBUG=1 $(BIN)/python manage.py migrate --noinput

run: migrate
	DEBUG=1 $(BIN)/python manage.py seed_demo
	@echo
	@echo "chatsite is starting on http://$(HOST):$(PORT)/  (SQLite, offline demo provider)"
	@echo "Create a staff user for /admin/ with:  DEBUG=1 $(BIN)/python manage.py createsuperuser"
	@echo
	DEBUG=1 $(BIN)/python manage.py runserver $(HOST):$(PORT)

# Production-like: DEBUG off and every setting from the environment (SECRET_KEY is required; see the
# README for a try-out on plain HTTP), static files collected and served by whitenoise, gunicorn with
# uvicorn workers (gunicorn.conf.py, ASGI; GUNICORN_WORKERS or WEB_CONCURRENCY).
serve: setup
	@test -n "$$SECRET_KEY" || grep -qs '^SECRET_KEY=.' .env || { echo "make serve: set SECRET_KEY (see README, \"make serve\")" >&2; exit 2; }
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "chatsite (gunicorn, uvicorn workers) on http://$(HOST):$(PORT)/"
	GUNICORN_BIND=$(HOST):$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup-dev
	$(BIN)/ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run --settings=chatsite.test_settings
	$(BIN)/pytest

# Not part of `make test` (which fuzzes the same 20 requests per operation every time): the API fuzzed
# from its schema with FUZZ_EXAMPLES new random requests per operation; FUZZ_SEED=n repeats a run.
FUZZ_EXAMPLES ?= 500
fuzz: setup-dev
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest chatsite/tests/test_fuzz.py

# Not part of `make test`: SPEC 8 measured on PostgreSQL (BENCH_DATABASE_URL, default
# postgres://chatsite:chatsite@127.0.0.1:5432/chatsite_bench_app, created if missing) with gunicorn,
# a local upstream and locust; builds the data set once (about 2 minutes), then about 15 minutes, and the
# capacity run (below) about 10 more; writes BENCHMARKS.md.
bench: setup-dev
	$(BIN)/python bench/run.py

# Not part of `make test` (which runs a 12-second soak): 100 locust clients for 60 s on the bench data set.
load: setup-dev
	$(BIN)/python bench/run.py --only load

# Also the last part of `make bench`: 100 to 2,000 streamed 10-second replies at once, against today's
# thread-based server (from its commit, in a temporary git worktree), uvicorn workers under gunicorn
# and granian; in a database of its own (chatsite_bench_capacity). CAPACITY_ARGS="--capacity-n 100,250
# --capacity-servers threads" narrows it.
capacity: setup-dev
	$(BIN)/python bench/run.py --only capacity $(CAPACITY_ARGS)

# Also a part of `make bench`, after capacity: on two app servers, how fast a stop made on one ends a reply
# running on the other, how late a follower on one gets the pieces of a reply running on the other, and the
# bytes of WAL a reply writes; about 4 minutes, in a database of its own (chatsite_bench_replies).
replies: setup-dev
	$(BIN)/python bench/run.py --only replies

clean:
	rm -rf $(VENV) db.sqlite3 media staticfiles
