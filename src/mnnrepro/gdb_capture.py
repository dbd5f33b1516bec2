"""Runs inside gdb (``gdb -batch -x gdb_capture.py --args PROGRAM ...``); not imported by the harness.

It runs the program. If the program exits, gdb exits with the same code. If it is stopped by a fatal
signal, this writes ``crash.json`` (signal, fault address, frames with function, file, line and library)
and ``backtrace.txt`` into $MNNREPRO_CRASH_DIR, kills the program and exits with 128 + the signal number,
as a shell would report it. Nothing downstream parses gdb's free text: the judge reads crash.json.
"""

import json
import os
import sys

import gdb  # type: ignore[import-not-found]  # provided by gdb itself

MAX_FRAMES = 64


def _frames():
    frames = []
    frame = gdb.newest_frame()
    while frame is not None and len(frames) < MAX_FRAMES:
        pc = frame.pc()
        sal = frame.find_sal()
        fn = frame.function()
        frames.append(
            {
                "index": len(frames),
                "pc": hex(pc),
                "function": frame.name() or "??",
                "file": sal.symtab.filename if sal and sal.symtab else (fn.symtab.filename if fn and fn.symtab else None),
                "line": sal.line if sal and sal.line else None,
                "library": gdb.solib_name(pc) or (gdb.current_progspace().filename or ""),
            }
        )
        try:
            frame = frame.older()
        except gdb.error:
            break
    return frames


def main():
    out = os.environ.get("MNNREPRO_CRASH_DIR", ".")
    for cmd in (
        "set pagination off",
        "set confirm off",
        "set print thread-events off",
        "set print inferior-events off",
        "set startup-with-shell off",
        "set disable-randomization off",
        "handle SIGPIPE nostop noprint pass",
        "handle SIGUSR1 nostop noprint pass",
        "handle SIGUSR2 nostop noprint pass",
    ):
        gdb.execute(cmd)
    try:
        gdb.execute("run")
    except gdb.error as exc:
        # The program could not be started (missing, not executable, unreadable): never exit 0 for that.
        sys.stderr.write("mnnrepro gdb_capture: cannot run the program: %s\n" % exc)
        gdb.execute("quit 127")
        return
    inferior = gdb.selected_inferior()
    if inferior.pid == 0:
        code = gdb.convenience_variable("_exitcode")
        if code is None:
            sig = gdb.convenience_variable("_exitsignal")
            code = 128 + int(sig) if sig is not None else 1
        gdb.execute("quit %d" % int(code))
        return
    siginfo = gdb.parse_and_eval("$_siginfo")
    signo = int(siginfo["si_signo"])
    try:
        fault = hex(int(siginfo["_sifields"]["_sigfault"]["si_addr"]))
    except gdb.error:
        fault = None
    names = {4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 11: "SIGSEGV", 31: "SIGSYS"}
    name = names.get(signo, "SIG%d" % signo)
    thread = gdb.selected_thread()
    record = {
        "format": 1,
        "signal_number": signo,
        "signal": name,
        "fault_address": fault,
        "thread": {"num": thread.num, "name": thread.name, "lwp": thread.ptid[1]},
        "frames": _frames(),
    }
    with open(os.path.join(out, "crash.json"), "w") as f:
        json.dump(record, f, indent=1)
    with open(os.path.join(out, "backtrace.txt"), "w") as f:
        f.write("signal: %s (%d) fault address: %s\n\n" % (name, signo, fault))
        f.write(gdb.execute("bt %d" % MAX_FRAMES, to_string=True))
        f.write("\n# registers\n")
        f.write(gdb.execute("info registers rip rsp rbp", to_string=True))
        f.write("\n# all threads\n")
        f.write(gdb.execute("thread apply all bt 8", to_string=True))
    gdb.execute("kill")
    gdb.execute("quit %d" % (128 + signo))


main()
