# AdLoop: `make run` sets everything up and starts the dashboard; `make test` sets everything up and runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := chromium chromium-driver fonts-dejavu-core fonts-liberation2
BUILD_PACKAGES := build-essential cmake
# llama.cpp (the CPU engine, generation/engine.py) builds from source. Built natively on this project's CPU its
# AVX-512 and AMX kernels crash on any prompt longer than one token, so the build sticks to AVX2. It is built
# without OpenMP: OpenMP's workers sleep between the model's many small operations and waking them costs more
# than the operation (measured on 2 cores: 8 answers took 121 ms a decode step with OpenMP, 48 ms with ggml's
# own polling thread pool, and one answer 41 ms against 9 ms).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
	-DGGML_OPENMP=OFF
# pip keeps an installed llama-cpp-python of the same version whatever its flags, so the stamp names them.
LLAMA_STAMP := $(VENV)/.llama-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

SERVE_PORT ?= 8000

.PHONY: run serve test setup system-deps build-deps prepare lint clean

setup: $(STAMP) $(LLAMA_STAMP)

# The venv is rebuilt only when the requirements change. torch is pinned to the CPU build that
# pip finds locally; requirements-nodeps.txt holds packages whose own dependency lists must be skipped.
$(STAMP): requirements.txt requirements-nodeps.txt | build-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# llama-cpp-python (requirements-engine.txt), built from source with the flags above; rebuilt when they change.
$(LLAMA_STAMP): requirements-engine.txt | $(STAMP)
	rm -f $(VENV)/.llama-*
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-deps --force-reinstall --no-cache-dir \
		-r requirements-engine.txt
	touch $(LLAMA_STAMP)

# A C++ toolchain for building llama.cpp; skipped when already present.
build-deps:
	@if ! command -v g++ >/dev/null || ! command -v cmake >/dev/null; then \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(BUILD_PACKAGES); \
	fi

# Debian's Chromium (browser tests) and open-licence fonts (banners); skipped when already present.
system-deps:
	@if ! command -v chromium >/dev/null || ! dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(SYSTEM_PACKAGES); \
	fi

# Loads the demo dataset and converts the embedded LLM once, so the first page view is quick.
prepare: setup
	$(PY) cli.py prepare

run: setup prepare
	$(VENV)/bin/streamlit run streamlit_app.py --server.port $(PORT) --browser.gatherUsageStats false

# The serving API (FastAPI under uvicorn); OpenAPI docs at http://127.0.0.1:$(SERVE_PORT)/docs.
serve: setup prepare
	$(PY) cli.py serve --port $(SERVE_PORT)

lint: setup
	$(VENV)/bin/ruff check .

test: setup system-deps lint
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
