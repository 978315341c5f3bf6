/*
** fuzz_repl.c: the REPL's chunk assembly (src/host/repl_chunk.c, included):
** the input, split at newlines, is what a user types, fed to the REPL's own
** load() through a line reader that reads it.  Each chunk is tried as
** "return <line>;" first, then as statements, reading more lines while the
** compiler says the chunk was cut short.  Checked: no crash, no sanitizer
** report, no hang; load() leaves exactly one value (the function, or the
** error message); a chunk is reported cut short only when the input ended
** inside it.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/host/repl_chunk.c"

static const char *fz_next;  /* the rest of the input; NULL after the last line */
static aio_repl_buf fz_buf;

/* the next line of the input, as a terminal would give it */
static int fz_read_line(const char *prompt) {
  const char *nl;
  size_t n;
  (void)prompt;
  if (fz_next == NULL) return R_EOF;
  nl = strchr(fz_next, '\n');
  n = nl ? (size_t)(nl - fz_next) : strlen(fz_next);
  if (aio__repl_buf_add(&fz_buf, fz_next, n) != 0) abort();
  fz_next = nl ? nl + 1 : NULL;
  return R_LINE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  aio_repl_io io = { fz_read_line, &fz_buf, NULL };
  char *buf;
  int status;
  if (size > 4096) return 0;
  if (L == NULL) L = luaL_newstate();
  buf = malloc(size + 1);
  memcpy(buf, data, size);
  buf[size] = '\0';
  fz_next = buf;
  while ((status = load(L, &io)) != -1) {
    if (status < 0 || lua_gettop(L) != 1) abort();  /* no Ctrl-C, no exit */
    if (status == LUA_OK ? !lua_isfunction(L, 1) : !lua_isstring(L, 1))
      abort();
    if (status != LUA_OK && incomplete(L, status) && fz_next != NULL)
      abort();  /* cut short, yet the input went on */
    lua_settop(L, 0);
  }
  if (lua_gettop(L) != 0) abort();
  aio__repl_buf_clear(&fz_buf);
  free(buf);
  return 0;
}
