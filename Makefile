# Two commands for a newcomer on a fresh Debian/Ubuntu machine (run as root, or with sudo):
#   make demo   boot a throwaway local fleet and provision it with deploy/site.py
#   make test   unit tests, then end-to-end tests on a throwaway fleet
# Each does its own set-up: the Debian packages, a virtualenv with the project installed.

VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What the local test fleet needs: debootstrap and systemd-nspawn for the hosts, iptables for
# their NAT, dpkg-dev/gnupg/apt-utils/busybox-static to build the stand-ins for vendor downloads.
DEBS := python3-venv debootstrap systemd-container zstd iptables iproute2 openssh-client \
        dpkg-dev gnupg apt-utils busybox-static curl

.PHONY: setup demo demo-down test unit e2e clean

setup: $(VENV)/.installed .debs-installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

.debs-installed: Makefile
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	touch $@

demo: setup
	$(SUDO) $(PY) -m testbed.demo up

demo-down: setup
	$(SUDO) $(PY) -m testbed.demo down

test: setup
	$(SUDO) $(PY) -m pytest

unit: setup
	$(PY) -m pytest tests/unit

e2e: setup
	$(SUDO) $(PY) -m pytest -m e2e

clean:
	rm -rf $(VENV) .debs-installed .fleet
