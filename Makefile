# xenevt — `make help` lists the targets.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
FLOOR ?= .venv-floor
CSRC := csrc/fifo_hv.c csrc/fifo_guest.c csrc/fifo_walk.c csrc/twolevel.c csrc/simhost.c csrc/hostfile.c csrc/evtchn_loop.c
CTEST ?= csrc/test_fifo_main.c
CFLAGS_TEST := -std=c11 -O1 -g -Wall -Wextra -Wshadow -Werror -Icsrc
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

demo: setup ## the main job: a guided scenario on a fresh simulated Xen host
	$(VENV)/bin/xenevt demo

docs: setup ## the API reference, from the docstrings of xenevt's public names (pdoc), into build/api
	bash ci/docs.sh build/api

.PHONY: docs help setup demo native test test-fast test-floor test-c sanitize bench fuzz doctor-check kill-campaign xen-ci guest lint man wheel deb clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml setup.py xenevt/_build_native.py $(CSRC) csrc/*.h
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip "setuptools>=77"  # make native runs setup.py in this venv
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed ## create .venv, install xenevt (builds the C engine) and test tools

native: setup ## rebuild the C extension in place after editing csrc/
	$(VPY) setup.py -q build_ext --inplace

test: setup test-c ## the whole suite: C tests, pytest on the newest dependencies (slow included), then on the floors
	$(VPY) -m pytest -q
	$(MAKE) --no-print-directory test-floor

$(FLOOR)/.installed: pyproject.toml setup.py ci/floor-venv.sh
	bash ci/floor-venv.sh $(FLOOR)
	touch $@

test-floor: setup $(FLOOR)/.installed ## pytest (fast suites) on pyproject's floors: Debian 12's python3, click, rich, cffi
	$(FLOOR)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider

test-fast: setup ## pytest without the slow suites
	$(VPY) -m pytest -q -m "not slow"

test-c: ## the C engine's own tests, plain build
	@mkdir -p build
	$(CC) $(CFLAGS_TEST) $(CTEST) $(CSRC) -o build/test_fifo
	build/test_fifo

sanitize: setup ## C tests under AddressSanitizer + UBSan: the engine's, then libxenevtchn programs on the sim library
	@mkdir -p build
	$(CC) $(CFLAGS_TEST) $(SAN) $(CTEST) $(CSRC) -o build/test_fifo_san
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build/test_fifo_san
	$(CC) $(CFLAGS_TEST) -fsyntax-only csrc/xenevtchn_sim.c  # its C half, against csrc/xen_api.h
	@if [ -e /usr/include/xenevtchn.h ]; then \
		L=$$($(VENV)/bin/xenevt sim libpath) && S=$$(mktemp -d) && \
		$(CC) $(CFLAGS_TEST) $(SAN) tests/c/evtchn_pingpong.c -o build/pingpong_san -L$$L -lxenevtchn && \
		$(VENV)/bin/xenevt --state $$S sim init >/dev/null && \
		$(CC) $(CFLAGS_TEST) $(SAN) tests/c/evtchn_misuse.c -o build/misuse_san -L$$L -lxenevtchn && \
		XENEVT_STATE=$$S LD_LIBRARY_PATH=$$L ASAN_OPTIONS=detect_leaks=0 build/pingpong_san 200 2>/dev/null && \
		XENEVT_STATE=$$S LD_LIBRARY_PATH=$$L ASAN_OPTIONS=detect_leaks=0 build/misuse_san all >build/misuse.out 2>/dev/null; \
		rc=$$?; tail -1 build/misuse.out; grep FAIL build/misuse.out; rm -rf $$S; exit $$rc; \
	else echo "sanitize: /usr/include/xenevtchn.h missing (apt install libxen-dev): sim-library program skipped"; fi

bench: setup ## print figures: consume loops, notify->wake (sim vs eventfd/pipe), cost as the host grows, the CLI start, the exporter, the public API
	$(VPY) bench/bench_engine.py
	$(VPY) bench/bench_notify.py
	$(VPY) bench/bench_host.py
	$(VPY) bench/bench_exporter.py
	$(VPY) bench/bench_api.py

fuzz: setup ## every reader's fuzz target, 100,000 inputs each (FUZZ_COUNT=N to change)
	$(VPY) -m tests.fuzz --count $${FUZZ_COUNT:-100000}

doctor-check: setup ## doctor on 10,000 healthy FIFO and 10,000 2-level generated histories and 200 of each injected breakage: the figures
	$(VPY) -m tests.histories --healthy 10000 --per-kind 200

kill-campaign: setup ## SIGKILL 2,000 processes doing hypercalls at random instants; count inconsistent files (0)
	$(VPY) -m tests.crash_campaign --kills $${KILLS:-2000}

xen-ci: setup ## boot Xen 4.17 + a Debian dom0 under QEMU (TCG) and run the real-Xen tests in dom0
	bash ci/xen/run.sh

GUEST_SRC := tests/guest/head.S tests/guest/guest.c tests/guest/guest.ld tests/guest/guest.h
GUEST_CFLAGS := -Wall -Wextra -Werror -ffreestanding -nostdlib -fno-pic -fno-pie -no-pie -static -mno-red-zone \
	-mcmodel=kernel -mgeneral-regs-only -fno-stack-protector -fno-asynchronous-unwind-tables \
	-fno-tree-loop-distribute-patterns -O2
GUEST_LDFLAGS := -Wl,-T,tests/guest/guest.ld -Wl,--build-id=none -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack \
	-Wl,--no-warn-rwx-segments

guest: build/guest/xenevt-test-guest ## the x86-64 PV test guest that runs event-channel programs in a domU (xen-ci)

build/guest/xenevt-test-guest: $(GUEST_SRC)
	@mkdir -p build/guest
	$(CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -Itests/guest tests/guest/head.S tests/guest/guest.c -o $@.tmp
	mv $@.tmp $@

man: setup ## make the man pages in man/ again from the commands' help (shipped in the wheel: share/man/man1)
	$(VPY) -m xenevt.cli.manpage man

wheel: setup ## build the sdist and, from it, the wheel into dist/ (python -m build)
	$(VPY) -m build --outdir dist .

deb: ## the Debian package for SUITE=bookworm|trixie (default: this machine's), built in a chroot of it, into dist/
	$(PY) ci/deb.py build --out dist $(if $(SUITE),--suite $(SUITE))

lint: setup ## ruff, the layers contract (import-linter), then mypy over xenevt/ (pyproject's [tool.mypy])
	$(VPY) -m pip install -q ruff "import-linter>=2.1" "mypy>=1.8" && $(VENV)/bin/ruff check xenevt tests bench ci
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

clean: ## remove build products and the venv
	rm -rf build dist $(VENV) $(FLOOR) *.egg-info xenevt/_native*.so xenevt/_native.c
