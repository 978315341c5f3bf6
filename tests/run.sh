#!/bin/sh
# tests/run.sh: what `make test` runs after the build.  The C tests on the
# sanitizer build, the embedding tests once more under valgrind, then the
# busted specs under the sanitizer aiolua and again under the release
# ./aiolua, then the REPL driven on a
# pseudo-terminal (tests/repl, python3).  Last line: "N passed, N failed";
# the status is 1 when anything failed (a leak or a sanitizer report fails
# the run that found it).
B=${B:-build}
export AIOLUA_BIN=${AIOLUA_BIN:-$PWD/$B/asan/aiolua}
AIOLUA=${AIOLUA:-$B/asan/aiolua}
pass=0
fail=0
log=$(mktemp -d /tmp/aiolua-test.XXXXXX)
trap 'rm -rf "$log"' EXIT

count() {  # count FILE: add its PASS/FAIL or ok/not ok lines
  p=$(grep -c -E '^(PASS |ok )' "$1")
  f=$(grep -c -E '^(FAIL |not ok )' "$1")
  pass=$((pass + p))
  fail=$((fail + f))
}

echo "== C tests (AddressSanitizer + UBSan)"
ASAN_OPTIONS=detect_leaks=1 "$B/asan/ctest" >"$log/c.out" 2>&1
rc=$?
cat "$log/c.out"
count "$log/c.out"
[ $rc -eq 0 ] || { grep -q '^FAIL ' "$log/c.out" || { echo "FAIL ctest: exit $rc"; fail=$((fail + 1)); }; }

echo "== C tests under valgrind"
if command -v valgrind >/dev/null 2>&1; then
  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    "$B/ctest" >"$log/v.out" 2>&1
  rc=$?
  sed 's/^PASS /PASS valgrind:/; s/^FAIL /FAIL valgrind:/' "$log/v.out"
  sed 's/^PASS /PASS valgrind:/; s/^FAIL /FAIL valgrind:/' "$log/v.out" >"$log/v2.out"
  count "$log/v2.out"
  if [ $rc -eq 99 ]; then echo "FAIL valgrind: errors or leaks (above)"; fail=$((fail + 1)); fi
else
  echo "(valgrind not installed: skipped)"
fi

echo "== the embedding examples, built with pkg-config (make examples)"
for ex in main ev_app; do
  if cc -std=gnu99 -o "$log/$ex" examples/embed/$ex.c \
       $(PKG_CONFIG_PATH=$B pkg-config --cflags --libs aiolua) >"$log/e.out" 2>&1 &&
     { if command -v valgrind >/dev/null 2>&1; then
         valgrind -q --error-exitcode=99 --leak-check=full "$log/$ex"
       else "$log/$ex"; fi; } >>"$log/e.out" 2>&1; then
    echo "PASS examples/embed/$ex"; pass=$((pass + 1))
  else
    cat "$log/e.out"; echo "FAIL examples/embed/$ex"; fail=$((fail + 1))
  fi
done

echo "== the failing-allocator sweep (tests/faults, make faults)"
if [ -x "$B/asan/faults" ]; then
  { ASAN_OPTIONS=detect_leaks=1 "$B/asan/faults" tests/faults/script.lua &&
    ASAN_OPTIONS=detect_leaks=1 "$B/asan/faults" tests/faults/combinators.lua; } >"$log/f.out" 2>&1
  rc=$?
  grep -E '^(faults|FAIL|N=)|ERROR|SUMMARY' "$log/f.out"
  if [ $rc -eq 0 ]; then echo "PASS faults: sweep"; pass=$((pass + 1))
  else tail -40 "$log/f.out"; echo "FAIL faults: exit status $rc"; fail=$((fail + 1)); fi
fi

# specs HOST ABS_HOST NAME [PREFIX]: the busted specs with HOST as the
# Lua (ABS_HOST, its absolute path, for specs that start it themselves);
# PREFIX is put before each test's name
specs() {
  echo "== busted specs (tests/lua) with $3 $1"
  AIOLUA_BIN="$2" ASAN_OPTIONS=detect_leaks=1 busted --lua="$1" -o TAP tests/lua \
    >"$log/$3.raw" 2>&1
  rc=$?
  sed "s/^\(\(not \)\{0,1\}ok [0-9]* - \)/\1$4/" "$log/$3.raw" >"$log/$3.out"
  cat "$log/$3.out"
  count "$log/$3.out"
  if [ $rc -ne 0 ] && ! grep -q '^not ok' "$log/$3.out"; then
    echo "FAIL busted ($3): exit status $rc (a crash, a sanitizer report or a load error above)"
    fail=$((fail + 1))
  fi
}

specs "$AIOLUA" "$AIOLUA_BIN" sanitizer ""
# the same specs once more with the release build, the binary users run:
# its Lua differs (no API checks; src/host/lua_jmp.h's unwinding without
# the sanitizer's hook) and it is optimised (about 25 s)
REL=${AIOLUA_REL:-$PWD/aiolua}
specs "$REL" "$REL" release "release: "

echo "== REPL on a pseudo-terminal (tests/repl) with $AIOLUA"
if command -v python3 >/dev/null 2>&1; then
  for t in tests/repl/test_*.py; do
    ASAN_OPTIONS=detect_leaks=1 AIOLUA="$AIOLUA" python3 "$t" >"$log/r.out" 2>&1
    rc=$?
    cat "$log/r.out"
    count "$log/r.out"
    if [ $rc -ne 0 ] && ! grep -q '^FAIL ' "$log/r.out"; then
      echo "FAIL $t: exit status $rc (a crash or an error above)"
      fail=$((fail + 1))
    fi
  done
else
  echo "(python3 not installed: skipped)"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
