#!/usr/bin/env python3
"""Without a terminal: -i reads chunks from stdin line by line."""
import os
import subprocess
import tempfile
from replpty import AIOLUA, check, done

home = tempfile.mkdtemp(prefix="aiorepl.")
env = dict(os.environ, HOME=home)


def run(args, data, timeout=10):
    p = subprocess.run([AIOLUA] + args, input=data.encode(), env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, cwd=home)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


rc, out, err = run(["-i"], "1+1\nx = 3\nprint(x, 'a')\nfor i = 1, 2 do\n"
                   "print(i)\nend\naio.sleep(0.1)\nerror('boom')\n"
                   "t = aio.spawn(function() aio.sleep(0.05) return 'tv' end)\n"
                   "t:await()\n")
lines = out.split("\n")
check("pipe_status_0", rc == 0, "status %d: %s" % (rc, err))
check("pipe_version_line", lines[0].startswith("aiolua "), repr(out))
check("pipe_values", lines[1:6] == ["2", "3\ta", "1", "2", "tv"], repr(out))
check("pipe_error_on_stderr", "stdin:1: boom" in err, repr(err))
check("pipe_no_history", not os.path.exists(os.path.join(home,
                                                        ".aiolua_history")))

# a chunk reading stdin gets the line after it
rc, out, err = run(["-i"], "x = io.read()\nhello there\nprint('got', x)\n")
check("pipe_chunk_reads_stdin", "got\thello there" in out, repr(out + err))

# last line without a newline; EOF inside a chunk reports it
rc, out, err = run(["-i"], "print('no-newline')")
check("pipe_last_line", "no-newline" in out and rc == 0, repr(out + err))
rc, out, err = run(["-i"], "for i = 1, 2 do\n")
check("pipe_eof_in_chunk", rc == 0 and "<eof>" in err, repr(out + err))

# os.exit leaves with its status; a task left behind has its cleanup run
rc, out, err = run(["-i"], "t = aio.spawn(function() local ok = pcall(aio.sleep, 10) "
                   "print('cleanup-ran') end)\naio.sleep(0)\nos.exit(4)\n"
                   "print('not-reached')\n")
check("pipe_os_exit", rc == 4 and "cleanup-ran" in out and
      "not-reached" not in out, "%d %r" % (rc, out + err))

# -i after a script and -e: they run first, in the same state
script = os.path.join(home, "s.lua")
with open(script, "w") as f:
    f.write("from_script = 'S' .. select('#', ...)\n")
rc, out, err = run(["-e", "from_e = 'E'", "-i", script, "a1"],
                   "print(from_e, from_script)\n")
check("pipe_after_script", "E\tS1" in out, repr(out + err))

# a failing script does not open the REPL
with open(script, "w") as f:
    f.write("error('script-fails')\n")
rc, out, err = run(["-i", script], "print('in-repl')\n")
check("pipe_failed_script", rc == 1 and "in-repl" not in out and
      "script-fails" in err, "%d %r" % (rc, out + err))

# without -i and without a terminal, stdin is a script (as lua)
rc, out, err = run([], "print('as-script')\n")
check("pipe_no_i_is_script", out == "as-script\n" and rc == 0, repr(out + err))
done()
