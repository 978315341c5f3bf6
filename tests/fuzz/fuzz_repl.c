/*
** fuzz_repl.c: the REPL's chunk assembly (src/host/repl_chunk.c, included):
** the input, split at newlines, is what a user types.  Each chunk is tried
** as "return <line>;" first, then as statements, reading more lines while
** the compiler says the chunk was cut short (incomplete()), as load()
** does.  Checked: no crash, no sanitizer report, no hang; incomplete()
** holds only for a syntax error (a chunk cut short), never for one that
** compiled.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/host/repl_chunk.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  char *buf, *line, *next;
  int status;
  if (size > 4096) return 0;
  if (L == NULL) L = luaL_newstate();
  buf = malloc(size + 1);
  memcpy(buf, data, size);
  buf[size] = '\0';
  line = buf;
  while (line != NULL) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    lua_pushfstring(L, "return %s;", line[0] == '=' ? line + 1 : line);
    status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1),
                             AIO_REPL_CHUNKNAME);
    if (status == LUA_OK) {
      lua_settop(L, 0);
      line = next;
      continue;
    }
    lua_settop(L, 0);
    lua_pushstring(L, line);
    for (;;) {  /* continuation lines, as load() */
      size_t len;
      const char *chunk = lua_tolstring(L, 1, &len);
      status = luaL_loadbuffer(L, chunk, len, AIO_REPL_CHUNKNAME);
      if (!incomplete(L, status)) break;
      if (status != LUA_ERRSYNTAX) abort();  /* only a cut-short chunk */
      lua_pop(L, 1);
      line = next;
      if (line == NULL) break;  /* end of input: the chunk stays cut short */
      next = strchr(line, '\n');
      if (next) *next++ = '\0';
      lua_pushliteral(L, "\n");
      lua_pushstring(L, line);
      lua_concat(L, 3);
    }
    if (status == LUA_OK && incomplete(L, status)) abort();
    lua_settop(L, 0);
    line = next;
  }
  free(buf);
  return 0;
}
