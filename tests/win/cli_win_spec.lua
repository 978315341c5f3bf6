-- tests/win/cli_win_spec.lua: the aiolua.exe command line on Windows
-- (under wine), run as a child: options, exit statuses, the REPL on a pipe.
local aio = require "aio"

local EXE = "build\\win\\aiolua.exe"

local function run(args, input)
  local argv = { EXE }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return aio.run_process(argv, { input = input })
end

local function lf(s) return (s:gsub("\r\n", "\n")) end

describe("aiolua.exe", function()
  it("-v prints one version line", function()
    local r = run({ "-v" })
    assert.equal(0, r.returncode)
    assert.matches("^aiolua [%d.]+ %(Lua 5%.4%.%d+%)\n$", lf(r.stdout))
  end)

  it("-e chunks run in order in one main task; aio is a global", function()
    local r = run({ "-e", "x = 1", "-e", "aio.sleep(0.01) io.write(x + 1)" })
    assert.equal(0, r.returncode)
    assert.equal("2", r.stdout)
  end)

  it("runs a script with arg set as lua does", function()
    local r = run({ "tests/win/args.lua", "a", "b c" })
    assert.equal(0, r.returncode)
    assert.equal("[a][b c]", r.stdout)
  end)

  it("exits 1 with the error and a traceback when the main task fails", function()
    local r = run({ "-e", "error('boom')" })
    assert.equal(1, r.returncode)
    assert.matches("boom", r.stderr)
    assert.matches("traceback", r.stderr)
  end)

  it("os.exit sets the status", function()
    assert.equal(5, run({ "-e", "os.exit(5)" }).returncode)
  end)

  it("reads the script from stdin with -", function()
    local r = run({ "-" }, "io.write('from stdin')")
    assert.equal("from stdin", r.stdout)
  end)

  it("-i reads chunks as a REPL: expressions print, waits work", function()
    local r = run({ "-i" }, "1 + 1\naio.sleep(0.01) return 'slept'\nfor i = 1, 2 do\nio.write(i)\nend\n")
    assert.equal(0, r.returncode)
    local out = lf(r.stdout)
    assert.matches("\n2\nslept\n12", out)
    assert.equal("> > > >> >> > ", r.stderr)   -- prompts on stderr off a console
  end)

  it("-i: a chunk reading stdin gets the line after it", function()
    local r = run({ "-i" }, "x = io.read()\nhello there\nprint('got', x)\n1 + 2\n")
    assert.equal(0, r.returncode)
    assert.matches("got\thello there\n3\n", lf(r.stdout))
  end)

  it("-i: EOF inside a chunk reports it; a last line needs no newline", function()
    local r = run({ "-i" }, "for i = 1, 2 do\n")
    assert.equal(0, r.returncode)
    assert.matches("<eof>", r.stderr)
    r = run({ "-i" }, "print('no-newline')")
    assert.matches("no%-newline", r.stdout)
  end)

  it("SIGQUIT does not exist: no task dump, no error at start", function()
    local r = run({ "-e", "io.write('ok')" })
    assert.equal("ok", r.stdout)
    assert.equal("", r.stderr)
  end)
end)
