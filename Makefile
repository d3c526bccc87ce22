# Two commands for a newcomer on a fresh Debian/Ubuntu machine (run as root, or with sudo):
#   make demo   boot a throwaway local fleet and provision it with deploy/site.py
#   make test   unit tests and end-to-end tests on throwaway fleets, two test files at a time
# Each does its own set-up: the Debian packages, a virtualenv with the project installed.

VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# pytest-xdist workers for make test/unit/e2e. Each test file stays on one worker (--dist
# loadfile), so a module's fleet and its runs in order are as without workers; fleets of
# different modules never collide (testbed/fleet.py claims host numbers under a machine-wide
# lock). The suite mostly waits (fleet boots, health checks, held locks, slow starts): two
# files at a time hide one's waits behind the other's work on 2 cores. JOBS=0: no workers.
JOBS ?= 2
PYTEST := $(PY) -m pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder
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
	$(SUDO) $(PYTEST)

unit: setup
	$(PYTEST) tests/unit

e2e: setup
	$(SUDO) $(PYTEST) -m e2e

clean:
	rm -rf $(VENV) .debs-installed .fleet
