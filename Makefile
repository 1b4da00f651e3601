# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MAPPING ?= mappings/ac_line.yaml
DATA_DIR ?= var
SPEED ?= 50
ENDPOINT ?= opc.tcp://127.0.0.1:4840/
HTTP ?= 127.0.0.1:8080

.PHONY: run test lint lock tools bench chaos sim validate clean image

# constraints.txt pins every package, not only the three whose internals we reach (docs/upgrading.md).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# After changing a dependency in pyproject.toml: record what the venv now holds.
lock: $(STAMP)
	{ echo "# Every package make installs, at the version the suite last passed with (pip install -c)."; \
	  echo "# Made by: make lock (pip freeze of .venv after a green make test). docs/upgrading.md"; \
	  $(BIN)/pip freeze --exclude-editable; } > constraints.txt

# Outside tools the interoperability tests use; installed when we may, else those tests skip
# (and fail under CI=true, where a skip would hide a gap).
tools:
	@command -v mbpoll >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq mbpoll) >/dev/null 2>&1 \
	      || echo "warning: could not install mbpoll; its interop test will be skipped"; \
	  else echo "warning: mbpoll not installed (apt-get install mbpoll); its interop test will be skipped"; fi; }
	@command -v socat >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq socat) >/dev/null 2>&1 \
	      || echo "warning: could not install socat; the Modbus RTU test will be skipped"; \
	  else echo "warning: socat not installed (apt-get install socat); the Modbus RTU test will be skipped"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "warning: could not install chromium; the line view's browser test will be skipped"; \
	  else echo "warning: chromium not installed (apt-get install chromium); the browser test will be skipped"; fi; }
	@if command -v npm >/dev/null 2>&1; then \
	  [ tests/node/node_modules/.stamp -nt tests/node/package.json ] || { \
	    npm install --prefix tests/node --no-audit --no-fund --loglevel=error >/dev/null \
	      && touch tests/node/node_modules/.stamp; } \
	      || echo "warning: could not install node-opcua; its interop test will be skipped"; \
	else echo "warning: npm not found; the node-opcua interop test will be skipped"; fi

lint: $(STAMP)
	$(BIN)/ruff check .

# Two workers: the machines have two cores, and most of a test is building an OPC UA server;
# worksteal: an idle worker takes tests queued for the other, so no long test ends the run alone.
test: $(STAMP) tools lint
	$(BIN)/pytest -n 2 --dist worksteal

# The simulated line and the bridge, one demo order. Ctrl-C, `kill` or closing the terminal
# (SIGINT, SIGTERM, SIGHUP) stops both; if the simulator cannot start, its one-line reason is all.
# SIM_FLAGS=--ephemeral lets the system pick the simulator's ports (the tests do).
SIM_FLAGS ?=
run: $(STAMP)
	@mkdir -p $(DATA_DIR) && rm -f $(DATA_DIR)/sim-deployment.yaml
	@$(BIN)/plc-sim --mapping $(MAPPING) --speed $(SPEED) --log-level warning $(SIM_FLAGS) \
	    --write-deployment $(DATA_DIR)/sim-deployment.yaml & sim=$$!; bridge=; \
	  trap 'kill -TERM $$sim $$bridge 2>/dev/null' HUP INT TERM; \
	  until [ -s $(DATA_DIR)/sim-deployment.yaml ]; do \
	    kill -0 $$sim 2>/dev/null || { wait $$sim; exit 2; }; sleep 0.1; done; \
	  echo; echo "OPC UA endpoint: $(ENDPOINT)"; echo "Line view: http://$(HTTP)/   Prometheus metrics: http://$(HTTP)/metrics"; \
	  echo "In another shell, place a custom order and watch it move station by station:"; \
	  echo "  $(BIN)/linebridge order submit my-ac-1 -p AC-W -o capacity_btu=18000 -o panel_color=ocean_blue -o engraving=Hello \\"; \
	  echo "    && $(BIN)/linebridge order watch my-ac-1"; echo; \
	  $(BIN)/linebridge run --opcua-endpoint $(ENDPOINT) --mapping $(MAPPING) --deployment $(DATA_DIR)/sim-deployment.yaml \
	    --data-dir $(DATA_DIR) --http $(HTTP) --demo & bridge=$$!; \
	  wait $$bridge; code=$$?; \
	  while kill -0 $$bridge 2>/dev/null; do wait $$bridge; code=$$?; done; \
	  kill -TERM $$sim 2>/dev/null; wait $$sim 2>/dev/null; \
	  case $$code in 0|129|130|143) exit 0;; *) exit $$code;; esac

validate: $(STAMP)
	$(BIN)/linebridge validate $(MAPPING)

# `make bench`: order throughput, the order path at scale (bench/order_path.py), then telemetry at plant scale (docs/telemetry.md).
# `make bench SOAK=600`: the first telemetry workload for 600 s, RSS each minute.
SOAK ?=
bench: $(STAMP)
ifeq ($(SOAK),)
	$(BIN)/python -m bench
else
	$(BIN)/python -m bench.telemetry --soak $(SOAK)
endif

# Orders through a fault-injecting network for MINUTES (SEVERITY 2 doubles the fault mix).
MINUTES ?= 10
SEVERITY ?= 1
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --minutes $(MINUTES) --severity $(SEVERITY)

# `make image`: the container image with docker, podman or buildah, then its checks (validate inside,
# non-root, its health check against a bridge started in it). Not part of `make test`: minutes.
image:
	bash .ci/image

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
