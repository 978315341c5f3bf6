#!/bin/sh
# tests/win/run.sh: what `make test-windows` runs after the cross build:
# the C tests (build/win/ctest.exe) and the busted specs that apply on
# Windows, under wine, each under a timeout.  Wine's exit status is not
# trusted alone (a crash can report 0, ../shared/windows/NOTES.md): a run
# also fails when its output lacks the end it should have (the TAP plan
# line of busted).  Last line: "N passed, N failed"; status 1 on failure.
# wineserver is stopped at the end of every run (trap).
W=${W:-build/win}
export WINEPREFIX=${WINEPREFIX:-$PWD/$W/prefix}
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml=;winedbg.exe=d"
export LUA_PATH='/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;./?.lua;./?/init.lua'
export LUA_CPATH=''
# a test's deadline (tests/lua/helper.lua): connects cost a wineserver
# round trip each, 10,000 of them take about 30 s under wine
export AIOLUA_TEST_LIMIT=${AIOLUA_TEST_LIMIT:-90}
LIMIT=${AIOLUA_WIN_TIMEOUT:-300}
pass=0
fail=0
log=$(mktemp -d /tmp/aiolua-wintest.XXXXXX)
trap 'wineserver -k >/dev/null 2>&1; rm -rf "$log"' EXIT
trap 'exit 1' INT TERM

# the specs that apply on Windows, and the tests in them that do not
# (they start subprocesses with a POSIX shell or send POSIX signals):
# Lua patterns on the test names, one --filter-out each
SPECS="lua_build task loop coro testing thread dns debug signal stream udp combinators sync queue windows iocp process_win tls_win tls_ca cli_win repl_win"
set -- "SIGQUIT" "%-%-debug" "AIOLUA_DEBUG" "holds the loop too long" \
  "failed Future nobody looked at" "returns the name of the signal" \
  "takes numbers too" "can be cancelled, and leaves" \
  "runs the handler on the loop" "replaces an earlier handler" \
  "runs the handler in a copy of the context" \
  "passes the extra arguments" "a method with its object" "while a call is in flight" \
  "the refusal found by a later send" \
  "shuts a server down" "an attempt that hangs" "python3" "Unix sockets" \
  "real peers" "closed port raises ECONNREFUSED" "reuse_port" \
  "collected while suspended" "where Debian's lua5.4 does" \
  "warns once for an eager task's step" "a callback that holds the loop" \
  "the signals a signal wait watches"
for pat in "$@"; do shift; set -- "$@" "--filter-out=$pat"; done

count() {  # count FILE: add its PASS/FAIL or ok/not ok lines
  np=$(grep -c -E '^(PASS |ok )' "$1")
  nf=$(grep -c -E '^(FAIL |not ok )' "$1")
  pass=$((pass + np))
  fail=$((fail + nf))
}

if [ ! -f "$WINEPREFIX/system.reg" ]; then
  echo "== wineboot (a new prefix in $WINEPREFIX)"
  wineboot -i >/dev/null 2>&1 || { echo "FAIL wineboot"; echo "0 passed, 1 failed"; exit 1; }
fi
wineserver -p >/dev/null 2>&1

# a certificate for tests/win/tls_win_spec.lua, made with the host's openssl
mkdir -p "$W/tls"
if [ ! -f "$W/tls/server.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/tls/server.key" \
    -out "$W/tls/server.pem" -days 3650 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost >/dev/null 2>&1 \
    || echo "(openssl failed: the TLS spec will fail)"
fi

# The C tests run with a pty for stdin (script(1), util-linux): wine then
# gives the process a console, so the Ctrl-C tests can send a
# CTRL_C_EVENT (GenerateConsoleCtrlEvent); headless wine has none otherwise.
echo "== C tests under wine ($W/ctest.exe), on a console"
if command -v script >/dev/null 2>&1; then
  timeout "$LIMIT" script -qec "wine $W/ctest.exe >$log/c.out 2>&1" /dev/null \
    </dev/null >/dev/null 2>&1
else
  echo "(script(1) not installed: no console, the Ctrl-C tests fail)"
  timeout "$LIMIT" wine "$W/ctest.exe" >"$log/c.out" 2>&1
fi
rc=$?
cat "$log/c.out"
count "$log/c.out"
n=$(grep -c -E '^(PASS|FAIL) ' "$log/c.out")
want=$(grep -c '^T(' tests/win/test_list.h)
if [ "$n" -ne "$want" ]; then
  echo "FAIL ctest.exe: $n of $want tests reported, exit $rc (a crash or a timeout)"
  fail=$((fail + 1))
elif [ $rc -ne 0 ] && ! grep -q '^FAIL ' "$log/c.out"; then
  echo "FAIL ctest.exe: exit $rc"
  fail=$((fail + 1))
fi

echo "== busted specs under wine ($W/aiolua-test.exe)"
for s in $SPECS; do
  spec=tests/lua/${s}_spec.lua
  [ -f "$spec" ] || spec=tests/win/${s}_spec.lua
  timeout "$LIMIT" wine "$W/aiolua-test.exe" /usr/bin/busted -o TAP \
    --helper=tests/lua/helper.lua "$@" "$spec" \
    >"$log/b.out" 2>&1
  rc=$?
  cat "$log/b.out"
  count "$log/b.out"
  if ! grep -q '^1\.\.[0-9]' "$log/b.out"; then
    echo "FAIL $spec: no TAP plan line, exit $rc (a crash or a timeout)"
    fail=$((fail + 1))
  elif [ $rc -ne 0 ] && ! grep -q '^not ok' "$log/b.out"; then
    echo "FAIL $spec: exit $rc"
    fail=$((fail + 1))
  fi
done

# Ctrl-C for aiolua.exe: wine turns a SIGINT sent to a Windows process
# into a CTRL_C_EVENT (tests/win/ctrl_c.py)
echo "== Ctrl-C under wine (tests/win/ctrl_c.py)"
if command -v python3 >/dev/null 2>&1; then
  AIOLUA_EXE="$W/aiolua.exe" timeout "$LIMIT" python3 tests/win/ctrl_c.py \
    >"$log/k.out" 2>&1
  rc=$?
  cat "$log/k.out"
  count "$log/k.out"
  if [ $rc -ne 0 ] && ! grep -q '^FAIL ' "$log/k.out"; then
    echo "FAIL tests/win/ctrl_c.py: exit $rc (a crash, a hang or an error above)"
    fail=$((fail + 1))
  fi
else
  echo "FAIL tests/win/ctrl_c.py: python3 is not installed"
  fail=$((fail + 1))
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
