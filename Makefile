# make demo: the whole gated SSH login on the built-in emulator.  make test: lint + the test suite.
# Both do their own set-up: a .venv from the pinned requirements and the apt packages they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SHIM   := build/shim.pyz
STAMP  := $(VENV)/.installed

.PHONY: bench demo demo-interactive test lint format shim system-packages system-packages-demo clean

demo: $(STAMP) system-packages-demo shim
	$(BIN)/python -m tests.demo

demo-interactive: $(STAMP) system-packages-demo shim
	$(BIN)/python -m tests.demo --interactive

test: $(STAMP) system-packages shim lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

shim: $(SHIM)

# The archive's own __main__ exits with main()'s status (zipapp -m would drop it: a deny must exit 1).
$(SHIM): $(wildcard sshshim/*.py)
	rm -rf build/shim-src && mkdir -p build/shim-src
	cp -r sshshim build/shim-src/ && rm -rf build/shim-src/sshshim/__pycache__
	printf 'import sys\nfrom sshshim.__main__ import main\nsys.exit(main())\n' > build/shim-src/__main__.py
	$(PYTHON) -m zipapp build/shim-src -p '/usr/bin/python3 -I' -o $(SHIM)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian packages: the demo needs OpenSSH; the tests also sftp-server, rsync, git and a headless
# browser. Installed when missing (as root); never enabled as system services.
DEMO_PACKAGES := openssh-server openssh-client
TEST_PACKAGES := $(DEMO_PACKAGES) openssh-sftp-server rsync git tmux chromium chromium-driver

system-packages-demo:
	@$(call apt_ensure,$(DEMO_PACKAGES))

system-packages:
	@$(call apt_ensure,$(TEST_PACKAGES))

define apt_ensure
missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ]; then \
    echo "installing: $$missing"; \
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
  else \
    echo "missing Debian packages: $$missing. Run: sudo apt-get install $$missing" >&2; exit 1; \
  fi; \
fi
endef

clean:
	rm -rf build $(VENV) *.egg-info
bench:	$(STAMP) system-packages shim
	$(BIN)/python -m benchmarks
