# Build, run and test the C node. `make run` and `make test` install whatever
# Debian packages are missing first (scripts/bootstrap.sh); plain `make` only builds.
#
#   make                      build/cnode and build/libcnode.a
#   make run                  start cnode@127.0.0.1 (prints the iex line)
#   make test                 unit tests plain and sanitized, Common Test, the OTP matrix,
#                             ExUnit (ct, test-otp and exunit build the sanitized node
#                             build/san/cnode too)
#   make test-otp             the Common Test suites on OTP 25, 27 and 29 (OTP_MATRIX="25 27"
#                             for fewer); OTP 27 is built once from Debian's source (minutes)
#   make bench                the side-by-side benchmark (not part of make test)
#   make SANITIZER=address,undefined unit   one sanitized unit run

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
LDLIBS += -L$(EI_LIB) -lei -luv -lcrypto -lpthread -lm
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

.PHONY: all deps run test unit unit-san san-cnode interop ct test-otp exunit bench clean
all: $(BUILD)/cnode $(BUILD)/libcnode.a

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

$(BUILD)/test/%: $(BUILD)/obj/test/%.o $(TEST_SUPPORT_OBJS) $(BUILD)/libcnode.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

-include $(LIB_OBJS:.o=.d) $(BUILD)/obj/supervisor/main.d $(TEST_SRCS:test/%.c=$(BUILD)/obj/test/%.d)

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

# The Common Test suites against every OTP scripts/otp.sh can obtain; one that cannot be had
# is reported SKIPPED with the reason (scripts/test-otp.sh).
test-otp: all san-cnode
	@scripts/test-otp.sh

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory unit-san
	@$(MAKE) --no-print-directory ct
	@$(MAKE) --no-print-directory test-otp
	@$(MAKE) --no-print-directory exunit

bench: deps
	@WITH_BENCH=1 scripts/bootstrap.sh
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh

clean:
	rm -rf build _build
