# aiolua: asyncio for Lua 5.4, in C.
#
#   make          install missing Debian packages, build ./aiolua, build/aio.so,
#                 build/libaiolua.a, build/aiolua.pc
#   make run      the same, then run examples/tour.lua
#   make test     AddressSanitizer + UBSan build in build/asan, C tests
#                 (tests/c), busted specs (tests/lua); last line "N passed, N failed"
#   make bench    the project's own benchmarks (bench/), start-up included
#   make examples the C embedding example (examples/embed), built with
#                 `pkg-config aiolua` as an application would
#   make install  PREFIX=/usr/local (and DESTDIR): aiolua, aiolua.h,
#                 libaiolua.a/.so, aio.so in PREFIX/lib/lua/5.4, aiolua.pc
#   make fuzz     libFuzzer harnesses (tests/fuzz, clang), each run for
#                 FUZZ_SECONDS (default 60) from tests/fuzz/corpus/<name>
#   make faults   the failing-allocator sweep (tests/faults) under ASan
#   make soak     about 2 minutes of connections and cancels (tests/soak)
#   make windows  cross-build build/win/aiolua.exe and aio.dll (mingw-w64,
#                 the IOCP backend); make test-windows: their tests under wine
#                 (docs/windows.md)
#   make clean

CC      ?= cc
LUA_PC  := lua5.4
PKGS    := liblua5.4-dev lua5.4 libev-dev libmbedtls-dev libedit-dev lua-busted \
           libbsd-dev libmd-dev libncurses-dev pkg-config valgrind time \
           liburing-dev
OPT     ?= -O2
CFLAGS_BASE := -std=gnu99 -g -Wall -Wextra -Wno-unused-parameter -fPIC \
           -D_GNU_SOURCE -DAIO_URING -iquote src/host
LUA_CFLAGS = $(shell pkg-config --cflags $(LUA_PC) 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS   = $(shell pkg-config --libs $(LUA_PC) 2>/dev/null || echo -llua5.4)
# liburing's static archive (PIC): socket streams' I/O on Linux (loop_ev.c)
URING_LIB := -l:liburing.a
SYS_LIBS  := -lev $(URING_LIB) -lmbedtls -lmbedx509 -lmbedcrypto -lm -ldl -pthread
CLI_LIBS  := -ledit
# the aiolua program links Lua statically, its own build of Debian's
# source ($(LUA_A), below), and libev and libedit (with what libedit needs:
# tinfo, bsd, md) from Debian's static archives: every shared object costs
# each start-up a mapping and a round of symbol look-ups (bench/startup.sh).
# -Wl,-E exports Lua's API to the C modules the program loads.
CLI_LINK   = $(LUA_A) -Wl,-Bstatic -lev -ledit -ltinfo -lbsd -lmd \
             -Wl,-Bdynamic $(filter-out -lev,$(SYS_LIBS)) -Wl,-E
# the build machine's Lua compiles the embedded modules to bytecode
LUA_HOST  ?= lua5.4

# the library: everything but the CLI; exactly one loop backend
LIB_SRC := src/host/loop_ev.c src/host/timer.c src/host/sched.c src/host/alloc.c \
           src/host/modules.c src/host/host.c src/host/peer.c \
           src/bindings/errors.c src/bindings/core.c src/bindings/future.c \
           src/bindings/coro.c \
           src/bindings/stream.c \
           src/bindings/udp.c \
           src/bindings/dns.c \
           src/bindings/process.c \
           src/bindings/process_common.c \
           src/bindings/signal.c \
           src/host/pool.c \
           src/bindings/thread.c \
           src/bindings/waitq.c \
           src/bindings/queue.c \
           src/bindings/tls.c
LUA_MODS := lua/aio/init.lua \
           lua/aio/errors.lua \
           lua/aio/busted.lua \
           lua/aio/debug.lua \
           lua/aio/testing.lua \
           lua/aio/context.lua \
           lua/aio/stream.lua \
           lua/aio/udp.lua \
           lua/aio/process.lua \
           lua/aio/signal.lua \
           lua/aio/thread.lua \
           lua/aio/combinators.lua \
           lua/aio/sync.lua \
           lua/aio/queue.lua \
           lua/aio/tls.lua
HDRS    := src/host/loop.h src/host/timer.h src/host/sched.h src/host/aiolua.h src/host/alloc.h \
           src/host/pool.h src/host/repl_chunk.h src/host/repl_complete.h \
           src/bindings/waitq.h src/bindings/process.h \
           src/bindings/tls.h src/bindings/tls_ca.h

C_TESTS := tests/c/runner.c tests/c/test_alloc.c tests/c/test_timer.c tests/c/test_loop.c \
           tests/c/test_host.c tests/c/test_transport.c \
           tests/c/test_process.c tests/c/test_embed.c tests/c/test_fuzz.c \
           tests/c/test_gcm.c tests/c/test_p256.c tests/c/test_expmod.c \
           tests/c/test_dns.c

B        := build
# the program's own Lua (below)
LUA_DIR  := $(B)/lua
LUA_A    := $(LUA_DIR)/liblua5.4.a
ASAN     := $(B)/asan
LUA_ASAN_DIR := $(ASAN)/lua
LUA_ASAN_A   := $(LUA_ASAN_DIR)/liblua5.4.a
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined

.PHONY: all deps run test test-c test-lua bench clean install uninstall \
        examples fuzz fuzz-deps faults soak
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory build

run: all
	./aiolua examples/tour.lua

# ---- Debian packages ----------------------------------------------------

deps:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing \
	      || exit 1; \
	  else \
	    echo "missing packages; run as root:"; \
	    echo "  apt-get update && apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

# ---- the build ----------------------------------------------------------

.PHONY: build
build: aiolua $(B)/aio.so $(B)/libaiolua.a $(B)/aiolua.pc \
       $(B)/shared/libaiolua.so

$(B)/gen/luamods.c: $(LUA_MODS) src/host/embed_lua.sh
	@mkdir -p $(dir $@)
	LUA=$(LUA_HOST) sh src/host/embed_lua.sh $@ $(LUA_MODS)

# objects of one flavour: $(call objs,DIR)
objs = $(patsubst %.c,$(1)/%.o,$(LIB_SRC)) $(1)/gen/luamods.o

$(B)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) $(LUA_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/obj/gen/luamods.o: $(B)/gen/luamods.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) $(LUA_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/libaiolua.a: $(call objs,$(B)/obj)
	rm -f $@
	ar rcs $@ $^

# the program: the CLI and the REPL on top of the library
CLI_SRC := src/host/main.c src/host/repl.c src/host/repl_chunk.c \
           src/host/repl_complete.c
# main.c of a program that links $(LUA_A) (or the Windows one) may use
# what lua_prefetch.patch and lua_lean.patch add
$(B)/obj/src/host/main.o $(ASAN)/obj/src/host/main.o: CFLAGS += -DAIOLUA_OWN_LUA

aiolua: $(patsubst %.c,$(B)/obj/%.o,$(CLI_SRC)) $(B)/libaiolua.a $(LUA_A)
	$(CC) $(LDFLAGS) -o $@ $(patsubst %.c,$(B)/obj/%.o,$(CLI_SRC)) \
	  $(B)/libaiolua.a $(CLI_LINK)

# aio.so takes Lua's symbols from the lua5.4 that loads it.  It stays
# mapped once loaded (nodelete): the SIGCHLD handler that reaps children
# outliving their loop (loop_ev.c) must outlive the lua_State too
$(B)/aio.so: $(call objs,$(B)/obj)
	$(CC) -shared $(LDFLAGS) -Wl,-z,nodelete -o $@ $^ -lev $(URING_LIB) -lmbedtls \
	  -lmbedx509 -lmbedcrypto -lm -pthread

# the shared library lives apart from libaiolua.a, so that the in-tree
# aiolua.pc links the static one and its programs run without a path
$(B)/shared/libaiolua.so: $(call objs,$(B)/obj)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libaiolua.so -Wl,-z,nodelete -o $@ $^ \
	  $(LUA_LIBS) -lev $(URING_LIB) -lmbedtls -lmbedx509 -lmbedcrypto -lm -pthread

# aiolua.pc for headers in $(1) and libraries in $(2); $(3): extra Libs
pc = { \
	  echo "Name: aiolua"; \
	  echo "Description: asyncio for Lua 5.4 (embedding library)"; \
	  echo "Version: 0.1.0"; \
	  echo "Requires: lua5.4"; \
	  echo "Cflags: -I$(1)"; \
	  echo "Libs: -L$(2) $(3)-laiolua -lev $(URING_LIB) -lmbedtls -lmbedx509 -lmbedcrypto -lm -ldl -pthread"; \
	}

$(B)/aiolua.pc: Makefile
	@mkdir -p $(B)
	@$(call pc,$(CURDIR)/src/host,$(CURDIR)/$(B)) > $@

# ---- Debian's source packages ---------------------------------------------
#
# Lua and mbedTLS are built from Debian's source packages (issue 12), and
# the Windows build takes lua-filesystem from there too.  They are fetched
# once with `apt-get source` through a private deb-src list, so the
# system's apt state is not touched, and unpacked (with Debian's patches)
# in build/deps.

DEPS      := $(B)/deps
DEPS_PKGS := lua5.4 mbedtls lua-filesystem

$(DEPS)/src.stamp:
	@mkdir -p $(DEPS)/apt/lists/partial
	@uris=$$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1); \
	  [ -n "$$uris" ] || uris=http://deb.debian.org/debian; \
	  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	    "$$uris" > $(DEPS)/apt/src.sources
	cd $(DEPS) && A="-o Dir::Etc::sourcelist=$$PWD/apt/src.sources \
	  -o Dir::Etc::sourceparts=/nonexistent -o Dir::State::Lists=$$PWD/apt/lists \
	  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=" && \
	  apt-get -qq $$A update && \
	  apt-get -qq $$A source --download-only $(DEPS_PKGS) && \
	  rm -rf lua5.4-*/ mbedtls-*/ lua-filesystem-*/ && \
	  for d in *.dsc; do dpkg-source -q -x $$d >/dev/null || exit 1; done
	@touch $@

# ---- Lua: the program's own build of Debian's lua5.4 ------------------------
#
# ./aiolua links Lua 5.4 built here from Debian's source, with Debian's
# patches, configuration and build flags, and seven patches of ours:
# src/host/lua_stack.patch (a new thread's stack starts at 26 slots rather
# than 40 and grows by half rather than doubling, and its first two
# CallInfos come in the thread's own allocation: a sleeping task costs about
# 230 bytes less and wakes faster), src/host/lua_prefetch.patch (one new
# function, aiolua_prefetch, that main.c hands to the scheduler so it can
# start the cache misses of the tasks it will resume next) and
# src/host/lua_lean.patch (aiolua_pushlean and aiolua_newthread: the
# common waits get 6 free stack slots rather than 20, and a task's thread
# starts with a stack to match, 224 bytes less per sleeping task;
# bench/README.md, C3, C4) and src/host/lua_method.patch (obj:m() on a
# userdata finds m in its metatable's __index table with two lookups, not
# the generic __index loop) and src/host/lua_tbc.patch (aiolua_poptbc: a
# failed task's to-be-closed variables are closed by the scheduler, where a
# __close may wait) and src/host/lua_exit.patch (aiolua_closeforexit: at
# the program's exit the finalizers run as in lua_close, but the objects
# are not freed one by one) and src/host/lua_udata.patch (aiolua_udatamt
# and aiolua_setudatamt: a userdata's metatable read and set by pointer,
# for the scheduler's task and future checks).  Lua's API and ABI are otherwise unchanged, so
# C modules built for Debian's Lua load as before; aio.so and libaiolua run
# on whatever Lua their host links (without these).

LUA_PATCH := src/host/lua_stack.patch src/host/lua_prefetch.patch \
             src/host/lua_lean.patch src/host/lua_method.patch \
             src/host/lua_tbc.patch src/host/lua_exit.patch \
             src/host/lua_udata.patch
LUA_CORE  := lapi lcode lctype ldebug ldo ldump lfunc lgc llex lmem lobject \
             lopcodes lparser lstate lstring ltable ltm lundump lvm lzio \
             lauxlib lbaselib lcorolib ldblib liolib lmathlib loadlib loslib \
             lstrlib ltablib lutf8lib linit
# as debian/rules builds its static archive (`make linux`, dpkg-buildflags,
# the compiler's default PIE code); asked of dpkg-buildflags once, at the
# first compile, not once per file
LUA_BUILD_FLAGS = $(eval LUA_BUILD_FLAGS := $(shell dpkg-buildflags --get CFLAGS) \
  $(shell dpkg-buildflags --get CPPFLAGS) -DLUA_COMPAT_5_3 -DLUA_USE_LINUX)$(LUA_BUILD_FLAGS)
LUA_MULTIARCH = $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || \
                  $(CC) -print-multiarch)

$(LUA_DIR)/src.stamp: $(DEPS)/src.stamp $(LUA_PATCH)
	rm -rf $(LUA_DIR) && mkdir -p $(LUA_DIR) && \
	  cp -r $(DEPS)/lua5.4-*/src/. $(LUA_DIR)/
	for p in $(LUA_PATCH); do patch -s -d $(LUA_DIR) -p2 < $$p || exit 1; done
	printf '#ifndef _LUA_DEB_MULTIARCH_\n#define _LUA_DEB_MULTIARCH_\n#define DEB_HOST_MULTIARCH "%s"\n#endif\n' \
	  "$(LUA_MULTIARCH)" > $(LUA_DIR)/lua5.4-deb-multiarch.h
	@touch $@

$(LUA_DIR)/%.o: $(LUA_DIR)/src.stamp
	$(CC) $(LUA_BUILD_FLAGS) $(LUA_JMP_$*) -c $(LUA_DIR)/$*.c -o $@

# ldo.c unwinds with GCC's __builtin_setjmp/longjmp rather than glibc's
# (src/host/lua_jmp.h: 60 to 80 instructions less per wait of a task)
LUA_JMP_ldo := -include src/host/lua_jmp.h
$(LUA_DIR)/ldo.o $(LUA_ASAN_DIR)/ldo.o: src/host/lua_jmp.h

$(LUA_A): $(addprefix $(LUA_DIR)/,$(addsuffix .o,$(LUA_CORE)))
	rm -f $@
	ar rcs $@ $^

# ---- mbedTLS: a static, tuned build of Debian's source package (issue 12) --
#
# Debian's mbedtls 2.28 source (build/deps, above), built once into
# build/mbedtls with Debian's configuration plus src/bindings/mbedtls_config.h
# at -O3, and five patches: the base point's comb table computed once per
# process rather than once per ECDHE key and ECDSA signature
# (src/bindings/mbedtls_ecp_comb.patch), AES-GCM's whole blocks with
# AES-NI and PCLMULQDQ (src/bindings/mbedtls_gcm_aesni.patch; tls.c then
# puts the AES-GCM suites first), P-256 multiplications in 64-bit limbs
# (src/bindings/mbedtls_p256.patch), RSA's exponentiation in MULX rows
# and AVX-512 IFMA (src/bindings/mbedtls_expmod.patch) and a server that
# goes on without ALPN when the client's list has no protocol of its own,
# as Python's ssl does, rather than failing the handshake
# (src/bindings/mbedtls_alpn.patch); the p256 and expmod patches include
# src/bindings/mbedtls_p256.c and mbedtls_expmod.c, copied in as
# aiolua_p256.c and aiolua_expmod.c.  Only the static libraries are
# made (about 15 s); every link of -lmbedtls finds them first through -L,
# and aio.so and libaiolua.so do not export their symbols.

MB        := $(B)/mbedtls
MB_CONFIG := src/bindings/mbedtls_config.h
MB_PATCH  := src/bindings/mbedtls_ecp_comb.patch src/bindings/mbedtls_gcm_aesni.patch \
             src/bindings/mbedtls_p256.patch src/bindings/mbedtls_expmod.patch \
             src/bindings/mbedtls_alpn.patch
MB_FILES  := src/bindings/mbedtls_p256.c src/bindings/mbedtls_expmod.c
MB_OPT    ?= -O3
MB_DEF    := -DMBEDTLS_USER_CONFIG_FILE='"$(CURDIR)/$(MB_CONFIG)"'
# dpkg-dev for apt-get source; strace for a TLS spec that counts writes
PKGS      += dpkg-dev strace
SYS_LIBS  := -L$(MB)/library $(SYS_LIBS)
override LDFLAGS += -L$(MB)/library \
  -Wl,--exclude-libs,libmbedtls.a:libmbedx509.a:libmbedcrypto.a

$(MB)/src.stamp: $(DEPS)/src.stamp $(MB_PATCH) $(MB_FILES)
	rm -rf $(MB) && cp -r $(DEPS)/mbedtls-*/ $(MB)
	for p in $(MB_PATCH); do patch -s -d $(MB) -p1 < $$p || exit 1; done
	for f in $(MB_FILES); do cp $$f $(MB)/library/aiolua_$${f#src/bindings/mbedtls_}; done
	@touch $@

$(MB)/lib.stamp: $(MB)/src.stamp $(MB_CONFIG)
	$(MAKE) -s -C $(MB)/library clean >/dev/null
	$(MAKE) -s -C $(MB)/library \
	  CFLAGS='$(MB_OPT) -g -fPIC -DMBEDTLS_USER_CONFIG_FILE=\"$(CURDIR)/$(MB_CONFIG)\"' \
	  static >/dev/null
	@touch $@

# tls.c (and the GCM test) see the same headers and configuration as the
# library; tls.c puts AES-GCM first because of the patch
TLS_OBJS := $(B)/obj/src/bindings/tls.o $(ASAN)/obj/src/bindings/tls.o \
            $(B)/fuzz/obj/src/bindings/tls.o \
            $(B)/obj/tests/c/test_gcm.o $(ASAN)/obj/tests/c/test_gcm.o \
            $(B)/obj/tests/c/test_p256.o $(ASAN)/obj/tests/c/test_p256.o \
            $(B)/obj/tests/c/test_expmod.o $(ASAN)/obj/tests/c/test_expmod.o
$(TLS_OBJS): $(MB)/lib.stamp
$(TLS_OBJS): CFLAGS += -I$(MB)/include $(MB_DEF) -DAIO_MBEDTLS_FAST_GCM
aiolua $(B)/aio.so $(B)/shared/libaiolua.so: | $(MB)/lib.stamp

# ---- install --------------------------------------------------------------

PREFIX  ?= /usr/local
DESTDIR ?=
LUA_CMOD = $(PREFIX)/lib/lua/5.4
I        = $(DESTDIR)$(PREFIX)

install: build
	install -d $(I)/bin $(I)/include $(I)/lib/pkgconfig $(DESTDIR)$(LUA_CMOD)
	install -m 755 aiolua $(I)/bin/aiolua
	install -m 644 src/host/aiolua.h $(I)/include/aiolua.h
	install -m 644 $(B)/libaiolua.a $(I)/lib/libaiolua.a
	install -m 755 $(B)/shared/libaiolua.so $(I)/lib/libaiolua.so
	install -m 755 $(B)/aio.so $(DESTDIR)$(LUA_CMOD)/aio.so
	$(call pc,$(PREFIX)/include,$(PREFIX)/lib,-Wl$(comma)-rpath$(comma)$(PREFIX)/lib ) \
	  > $(I)/lib/pkgconfig/aiolua.pc

comma := ,

uninstall:
	rm -f $(I)/bin/aiolua $(I)/include/aiolua.h $(I)/lib/libaiolua.a \
	  $(I)/lib/libaiolua.so $(DESTDIR)$(LUA_CMOD)/aio.so \
	  $(I)/lib/pkgconfig/aiolua.pc

# ---- examples -------------------------------------------------------------

# built the way an application builds against aiolua: pkg-config only
examples: build
	@mkdir -p $(B)/examples
	$(CC) -std=gnu99 -O2 -Wall -o $(B)/examples/embed examples/embed/main.c \
	  $$(PKG_CONFIG_PATH=$(B) pkg-config --cflags --libs aiolua)
	$(CC) -std=gnu99 -O2 -Wall -o $(B)/examples/ev_app examples/embed/ev_app.c \
	  $$(PKG_CONFIG_PATH=$(B) pkg-config --cflags --libs aiolua)

# ---- the sanitizer build and the tests ----------------------------------

$(ASAN)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 $(SANFLAGS) $(LUA_CFLAGS) $(CFLAGS) -c $< -o $@

$(ASAN)/obj/gen/luamods.o: $(B)/gen/luamods.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 $(SANFLAGS) $(LUA_CFLAGS) -c $< -o $@

$(ASAN)/aiolua: $(patsubst %.c,$(ASAN)/obj/%.o,$(CLI_SRC)) $(call objs,$(ASAN)/obj) \
                $(LUA_ASAN_A)
	$(CC) $(SANFLAGS) -o $@ $(filter-out $(LUA_ASAN_A),$^) \
	  $(CLI_LINK:$(LUA_A)=$(LUA_ASAN_A))

# its Lua: the same sources with Lua's API checks on (LUA_USE_APICHECK), so
# a C function that pushes past the stack slots it was given aborts the
# tests; a lean one (src/host/lua_lean.patch) has only AIO_LEAN_SLOTS
$(LUA_ASAN_DIR)/%.o: $(LUA_DIR)/src.stamp
	@mkdir -p $(dir $@)
	$(CC) $(LUA_BUILD_FLAGS) -DLUA_USE_APICHECK $(if $(LUA_JMP_$*),$(LUA_JMP_$*) -DAIOLUA_JMP_ASAN) \
	  -c $(LUA_DIR)/$*.c -o $@

$(LUA_ASAN_A): $(addprefix $(LUA_ASAN_DIR)/,$(addsuffix .o,$(LUA_CORE)))
	rm -f $@
	ar rcs $@ $^

$(ASAN)/ctest: $(patsubst %.c,$(ASAN)/obj/%.o,$(C_TESTS)) $(call objs,$(ASAN)/obj)
	$(CC) $(SANFLAGS) -o $@ $^ $(LUA_LIBS) $(SYS_LIBS)

# the runner's list of tests is a header of its own
$(B)/obj/tests/c/runner.o $(ASAN)/obj/tests/c/runner.o: tests/c/test_list.h

# the same tests without sanitizers, for valgrind
$(B)/ctest: $(patsubst %.c,$(B)/obj/%.o,$(C_TESTS)) $(B)/libaiolua.a
	$(CC) -o $@ $(patsubst %.c,$(B)/obj/%.o,$(C_TESTS)) $(B)/libaiolua.a \
	  $(LUA_LIBS) $(SYS_LIBS)

test: deps
	@$(MAKE) --no-print-directory build $(ASAN)/aiolua $(ASAN)/ctest $(B)/ctest \
	  $(ASAN)/faults
	@sh tests/run.sh

bench: all
	@sh bench/run.sh
	@bash bench/startup.sh

clean:
	rm -rf $(B) aiolua

# ---- reliability: fuzzing, fault injection, soak (issue 11) --------------

# libFuzzer needs clang and its runtime; only `make fuzz` asks for them
FUZZ_PKGS    := clang libclang-rt-14-dev
FUZZ_CC      ?= clang
FUZZ         := $(B)/fuzz
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -fsanitize=address,undefined -fno-omit-frame-pointer \
                -fno-sanitize-recover=undefined -Wno-typedef-redefinition
FUZZ_TARGETS := stream thread tls cli repl
FUZZ_REPL_OBJS := $(FUZZ)/obj/src/host/repl.o $(FUZZ)/obj/src/host/repl_chunk.o \
                  $(FUZZ)/obj/src/host/repl_complete.o

.SECONDARY: $(call objs,$(FUZZ)/obj) $(FUZZ_REPL_OBJS)

fuzz-deps:
	@$(MAKE) --no-print-directory deps PKGS="$(FUZZ_PKGS)"

$(FUZZ)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_BASE) -O1 -fsanitize=fuzzer-no-link $(FUZZ_FLAGS) \
	  $(LUA_CFLAGS) -c $< -o $@

$(FUZZ)/obj/gen/luamods.o: $(B)/gen/luamods.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_BASE) -O1 $(FUZZ_FLAGS) $(LUA_CFLAGS) -c $< -o $@

$(FUZZ)/fuzz_cli: $(call objs,$(FUZZ)/obj) $(FUZZ_REPL_OBJS)

$(FUZZ)/fuzz_%: tests/fuzz/fuzz_host.c tests/fuzz/%.lua $(call objs,$(FUZZ)/obj)
	$(FUZZ_CC) $(CFLAGS_BASE) -O1 -fsanitize=fuzzer $(FUZZ_FLAGS) \
	  $(LUA_CFLAGS) -DFUZZ_SCRIPT='"tests/fuzz/$*.lua"' -o $@ \
	  tests/fuzz/fuzz_host.c $(call objs,$(FUZZ)/obj) $(LUA_LIBS) $(SYS_LIBS)

# the CLI's argument parser: main.c itself, included
$(FUZZ)/fuzz_cli: tests/fuzz/fuzz_cli.c src/host/main.c $(HDRS)
	$(FUZZ_CC) $(CFLAGS_BASE) -O1 -fsanitize=fuzzer $(FUZZ_FLAGS) \
	  $(LUA_CFLAGS) -o $@ tests/fuzz/fuzz_cli.c $(call objs,$(FUZZ)/obj) \
	  $(FUZZ_REPL_OBJS) $(LUA_LIBS) $(SYS_LIBS) $(CLI_LIBS)

# the REPL's chunk assembly (incomplete(), continuation lines):
# repl_chunk.c itself, included
$(FUZZ)/fuzz_repl: tests/fuzz/fuzz_repl.c src/host/repl_chunk.c $(HDRS) $(call objs,$(FUZZ)/obj)
	$(FUZZ_CC) $(CFLAGS_BASE) -O1 -fsanitize=fuzzer $(FUZZ_FLAGS) \
	  $(LUA_CFLAGS) -o $@ tests/fuzz/fuzz_repl.c $(call objs,$(FUZZ)/obj) \
	  $(LUA_LIBS) $(SYS_LIBS) $(CLI_LIBS)

# each harness runs FUZZ_SECONDS from the kept corpus; new finds go to
# build/fuzz/corpus-<name>, crashes to build/fuzz/crash-<name>-*
fuzz: fuzz-deps
	@$(MAKE) --no-print-directory $(patsubst %,$(FUZZ)/fuzz_%,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ)/corpus-$$t; rm -f $(FUZZ)/crash-$$t-*; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  FUZZ_DIR=$(CURDIR) ASAN_OPTIONS=detect_leaks=1 $(FUZZ)/fuzz_$$t \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	    -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ)/crash-$$t- \
	    $(FUZZ)/corpus-$$t tests/fuzz/corpus/$$t 2>&1 | \
	    grep -E '^(#[0-9]+ +(INITED|DONE)|stat::|==|SUMMARY|fuzz:|Done)' || true; \
	  test -z "$$(ls $(FUZZ)/crash-$$t-* 2>/dev/null)" \
	    || { echo "fuzz $$t: crash kept in $(FUZZ)/crash-$$t-*"; exit 1; }; \
	done

# the failing-allocator sweep, under ASan + UBSan + LeakSanitizer;
# FAULT_STEP=k tries every k-th allocation only
$(ASAN)/faults: $(ASAN)/obj/tests/faults/faults.o $(call objs,$(ASAN)/obj)
	$(CC) $(SANFLAGS) -o $@ $^ $(LUA_LIBS) $(SYS_LIBS)

faults: deps
	@$(MAKE) --no-print-directory $(ASAN)/faults
	ASAN_OPTIONS=detect_leaks=1 $(ASAN)/faults tests/faults/script.lua
	ASAN_OPTIONS=detect_leaks=1 $(ASAN)/faults tests/faults/combinators.lua

# about 2 minutes: SOAK_CONNS connections for SOAK_SECONDS through an
# aiolua echo server, random cancels and closes on both sides
SOAK_CONNS   ?= 5000
SOAK_SECONDS ?= 60
soak: all
	SOAK_CONNS=$(SOAK_CONNS) SOAK_SECONDS=$(SOAK_SECONDS) AIOLUA_BIN=./aiolua \
	  ./aiolua tests/soak/soak.lua

# ---- Windows: cross-built with mingw-w64, tested under wine (issue 10) -----
#
#   make windows       build/win/aiolua.exe (Lua static inside), build/win/aio.dll
#                      and lua.exe + lua54.dll (a stock Lua to `require "aio"`),
#                      with src/host/loop_iocp.c instead of loop_ev.c
#   make test-windows  C tests and the portable busted specs under wine
#
# Lua 5.4 and mbedTLS come from Debian's source packages at build time
# (../shared/windows/NOTES.md); they are built once into build/win/deps.

WPKGS   := gcc-mingw-w64-x86-64 wine64 wine dpkg-dev
WCC     := x86_64-w64-mingw32-gcc
WAR     := x86_64-w64-mingw32-ar
W       := $(B)/win
WD      := $(W)/deps
WLUA    := $(WD)/lua
WCFLAGS := -std=gnu99 -O2 -g -Wall -Wextra -Wno-unused-parameter \
           -D_WIN32_WINNT=0x0601 -DWIN32_LEAN_AND_MEAN -iquote src/host \
           -I$(WLUA) -I$(WD)/mbedtls/include
WLIBS   := -static -L$(WD)/mbedtls/library -lmbedtls -lmbedx509 -lmbedcrypto \
           -lws2_32 -ladvapi32 -lcrypt32 -lpthread -lm
W_LIB_SRC := $(subst src/bindings/process.c,src/bindings/process_win.c,\
           $(subst src/host/loop_ev.c,src/host/loop_iocp.c,$(LIB_SRC))) \
           src/bindings/tls_ca_win.c
W_CLI_SRC := src/host/main.c src/host/repl_win.c src/host/repl_chunk.c \
             src/host/linein_win.c
W_C_TESTS := tests/c/runner.c tests/c/test_alloc.c tests/c/test_timer.c tests/c/test_host.c \
           tests/win/test_iocp.c tests/win/test_linein.c src/host/linein_win.c \
           tests/c/test_gcm.c tests/c/test_p256.c tests/c/test_expmod.c
W_OBJS  = $(patsubst %.c,$(W)/obj/%.o,$(W_LIB_SRC)) $(W)/obj/gen/luamods.o

.PHONY: windows windows-deps test-windows
windows: windows-deps
	@$(MAKE) --no-print-directory $(W)/aiolua.exe $(W)/aio.dll $(W)/lua.exe

windows-deps:
	@missing=""; for p in $(WPKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
	      --no-install-recommends $$missing || exit 1; \
	  else \
	    echo "missing packages; run as root:"; \
	    echo "  apt-get install -y --no-install-recommends$$missing"; \
	    exit 1; \
	  fi; \
	fi
	@$(MAKE) --no-print-directory $(WD)/src.stamp

# the sources of lua5.4 (with our patch, as on Linux), mbedtls and
# lua-filesystem, from build/deps
$(WD)/src.stamp: $(DEPS)/src.stamp $(LUA_PATCH) $(MB_PATCH) $(MB_FILES)
	rm -rf $(WLUA) $(WD)/mbedtls $(WD)/lfs && mkdir -p $(WD) && \
	  cp -r $(DEPS)/lua5.4-*/src $(WLUA) && \
	  cp -r $(DEPS)/mbedtls-*/ $(WD)/mbedtls && \
	  cp -r $(DEPS)/lua-filesystem-*/ $(WD)/lfs
	for p in $(LUA_PATCH); do patch -s -d $(WLUA) -p2 < $$p || exit 1; done
	for p in $(MB_PATCH); do patch -s -d $(WD)/mbedtls -p1 < $$p || exit 1; done
	for f in $(MB_FILES); do cp $$f $(WD)/mbedtls/library/aiolua_$${f#src/bindings/mbedtls_}; done
	@touch $@

$(WD)/liblua.a: $(WD)/src.stamp
	cd $(WLUA) && for f in $(LUA_CORE); do \
	  $(WCC) -O2 -DLUA_COMPAT_5_3 -c $$f.c -o $$f.o || exit 1; done && \
	  $(WAR) rcs ../liblua.a $(addsuffix .o,$(LUA_CORE))

# the same Lua with its library in lua54.dll, and a lua.exe, for
# `require "aio"`
$(W)/lua54.dll: $(WD)/src.stamp
	@mkdir -p $(WD)/dll
	for f in $(LUA_CORE); do \
	  $(WCC) -O2 -DLUA_COMPAT_5_3 -DLUA_BUILD_AS_DLL -c $(WLUA)/$$f.c \
	    -o $(WD)/dll/$$f.o || exit 1; done
	$(WCC) -shared -o $@ $(addprefix $(WD)/dll/,$(addsuffix .o,$(LUA_CORE))) \
	  -Wl,--out-implib,$(WD)/liblua54.dll.a

$(W)/lua.exe: $(W)/lua54.dll
	$(WCC) -O2 -DLUA_COMPAT_5_3 -DLUA_BUILD_AS_DLL -o $@ $(WLUA)/lua.c \
	  $(WD)/liblua54.dll.a

$(WD)/mbedtls.stamp: $(WD)/src.stamp
	$(MAKE) -s -C $(WD)/mbedtls/library CC=$(WCC) AR=$(WAR) WINDOWS_BUILD=1 \
	  CFLAGS=-O2 static >/dev/null
	@touch $@

$(W)/obj/%.o: %.c $(HDRS) $(WD)/src.stamp
	@mkdir -p $(dir $@)
	$(WCC) $(WCFLAGS) -c $< -o $@

$(W)/obj/gen/luamods.o: $(B)/gen/luamods.c $(WD)/src.stamp
	@mkdir -p $(dir $@)
	$(WCC) $(WCFLAGS) -c $< -o $@

$(W)/libaiolua.a: $(W_OBJS)
	rm -f $@
	$(WAR) rcs $@ $^

$(W)/aiolua.exe: $(patsubst %.c,$(W)/obj/%.o,$(W_CLI_SRC)) $(W)/libaiolua.a \
                 $(WD)/liblua.a $(WD)/mbedtls.stamp
	$(WCC) -o $@ $(patsubst %.c,$(W)/obj/%.o,$(W_CLI_SRC)) $(W)/libaiolua.a \
	  $(WD)/liblua.a $(WLIBS)

# the module for a stock lua.exe: Lua's symbols from lua54.dll
$(W)/aio.dll: $(W_OBJS) $(W)/lua54.dll $(WD)/mbedtls.stamp
	$(WCC) -shared -o $@ $(W_OBJS) $(WD)/liblua54.dll.a $(WLIBS)

# the tests: the C tests, and aiolua-test.exe, aiolua with lfs and small
# term/system modules preloaded, for busted (tests/win/preload.c)
$(W)/ctest.exe: $(patsubst %.c,$(W)/obj/%.o,$(W_C_TESTS)) $(W)/libaiolua.a \
                $(WD)/liblua.a $(WD)/mbedtls.stamp
	$(WCC) -o $@ $(patsubst %.c,$(W)/obj/%.o,$(W_C_TESTS)) $(W)/libaiolua.a \
	  $(WD)/liblua.a $(WLIBS)

$(W)/obj/lfs.o: $(WD)/src.stamp
	@mkdir -p $(dir $@)
	$(WCC) -O2 -I$(WLUA) -c $(WD)/lfs/src/lfs.c -o $@

$(W)/aiolua-test.exe: $(patsubst %.c,$(W)/obj/%.o,$(W_CLI_SRC)) \
                      $(W)/obj/tests/win/preload.o $(W)/obj/lfs.o \
                      $(W)/libaiolua.a $(WD)/liblua.a $(WD)/mbedtls.stamp
	$(WCC) -o $@ $(patsubst %.c,$(W)/obj/%.o,$(W_CLI_SRC)) \
	  $(W)/obj/tests/win/preload.o $(W)/obj/lfs.o $(W)/libaiolua.a \
	  $(WD)/liblua.a -Wl,--wrap=luaL_openlibs $(WLIBS)

$(W)/obj/src/host/linein_win.o $(W)/obj/src/host/repl_win.o \
  $(W)/obj/tests/win/test_linein.o: src/host/linein_win.h

# the same runner as on Linux, with the list of the tests that apply
$(W)/obj/tests/c/runner.o: WCFLAGS += -DTEST_LIST='"../win/test_list.h"'
# mbedTLS has the same patches as on Linux (src.stamp above)
$(W)/obj/src/bindings/tls.o: WCFLAGS += -DAIO_MBEDTLS_FAST_GCM
$(W)/obj/src/host/main.o: WCFLAGS += -DAIOLUA_OWN_LUA
$(W)/obj/tests/c/runner.o: tests/win/test_list.h

test-windows: windows
	@$(MAKE) --no-print-directory $(W)/ctest.exe $(W)/aiolua-test.exe
	@sh tests/win/run.sh
