/*
** repl_complete.c: Tab completion at the REPL (repl.c hooks it into
** libedit).  The word before the cursor, dots and colons included, is a
** path from the globals: "aio.sl" completes to "aio.sleep", "r:rea" to the
** Reader's methods, "pri" to "print".  Candidates are the string keys of
** the last table (pairs, so aio's __pairs loads its modules) and of the
** __index tables of its metatables, for a string the string library;
** after a colon only functions; at the top level Lua's keywords too.  As
** Python's rlcompleter, the path is evaluated (an __index may run); that
** runs protected, and nothing is completed when it fails.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "repl_complete.h"

/* candidates(text) -> sorted array of completions */
static const char collect[] =
  "local type, pairs, sort = type, pairs, table.sort\n"
  "local getmt = debug and debug.getmetatable or getmetatable\n"
  "local G = _G\n"
  "local keywords = { 'and', 'break', 'do', 'else', 'elseif', 'end', 'false',\n"
  "  'for', 'function', 'goto', 'if', 'in', 'local', 'nil', 'not', 'or',\n"
  "  'repeat', 'return', 'then', 'true', 'until', 'while' }\n"
  "return function(text)\n"
  "  local path, sep, partial = text:match('^(.-)([.:])([%w_]*)$')\n"
  "  local base, out, seen = G, {}, {}\n"
  "  if path == nil then\n"
  "    partial = text\n"
  "    if not partial:match('^[%a_][%w_]*$') then return out end\n"
  "  else\n"
  "    if not path:match('^[%a_][%w_]*$') and not path:match('^[%a_][%w_.]*[%w_]$') then\n"
  "      return out\n"
  "    end\n"
  "    for name in path:gmatch('[^.]+') do\n"
  "      if not name:match('^[%a_][%w_]*$') then return out end\n"
  "      local t = type(base)\n"
  "      if t ~= 'table' and t ~= 'userdata' and t ~= 'string' then return out end\n"
  "      base = base[name]\n"
  "    end\n"
  "  end\n"
  "  local head = path and path .. sep or ''\n"
  "  local function add(k, v)\n"
  "    if type(k) == 'string' and not seen[k] and k:sub(1, #partial) == partial\n"
  "       and k:match('^[%a_][%w_]*$') and (sep ~= ':' or type(v) == 'function') then\n"
  "      seen[k] = true\n"
  "      out[#out + 1] = head .. k\n"
  "    end\n"
  "  end\n"
  "  local t, depth = base, 0\n"
  "  while t ~= nil and depth < 8 do\n"
  "    if type(t) == 'table' then\n"
  "      for k, v in pairs(t) do add(k, v) end\n"
  "    end\n"
  "    local mt = getmt(t)\n"
  "    local index = type(mt) == 'table' and mt.__index or nil\n"
  "    t = type(index) == 'table' and index or nil\n"
  "    depth = depth + 1\n"
  "  end\n"
  "  if path == nil then\n"
  "    for _, k in pairs(keywords) do add(k, true) end\n"
  "  end\n"
  "  sort(out)\n"
  "  return out\n"
  "end\n";

static char key;  /* registry[&key]: the function above */

/* complete(text) in protected mode: pushes the array of candidates */
static int l_complete(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, collect, sizeof collect - 1, "=complete") != LUA_OK)
      return lua_error(L);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key);
  }
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  luaL_checktype(L, -1, LUA_TTABLE);
  return 1;
}

void aio__repl_complete_free(char **list) {
  size_t i;
  if (list == NULL) return;
  for (i = 0; list[i] != NULL; i++) free(list[i]);
  free(list);
}

char **aio__repl_complete(lua_State *L, const char *text) {
  int top = lua_gettop(L);
  char **list = NULL;
  size_t n, i;
  lua_pushcfunction(L, l_complete);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) goto out;
  n = (size_t)lua_rawlen(L, -1);
  if (n == 0 || (list = calloc(n + 1, sizeof *list)) == NULL) goto out;
  for (i = 0; i < n; i++) {
    const char *s;
    lua_rawgeti(L, -1, (lua_Integer)i + 1);
    s = lua_tostring(L, -1);
    if (s == NULL || (list[i] = strdup(s)) == NULL) {
      aio__repl_complete_free(list);
      list = NULL;
      goto out;
    }
    lua_pop(L, 1);
  }
out:
  lua_settop(L, top);
  return list;
}
