# Build, run and test the C node. `make run` and `make test` install whatever
# Debian packages are missing first (scripts/bootstrap.sh); plain `make` only builds.
#
#   make                      build/cnode, build/libcnode.a and build/cnode-load (load/)
#   make run                  start cnode@127.0.0.1 (prints the iex line)
#   make test                 unit tests plain and sanitized, Common Test, the OTP matrix,
#                             ExUnit (ct, test-otp and exunit build the sanitized node
#                             build/san/cnode too)
#   make test-otp             the Common Test suites on OTP 25, 27 and 29 (OTP_MATRIX="25 27"
#                             for fewer); OTP 27 is built once from Debian's source (minutes)
#   make bench                the side-by-side benchmark (not part of make test)
#   make rl-mem               rate limiter table alone: RSS/client, calls/s at 1k vs 10M
#   make SANITIZER=address,undefined unit   one sanitized unit run
#   make fuzz                 every libFuzzer harness for FUZZ_SECONDS (60) each
#   make fuzz-smoke           every harness over its seed corpus, a fixed number of runs
#   make install PREFIX=DIR   bin/cnode, lib/libcnode.a, the public headers, lib/pkgconfig/cnode.pc
#   make elixir-test          the Elixir package's mix test (elixir/)
#   make example-test         install into a temporary prefix, build examples/stack with
#                             pkg-config alone, call it from an erl node

ERL_ROOT ?= /usr/lib/erlang
EI_INC := $(ERL_ROOT)/usr/include
EI_LIB := $(ERL_ROOT)/usr/lib

SANITIZER ?=
ifeq ($(SANITIZER),)
BUILD ?= build
OPT ?= -O2
else
BUILD ?= build/san
OPT ?= -O1
endif

CC ?= cc
CPPFLAGS += -I. -I$(EI_INC) -D_GNU_SOURCE
CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -Wall -Wextra -fno-strict-aliasing -MMD -MP
LDLIBS += -L$(EI_LIB) -lei -luv -lssl -lcrypto -lz -lmicrohttpd -lpthread -lm
ifneq ($(SANITIZER),)
CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZER)
endif

LIB_SRCS := $(filter-out supervisor/main.c,$(wildcard cnode/*.c genserver/*.c supervisor/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
TEST_SRCS := $(wildcard test/test_*.c)
TEST_BINS := $(TEST_SRCS:test/%.c=$(BUILD)/test/%)
TEST_SUPPORT := $(filter-out $(TEST_SRCS),$(wildcard test/*.c))
TEST_SUPPORT_OBJS := $(TEST_SUPPORT:%.c=$(BUILD)/obj/%.o)
# The load generator (load/): its engine and pure parts, then its main.
LOAD_SRCS := $(filter-out load/main.c,$(wildcard load/*.c))
LOAD_OBJS := $(LOAD_SRCS:%.c=$(BUILD)/obj/%.o)

.PHONY: all deps run test unit unit-san rl-mem san-cnode interop interop-san ct test-otp exunit bench clean fuzz fuzz-smoke fuzz-build fuzz-corpus
all: $(BUILD)/cnode $(BUILD)/libcnode.a $(BUILD)/cnode-load

# Objects are rebuilt when the compiler flags change, not only when sources do.
FLAGS_STAMP := $(BUILD)/.flags
$(shell mkdir -p $(BUILD) && echo '$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS)' | cmp -s - $(FLAGS_STAMP) || echo '$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS)' > $(FLAGS_STAMP))

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libcnode.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/cnode: $(BUILD)/obj/supervisor/main.o $(BUILD)/libcnode.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/cnode-load: $(BUILD)/obj/load/main.o $(LOAD_OBJS) $(BUILD)/libcnode.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test/%: $(BUILD)/obj/test/%.o $(TEST_SUPPORT_OBJS) $(BUILD)/libcnode.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# The rate limiter table's memory and speed alone (bench/rl_mem.c; make rl-mem runs it).
$(BUILD)/rl-mem: $(BUILD)/obj/bench/rl_mem.o $(BUILD)/libcnode.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

rl-mem: $(BUILD)/rl-mem
	$(BUILD)/rl-mem $(RL_MEM_CLIENTS)

# The load generator's tests link its objects before the library they use.
$(BUILD)/test/test_load: $(BUILD)/obj/test/test_load.o $(LOAD_OBJS) $(TEST_SUPPORT_OBJS) $(BUILD)/libcnode.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# Every object's header dependencies, the tests' support files (test/fake_*.c) included: without
# theirs, a changed struct in a header left them built against the old layout.
-include $(LIB_OBJS:.o=.d) $(BUILD)/obj/supervisor/main.d $(TEST_SRCS:test/%.c=$(BUILD)/obj/test/%.d)
-include $(TEST_SUPPORT_OBJS:.o=.d) $(BUILD)/obj/bench/rl_mem.d
-include $(LOAD_OBJS:.o=.d) $(BUILD)/obj/load/main.d

deps:
	@scripts/bootstrap.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh

# Every unit test binary runs even when an earlier one fails; the target fails at the end.
unit: $(TEST_BINS)
	@fail=0; for t in $(TEST_BINS); do echo "== $$t"; $$t || fail=1; done; exit $$fail

unit-san:
	@$(MAKE) --no-print-directory SANITIZER=address,undefined unit

interop: ct exunit

# The interop suites also run the sanitized node (build/san/cnode) where a case must show
# no sanitizer report, so they build it first.
san-cnode:
	@$(MAKE) --no-print-directory SANITIZER=address,undefined build/san/cnode

ct: all san-cnode
	@scripts/ct.sh

exunit: all san-cnode
	@scripts/exunit.sh

# The interop suites again, against the sanitized node, so real BEAM traffic exercises
# ASan and UBSan; a report anywhere in the run's logs fails it (scripts/lib.sh).
interop-san: san-cnode
	@CNODE_BIN=build/san/cnode scripts/ct.sh
	@CNODE_BIN=build/san/cnode scripts/exunit.sh

# The Common Test suites against every OTP scripts/otp.sh can obtain; one that cannot be had
# is reported SKIPPED with the reason (scripts/test-otp.sh).
test-otp: all san-cnode
	@scripts/test-otp.sh

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory unit-san
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory ct
	@$(MAKE) --no-print-directory test-otp
	@$(MAKE) --no-print-directory exunit
	@$(MAKE) --no-print-directory elixir-test
	@$(MAKE) --no-print-directory example-test
	@$(MAKE) --no-print-directory interop-san

# ---- Installing, the example program and the Elixir package ----
# The public headers keep the tree's layout (include/cnode/node.h, ...), so the same
# #include lines work inside and outside the tree. Private headers (*_int.h) and the
# ones only the library's own files use (the handshake, term walker, heart, ...) stay out;
# example-test compiles each installed header alone, so one that needs a missing one fails.
PREFIX ?= /usr/local
VERSION := 0.1.0
PUBLIC_HEADERS := cnode/buf.h cnode/error.h cnode/log.h cnode/mem.h cnode/node.h cnode/proc.h cnode/tls.h cnode/blob.h cnode/metrics.h cnode/metrics_http.h \
	genserver/genserver.h genserver/statefile.h genserver/journal.h genserver/counter.h genserver/rate_limiter.h \
	supervisor/app.h supervisor/supervisor.h supervisor/sup_policy.h

.PHONY: install elixir-test example-test
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/cnode $(DESTDIR)$(PREFIX)/bin/cnode
	install -m 644 $(BUILD)/libcnode.a $(DESTDIR)$(PREFIX)/lib/libcnode.a
	for h in $(PUBLIC_HEADERS); do install -D -m 644 $$h $(DESTDIR)$(PREFIX)/include/$$h || exit 1; done
	@test -f $(EI_INC)/ei.h || { echo "install: no ei.h in $(EI_INC) (set ERL_ROOT)" >&2; exit 1; }
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e "s|@EI_INC@|$$(readlink -f $(EI_INC))|" -e "s|@EI_LIB@|$$(readlink -f $(EI_LIB))|" \
	    cnode.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cnode.pc

example-test: all
	@scripts/example-test.sh

elixir-test: all
	@scripts/elixir-test.sh

# ---- Fuzzing ----
# libFuzzer harnesses in test/fuzz/fuzz_<name>.c, seed corpora in
# test/fuzz/corpus/<name>/ (made by test/fuzz/gen_corpus.c: make fuzz-corpus).
# Built with clang and ASan+UBSan into build/fuzz/, the library included, so
# coverage reaches into it. `make fuzz` keeps what it learns in
# build/fuzz/corpus/<name>/ and writes crashing inputs to build/fuzz/artifacts/.
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 60
# FUZZ_PARALLEL=1 runs the harnesses side by side (each shares the cores) instead of in turn.
FUZZ_PARALLEL ?= 0
FUZZ_RUNS ?= 2000
FUZZ_DIR := build/fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -O1 -g -std=c11 -Wall -Wextra -fno-strict-aliasing -MMD -MP $(FUZZ_SAN)
FUZZ_NAMES := $(patsubst test/fuzz/fuzz_%.c,%,$(filter-out test/fuzz/fuzz_node.c,$(wildcard test/fuzz/fuzz_*.c)))
FUZZ_BINS := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_DIR)/obj/%.o) $(FUZZ_DIR)/obj/test/fuzz/fuzz_node.o

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/test/fuzz/fuzz_%.o $(FUZZ_LIB_OBJS)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

-include $(FUZZ_LIB_OBJS:.o=.d) $(FUZZ_NAMES:%=$(FUZZ_DIR)/obj/test/fuzz/fuzz_%.d)

# Objects stay after linking, so a rebuild compiles only what changed.
.PRECIOUS: $(FUZZ_DIR)/obj/%.o

fuzz-build: $(FUZZ_BINS)

# Each harness for FUZZ_SECONDS, even after another found a crash; the target
# fails at the end if any did. The full log of each is in build/fuzz/<name>.log.
fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts
	@fail=0; pids=; for n in $(FUZZ_NAMES); do \
	    echo "== fuzz_$$n for $(FUZZ_SECONDS) s"; \
	    mkdir -p $(FUZZ_DIR)/corpus/$$n; \
	    run="$(FUZZ_DIR)/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_DIR)/artifacts/$$n- $(FUZZ_DIR)/corpus/$$n test/fuzz/corpus/$$n"; \
	    if [ "$(FUZZ_PARALLEL)" = 1 ]; then $$run 2>$(FUZZ_DIR)/$$n.log & pids="$$pids $$!"; \
	    else $$run 2>$(FUZZ_DIR)/$$n.log || fail=1; fi; \
	done; for p in $$pids; do wait $$p || fail=1; done; \
	for n in $(FUZZ_NAMES); do echo "== fuzz_$$n"; \
	    grep -E "^#[0-9]+[[:space:]]+DONE|^stat::|ERROR|SUMMARY" $(FUZZ_DIR)/$$n.log; done; exit $$fail

# The seed corpus plus FUZZ_RUNS mutations with a fixed seed: quick, repeatable,
# part of make test. New inputs go to a scratch directory, never to the seeds.
fuzz-smoke: fuzz-build
	@for n in $(FUZZ_NAMES); do \
	    echo "== fuzz_$$n smoke"; \
	    rm -rf $(FUZZ_DIR)/smoke/$$n && mkdir -p $(FUZZ_DIR)/smoke/$$n $(FUZZ_DIR)/artifacts; \
	    $(FUZZ_DIR)/fuzz_$$n -runs=$(FUZZ_RUNS) -seed=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$n- \
	        $(FUZZ_DIR)/smoke/$$n test/fuzz/corpus/$$n 2>$(FUZZ_DIR)/smoke/$$n.log \
	        || { tail -40 $(FUZZ_DIR)/smoke/$$n.log; exit 1; }; \
	    grep -E "^(#[0-9]+[[:space:]]+(INITED|DONE))" $(FUZZ_DIR)/smoke/$$n.log; \
	done

# Rewrites the seed corpora from valid messages (commit the result).
fuzz-corpus: $(FUZZ_DIR)/gen_corpus
	@for n in $(FUZZ_NAMES); do rm -rf test/fuzz/corpus/$$n; done
	$(FUZZ_DIR)/gen_corpus test/fuzz/corpus

$(FUZZ_DIR)/gen_corpus: $(BUILD)/obj/test/fuzz/gen_corpus.o $(BUILD)/obj/test/fuzz/fuzz_node.o $(BUILD)/libcnode.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench: deps
	@WITH_BENCH=1 scripts/bootstrap.sh
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh

clean:
	rm -rf build _build
