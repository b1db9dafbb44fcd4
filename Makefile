# The two commands of the README. Each sets up everything it needs on a fresh machine (Python 3.10+,
# a C compiler): a virtual environment in .venv with the package and its dependencies.
#   make demo   lower the bundled example for every target (cpu + cuda fp32; cpu + custom int8), run, compare
#   make test   install the test extras (pytest, torch CPU build) and run the test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    := out

.PHONY: demo test lint conformance conformance-check clean

$(VENV)/.core: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/python -m pip install --quiet -e '.[dev,torch,report]'
	touch $@

demo: $(VENV)/.core
	mkdir -p $(OUT)
	$(BIN)/lower examples/cnn.onnx --target cpu,cuda -o $(OUT)/cnn.lwr
	$(BIN)/lower run $(OUT)/cnn.lwr --inputs examples/cnn_input.npz --output $(OUT)/cnn_outputs.npz
	$(BIN)/lower verify $(OUT)/cnn.lwr --model examples/cnn.onnx --inputs examples/cnn_input.npz
	$(BIN)/lower verify $(OUT)/cnn.lwr --model examples/cnn.onnx --inputs examples/cnn_input.npz \
		--target cuda --emulate
	$(BIN)/python examples/app.py $(OUT)/cnn.lwr examples/cnn_input.npz
	$(BIN)/lower examples/cnn.onnx --target cpu,custom --quantize int8 \
		--calibration examples/cnn_calibration.npz -o $(OUT)/cnn.int8.lwr
	$(BIN)/lower run $(OUT)/cnn.int8.lwr --target custom --inputs examples/cnn_input.npz \
		--output $(OUT)/cnn_npu_outputs.npz --report $(OUT)/cnn_npu_report.json --trace $(OUT)/cnn_npu_trace.json
	$(BIN)/lower run $(OUT)/cnn.int8.lwr --target cpu --inputs examples/cnn_input.npz \
		--output $(OUT)/cnn_int8_outputs.npz
	$(BIN)/python examples/compare_outputs.py $(OUT)/cnn_npu_outputs.npz $(OUT)/cnn_int8_outputs.npz

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -ra

# The ONNX backend node tests, all of them: `conformance` regenerates docs/conformance.md (both input
# modes) and the list of passing tests; `conformance-check` (run by CI) regenerates the table into $(OUT)
# and fails if a test the committed list says passes now fails.
conformance: $(VENV)/.dev
	$(BIN)/python -m tests.conformance.run --out docs/conformance.md --constant-inputs \
		--baseline docs/results/conformance_passed.json --write-baseline

conformance-check: $(VENV)/.dev
	$(BIN)/python -m tests.conformance.run --out $(OUT)/conformance.md --json $(OUT)/conformance.json \
		--baseline docs/results/conformance_passed.json

lint: $(VENV)/.dev
	$(BIN)/ruff check lowering passes targets runtime tests examples

clean:
	rm -rf $(OUT) .pytest_cache
