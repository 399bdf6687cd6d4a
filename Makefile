# make demo: the whole gated SSH login on the built-in emulator.  make test: lint + the test suite.
# Both do their own set-up: a .venv from the pinned requirements and the apt packages they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SHIM   := build/shim.pyz
PAM    := build/pam_ssh_auth.so
STAMP  := $(VENV)/.installed

.PHONY: bench demo demo-interactive test lint format shim pam system-packages system-packages-demo clean

demo: $(STAMP) system-packages-demo shim
	$(BIN)/python -m harness.demo

demo-interactive: $(STAMP) system-packages-demo shim
	$(BIN)/python -m harness.demo --interactive

test: $(STAMP) system-packages shim pam lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cppcheck --enable=warning,style,performance,portability --error-exitcode=1 \
		--suppress=missingIncludeSystem --inline-suppr -q pam/pam_ssh_auth.c

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

shim: $(SHIM)

# The one shim builder (the installer uses it too): deterministic bytes, an entry stub that
# refuses a system Python older than 3.9 in one line.
$(SHIM): $(wildcard sshshim/*.py) webserver/admin/shim_build.py
	$(PYTHON) -m webserver.admin.shim_build $(SHIM)

pam: $(PAM)

# The one PAM module builder (the installer uses it too): cc -Wall -Wextra -Werror, libpam, json-c.
$(PAM): pam/pam_ssh_auth.c webserver/admin/pam_module.py
	$(PYTHON) -m webserver.admin.pam_module $(PAM)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian packages: the demo needs OpenSSH; the tests also sftp-server, rsync, git, a headless
# browser, debootstrap (Debian 11's Python 3.9, the oldest system Python the shim supports),
# nginx (the documented reverse proxy) and systemd (systemd-analyze verify for the unit); and
# what builds and checks the PAM module (a C compiler, libpam and json-c headers, cppcheck, valgrind).
# Installed when missing (as root), with a policy-rc.d in place so that none of them starts as a
# system service; the tests start their own.
DEMO_PACKAGES := openssh-server openssh-client
PAM_PACKAGES  := gcc libc6-dev libpam0g-dev libjson-c-dev cppcheck valgrind
TEST_PACKAGES := $(DEMO_PACKAGES) $(PAM_PACKAGES) openssh-sftp-server rsync git tmux chromium chromium-driver debootstrap nginx systemd postgresql

# make docker-test: Debian's Docker daemon, sshpass for the README's password login, and (as for
# the tests) debootstrap for the local debian:12-slim base and Chromium for the host's browser.
DOCKER_PACKAGES := openssh-client sshpass debootstrap chromium chromium-driver docker.io

system-packages-demo:
	@$(call apt_ensure,$(DEMO_PACKAGES))

system-packages:
	@$(call apt_ensure,$(TEST_PACKAGES))

define apt_ensure
missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ]; then \
    echo "installing: $$missing"; \
    guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=1; printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
    status=$$?; [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; [ $$status = 0 ] || exit $$status; \
  else \
    echo "missing Debian packages: $$missing. Run: sudo apt-get install $$missing" >&2; exit 1; \
  fi; \
fi
endef

clean:
	rm -rf build $(VENV) *.egg-info
bench:	$(STAMP) system-packages shim
	$(BIN)/python -m benchmarks

# The Docker flow: the image's wheelhouse (offline installs), and the README's Docker lines run
# for real against a Docker daemon (a running one, else Debian's dockerd started and stopped by
# the test); see docs/operations.md "Docker".
DOCKER_WHEELS := docker/wheels

.PHONY: docker-wheels docker-test

docker-wheels: $(DOCKER_WHEELS)/.made

# Wheels for the image's Python (Debian 12's CPython 3.11), whatever Python this host runs.
$(DOCKER_WHEELS)/.made: requirements.txt | $(STAMP)
	rm -f $(DOCKER_WHEELS)/*.whl
	$(BIN)/pip download --quiet --disable-pip-version-check --only-binary=:all: \
		--python-version 3.11 --implementation cp --platform manylinux_2_28_$$(uname -m) \
		--platform manylinux2014_$$(uname -m) -r requirements.txt setuptools wheel -d $(DOCKER_WHEELS)
	touch $@

docker-test: $(STAMP) docker-wheels
	@$(call apt_ensure,$(DOCKER_PACKAGES))
	$(BIN)/pytest -m docker tests/test_docker_stack.py
