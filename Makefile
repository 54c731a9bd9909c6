# AdLoop: `make run` sets everything up and starts the dashboard; `make test` sets everything up and runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# postgresql: the server tools (initdb, pg_ctl) the suite starts a throwaway PostgreSQL server with (tests/postgres_server.py)
SYSTEM_PACKAGES := chromium chromium-driver fonts-dejavu-core fonts-liberation2 postgresql
BUILD_PACKAGES := build-essential cmake
# llama.cpp (the CPU engine, generation/engine.py) builds from source. Built natively on this project's CPU its
# AVX-512 and AMX kernels crash on any prompt longer than one token, so the build sticks to AVX2. It is built
# without OpenMP: OpenMP's workers sleep between the model's many small operations and waking them costs more
# than the operation (measured on 2 cores: 8 answers took 121 ms a decode step with OpenMP, 48 ms with ggml's
# own polling thread pool, and one answer 41 ms against 9 ms).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
	-DGGML_OPENMP=OFF
# A second build of llama.cpp's CPU kernels (libggml-cpu) with AVX-512 and AVX-512 VNNI/VBMI but without AMX (AMX
# still crashes) and without BF16 and AVX-VNNI, which Q8_0 decoding does not use and which Ice Lake-class Xeons
# lack: built with them, the kernels could only load on the newest CPUs. Measured on an Ice Lake-class Xeon, 8 Studio
# variants p50 1.78 s against 2.15 s on the AVX2 build in the same hour; on a Sapphire Rapids 2.27 s against 3.07 s.
# The engine loads them only on a CPU that has every instruction they were built for (generation/engine.py,
# AVX512_FLAGS), so the AVX2 build stays the one for others.
AVX512_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON \
	-DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF
AVX512_DIR := $(VENV)/lib/ggml-avx512
AVX512_STAMP := $(AVX512_DIR)/.built-$(shell printf '%s' '$(AVX512_CMAKE_ARGS)' | cksum | cut -d' ' -f1)
# pip keeps an installed llama-cpp-python of the same version whatever its flags, so the stamp names them.
LLAMA_STAMP := $(VENV)/.llama-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

SERVE_PORT ?= 8000

.PHONY: run serve test setup system-deps build-deps prepare lint clean

setup: $(STAMP) $(LLAMA_STAMP) $(AVX512_STAMP)

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

# The AVX-512 kernels, built from the same llama-cpp-python source so that they match its libggml exactly.
$(AVX512_STAMP): $(LLAMA_STAMP)
	rm -rf $(AVX512_DIR) && mkdir -p $(AVX512_DIR)/src
	$(PY) -m pip download -q --no-deps --no-binary :all: -d $(AVX512_DIR)/src -r requirements-engine.txt
	tar -xzf $(AVX512_DIR)/src/llama_cpp_python-*.tar.gz -C $(AVX512_DIR)/src
	cmake -S $(AVX512_DIR)/src/llama_cpp_python-*/vendor/llama.cpp -B $(AVX512_DIR)/build -DBUILD_SHARED_LIBS=ON \
		-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
		-DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF $(AVX512_CMAKE_ARGS) >/dev/null
	cmake --build $(AVX512_DIR)/build --target ggml-cpu -j$$(nproc) >/dev/null
	cp -L $(AVX512_DIR)/build/bin/libggml-cpu.so.0 $(AVX512_DIR)/libggml-cpu.so.0
	rm -rf $(AVX512_DIR)/src $(AVX512_DIR)/build
	touch $@

# A C++ toolchain for building llama.cpp; skipped when already present.
build-deps:
	@if ! command -v g++ >/dev/null || ! command -v cmake >/dev/null; then \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(BUILD_PACKAGES); \
	fi

# Debian's Chromium (browser tests), open-licence fonts (banners) and PostgreSQL (the store's tests run on it as well as
# on SQLite); skipped when already present.
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
	$(PY) -m pytest -q -ra --durations=25

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
