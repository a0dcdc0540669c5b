# Task runner: `make run` starts the gateway, `make test` runs the whole suite (both set up .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTO_OUT := gateway/_proto
# google/api/annotations.proto and http.proto: shipped by googleapis-common-protos (a runtime
# dependency), found where that package is installed.
GOOGLEAPIS = $(shell $(BIN)/python -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[2])')
# google/longrunning/operations.proto: googleapis-common-protos ships it as
# google/longrunning/operations_proto.proto (its descriptor keeps the real name), so it is
# copied under its real name into an include directory of its own.
LONGRUNNING_DIR := build/protos
LONGRUNNING_INCLUDE = mkdir -p $(LONGRUNNING_DIR)/google/longrunning && \
	cp $(GOOGLEAPIS)/google/longrunning/operations_proto.proto \
		$(LONGRUNNING_DIR)/google/longrunning/operations.proto
# buf (the protobuf linter) from npm, pinned by tools/buf/package-lock.json.
BUF := tools/buf/node_modules/.bin/buf
# uPlot (the charts of /ui and of the bench HTML report) from npm, pinned by
# tools/uplot/package-lock.json and vendored into the package as static files with its licence.
UPLOT_PKG := tools/uplot/node_modules/uplot
UPLOT_VENDOR := gateway/faces/static/vendor/uplot
UPLOT_FILES := dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE

.PHONY: setup run test lint lint-proto lint-container typecheck proto proto-check floors bench clean \
	vendor-uplot vendor-check screenshot chromium

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/transfer-gateway serve

test: setup chromium proto-check lint typecheck
	$(BIN)/python -m pytest -q

# Debian's Chromium for the browser tests (tests/support/browser.py drives it through Playwright;
# Playwright's own download is never used). Installed when missing and we are root; otherwise
# one line saying what to install. The tests themselves fail, never skip, without it.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "make: no Chromium at $(CHROMIUM): installing Debian's chromium package"; \
			apt-get update -qq && apt-get install -y -qq chromium >/dev/null || exit 1; \
		fi; \
		[ -x "$(CHROMIUM)" ] || { echo "make test needs Chromium at $(CHROMIUM) for the browser tests: run as root, or sudo apt-get install -y chromium (or set CHROMIUM=/path/to/chromium)"; exit 1; }; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# Regenerates the committed protobuf code. The sed turns grpc_tools' absolute import of the
# generated module into one that works inside the `gateway` package.
proto: setup
	rm -rf $(PROTO_OUT)/transfer_gateway
	$(LONGRUNNING_INCLUDE)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos -I $(GOOGLEAPIS) \
		-I $(LONGRUNNING_DIR) \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) \
		protos/transfer_gateway/v1/gateway.proto
	sed -i 's/^from transfer_gateway\.v1 import/from gateway._proto.transfer_gateway.v1 import/' \
		$(PROTO_OUT)/transfer_gateway/v1/*.py $(PROTO_OUT)/transfer_gateway/v1/*.pyi
	touch $(PROTO_OUT)/transfer_gateway/__init__.py $(PROTO_OUT)/transfer_gateway/v1/__init__.py

# Fails when the committed generated code differs from what `make proto` makes now.
proto-check: setup
	@tmp=$$(mktemp -d) && cp -r $(PROTO_OUT) $$tmp/before && \
	$(MAKE) -s proto >/dev/null && \
	if ! diff -r -x __pycache__ $$tmp/before $(PROTO_OUT) >/dev/null; then \
		echo "generated protobuf code is out of date: run 'make proto' and commit"; \
		diff -r -x __pycache__ $$tmp/before $(PROTO_OUT) | head -20; rm -rf $$tmp; exit 1; fi; rm -rf $$tmp

$(BUF): tools/buf/package.json tools/buf/package-lock.json
	npm ci --prefix tools/buf --no-audit --no-fund --silent
	touch $@

$(UPLOT_PKG)/package.json: tools/uplot/package.json tools/uplot/package-lock.json
	npm ci --prefix tools/uplot --no-audit --no-fund --silent
	touch $@

# Copies the pinned uPlot's browser build, stylesheet and licence into the package.
vendor-uplot: $(UPLOT_PKG)/package.json
	mkdir -p $(UPLOT_VENDOR)
	for f in $(UPLOT_FILES); do cp $(UPLOT_PKG)/$$f $(UPLOT_VENDOR)/$$(basename $$f); done

# Fails when the committed vendored copies differ from the pinned package (or one is missing).
vendor-check: $(UPLOT_PKG)/package.json
	@rc=0; for f in $(UPLOT_FILES); do \
		if ! cmp -s $(UPLOT_PKG)/$$f $(UPLOT_VENDOR)/$$(basename $$f); then \
			echo "$(UPLOT_VENDOR)/$$(basename $$f) differs from the pinned uplot: run 'make vendor-uplot' and commit"; \
			rc=1; fi; done; exit $$rc

# buf lint (STANDARD rules, exceptions with their reasons in protos/buf.yaml). buf reads an image
# that protoc builds, since its own way to find google/api (the Buf Schema Registry) is not
# reachable from here; --path keeps the lint to our files, not the imported googleapis ones.
lint-proto: setup $(BUF)
	@$(LONGRUNNING_INCLUDE)
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -I protos -I $(GOOGLEAPIS) -I $(LONGRUNNING_DIR) \
		--include_imports \
		--include_source_info --descriptor_set_out=$$tmp/image.binpb \
		protos/transfer_gateway/v1/gateway.proto && \
	$(BUF) lint $$tmp/image.binpb --config protos/buf.yaml \
		--path transfer_gateway/v1/gateway.proto; \
	rc=$$?; rm -rf $$tmp; exit $$rc

# The container files, checked by their ecosystems' tools (no image can be built here):
# hadolint (dev extras; any finding fails, info included) and `docker-compose config`
# (Debian's docker-compose; .ci/run installs it when missing).
lint-container: setup
	$(BIN)/hadolint --failure-threshold info Dockerfile
	@command -v docker-compose >/dev/null || { \
		echo "lint-container: no docker-compose: apt-get install docker-compose"; exit 1; }
	docker-compose -f compose.yaml config --quiet

# The declared dependency floors, proven: a second venv with every runtime dependency at the
# lowest version pyproject.toml allows (constraints-min.txt), then the smoke test (imports and a
# short end-to-end run of each face).
floors:
	rm -rf .venv-min
	$(PYTHON) -m venv .venv-min
	.venv-min/bin/python -m pip install -q --upgrade pip
	.venv-min/bin/python -m pip install -q -c constraints-min.txt .
	.venv-min/bin/python -m pip check
	cd .venv-min && bin/python ../.ci/smoke.py

bench: setup
	$(BIN)/python -m bench

# docs/ui.png: the live page during a load, taken by the browser test that checks it
# (tests/ui/test_screenshot.py; without UI_SCREENSHOT it writes to a temporary folder).
screenshot: setup
	UI_SCREENSHOT=docs/ui.png $(BIN)/python -m pytest -q -p no:randomly tests/ui/test_screenshot.py

clean:
	rm -rf $(VENV) .venv-min .pytest_cache .mypy_cache .ruff_cache
