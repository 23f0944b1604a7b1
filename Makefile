# vmscript — see README.md. The two commands: `make demo` and `make test`.
GO       ?= go
BIN      ?= bin/vmscript
STATICCHECK_VERSION = v0.8.2
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin

.PHONY: all build deps lab demo test test-short vet lint bench clean docs

all: build

build:
	$(GO) build -o $(BIN) ./cmd/vmscript

## deps: install the Debian packages the host needs (QEMU, OVMF, iPXE, grub, …)
deps:
	lab/install-host-deps

## lab: build the lab guests into the cache (reused when unchanged)
lab: build
	$(BIN) lab build all

## demo: install what is missing, build the lab, run the investigation on the
## lab's regression ISO against its known-good ISO; prints where the notes are
demo: deps lab
	$(BIN) run scripts/investigate.lua -a report=only

## test: the whole suite (end-to-end tests boot real VMs)
# One package at a time (-p 1): the VMs are CPU-bound under TCG, so two
# packages side by side (up to eight VMs on two cores) took as long in all
# (11.4 min either way) but made every boot 1.5-3x slower, which is how a
# 4-minute login deadline was missed in CI. Tests within a package still
# run their VMs side by side.
test:
	$(GO) test -p 1 -race -count=1 -timeout 30m ./...

test-short:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...

lint: vet
	@test -x $(GOBIN_DIR)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN_DIR)/staticcheck ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## docs: regenerate docs/api.md and lua/types/vmscript.lua from the bindings' registrations
docs:
	$(GO) generate ./cmd/vmscript

## bench: every benchmark against its peers, as ratios, into bench/REPORT.md (never a test)
bench:
	bench/run

clean:
	rm -rf bin
