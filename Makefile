# banger: build, test, benchmark. `make help` lists the targets.
GO        ?= go
# The Go that scripts/quickstart.sh installs when the machine has none new
# enough goes where go.dev/dl puts Go; it comes first, as in quickstart and
# .ci/run, so that `make` finds it without a PATH change (and not an older
# distribution go, such as Debian's /usr/bin/go).
export PATH := /usr/local/go/bin:$(PATH)
BIN       := bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FIXTURES  ?= $(or $(BANGER_FIXTURES),/var/cache/banger-fixtures)
SCENARIO  ?=
E2E_FLAGS ?=
# pipefail: a test run piped into test/testreport keeps its failure.
SHELL     := /bin/bash
.SHELLFLAGS := -o pipefail -c
# The vmlinux extracted from the fixture kernel package, for the tests that
# boot a kernel directly (make integration).
VMLINUX   := $(FIXTURES)/kernel/vmlinux
# Debian's python3, where python3-pytest and python3-venv install (the
# Python SDK's tests; scripts/quickstart.sh installs them).
PYTHON    ?= /usr/bin/python3

.PHONY: help build unit unit-polluted pyunit integration fuzz fuzz-short e2e e2e-list test bench fixtures vet fmt clean quickstart golden

help:
	@echo "make build            build bin/banger, bin/bangerd, bin/banger-agent, bin/banger-helper"
	@echo "make test             unit tests, short fuzzing, integration tests, then the end-to-end suite (boots real VMs)"
	@echo "make unit             gofmt/vet + unit tests (never boot VMs); a missing tool or reference fails them;"
	@echo "                      run twice, the second time in a polluted environment (make unit-polluted)"
	@echo "make pyunit           the Python SDK's unit tests (a fake daemon; part of make unit)"
	@echo "make integration      package tests that boot the fixture kernel directly (no image, no daemon)"
	@echo "make fuzz-short       every Go fuzz target for FUZZTIME=5s each (part of make test)"
	@echo "make fuzz             every Go fuzz target for FUZZTIME=2m each"
	@echo "make e2e              end-to-end scenarios; SCENARIO=TestName runs one"
	@echo "make e2e-list         list the end-to-end scenarios"
	@echo "make bench            banger vs bare QEMU boot, same kernel and image"
	@echo "make fixtures         fetch the Debian kernel package + debootstrap tree into $(FIXTURES)"
	@echo "make golden           build the default development image and export it as a bundle into dist/ (root)"

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/banger ./cmd/banger
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/banger-agent ./cmd/banger-agent
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/banger-helper ./cmd/banger-helper

fmt:
	@out=$$(gofmt -l cmd internal pkg examples test); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...

# BANGER_TEST_STRICT=1: a test whose tool or reference file is missing
# fails instead of skipping (internal/testreq). BANGER_TEST_VMLINUX is
# cleared: unit tests never boot a kernel. testreport prints every skipped
# test with its reason, and what passing packages printed (the firecracker
# contract line).
UNIT_TEST := BANGER_TEST_STRICT=1 BANGER_TEST_BOOT= BANGER_TEST_VMLINUX= $(GO) test -count=1 -json ./...

# Unit tests must not depend on the environment they are run from: `make
# unit` runs them a second time with every BANGER_* variable banger (its
# code and its scripts) reads set to a hostile value, and XDG_* and HOME
# pointing at directories that cannot exist (under /dev/null, so not even
# root can create them). Go's own directories are pinned first, so that the
# go command keeps its caches. internal/testenv checks that this list names
# every BANGER_* variable the code reads. The tests' own switches
# (BANGER_TEST_*, BANGER_FAKE_*, BANGER_OCI_TEST_*, BANGER_UPDATER_PROBE_DIR)
# are not polluted: they turn test modes on.
POLLUTED_ENV := BANGER_ACCEL=polluted BANGER_ENGINE=polluted BANGER_NETWORK=polluted \
  BANGER_QEMU=/dev/null/polluted-qemu BANGER_HELPER_SOCKET=/dev/null/polluted-helper.sock \
  BANGER_CATALOG=http://127.0.0.1:9/polluted-catalog.json BANGER_RUNTIME_DIR=/dev/null/polluted-run \
  BANGER_AGENT=/dev/null/polluted-agent \
  BANGER_NO_DAEMON_RESTART=1 BANGER_NO_AUTOSTART=1 BANGER_PROGRESS=1 \
  BANGER_BIN=/dev/null/polluted-bin BANGER_FIXTURES=/dev/null/polluted-fixtures BANGER_SUITE=polluted \
  BANGER_MIRROR=http://127.0.0.1:9/polluted-mirror BANGER_INSTALL_BASE_URL=http://127.0.0.1:9/polluted-release \
  BANGER_INSTALL_PUBKEY_FILE=/dev/null/polluted.pem BANGER_INSTALL_NONINTERACTIVE=1 \
  BANGER_NPM_REGISTRY=http://127.0.0.1:9/polluted-npm BANGER_NPM_CACHE=/dev/null/polluted-npm-cache \
  BANGER_AGENT_MANIFEST=/dev/null/polluted-manifest \
  XDG_STATE_HOME=/dev/null/polluted-state XDG_CONFIG_HOME=/dev/null/polluted-config \
  XDG_RUNTIME_DIR=/dev/null/polluted-runtime XDG_DATA_HOME=/dev/null/polluted-data \
  XDG_CACHE_HOME=/dev/null/polluted-cache HOME=/dev/null/polluted-home

unit: fmt vet
	$(UNIT_TEST) | $(GO) run ./test/testreport
	$(MAKE) -s unit-polluted
	$(MAKE) -s pyunit

# The Python SDK against a fake daemon (sdk/python/tests/test_real.py, which
# needs a real one, runs in the e2e scenario TestPythonSDK).
pyunit:
	cd sdk/python && PYTHONPATH=src PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m pytest -q -p no:cacheprovider tests/test_unit.py

unit-polluted:
	@echo "unit tests again, in a polluted environment (BANGER_*, XDG_*, HOME)"
	env GOCACHE="$$($(GO) env GOCACHE)" GOMODCACHE="$$($(GO) env GOMODCACHE)" GOPATH="$$($(GO) env GOPATH)" \
	  GOENV="$$($(GO) env GOENV)" $(POLLUTED_ENV) $(UNIT_TEST) | $(GO) run ./test/testreport

# Tests that boot the fixture kernel without a root disk (the KVM probe, a
# panicking guest ending its VMM); BANGER_TEST_BOOT=1 makes a missing
# kernel a failure, and -want fails the run if they did not pass.
integration: fixtures
	$(GO) run ./test/kernelfixture $(FIXTURES)/kernel/linux-image.deb $(FIXTURES)/kernel
	BANGER_TEST_STRICT=1 BANGER_TEST_BOOT=1 BANGER_TEST_VMLINUX=$(VMLINUX) \
	  $(GO) test -count=1 -json -run '^TestBoot' ./internal/engine/qemu | \
	  $(GO) run ./test/testreport -want '^TestBootProbeKVM$$' -want '^TestBootKernelPanicEndsVMM$$'

fuzz-short:
	GO=$(GO) FUZZTIME=$(or $(FUZZTIME),5s) scripts/fuzz.sh

fuzz:
	GO=$(GO) FUZZTIME=$(or $(FUZZTIME),2m) scripts/fuzz.sh

fixtures:
	scripts/fixtures.sh $(FIXTURES)

e2e: build fixtures
	BANGER_FIXTURES=$(FIXTURES) BANGER_BIN=$(CURDIR)/$(BIN) \
	  $(GO) test -tags e2e -count=1 -timeout 60m -v $(E2E_FLAGS) \
	  $(if $(SCENARIO),-run '^($(SCENARIO))$$',) ./test/e2e

e2e-list:
	@$(GO) test -tags e2e -list '.*' ./test/e2e | grep -v '^ok'

test: unit fuzz-short integration e2e

bench: build fixtures
	BANGER_FIXTURES=$(FIXTURES) BANGER_BIN=$(CURDIR)/$(BIN) $(GO) run ./test/bench $(BENCH_FLAGS)

quickstart:
	scripts/quickstart.sh

golden: build
	BANGER_BIN=$(CURDIR)/$(BIN) scripts/golden.sh dist

clean:
	rm -rf $(BIN)
