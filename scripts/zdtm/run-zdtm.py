#!/usr/bin/env python3
"""Runs CRIU's zdtm static tests through chpox, as zdtm.py starts them in its host flavour.

For each test: a control run (start, SIGTERM, read the outfile) tells whether it can pass on
this host at all; then the chpox run: start, `cpx` (a full generation), `cpx` again (an
incremental one), SIGKILL the test and every descendant, `ld-chpox`, SIGTERM the restarted
process, read the outfile. Each test ends in one of:

  pass            PASS after the restart
  refused-cpx     cpx refused it, with a reason (a gap, never wrong)
  refused-restart ld-chpox refused it, with a reason (a gap, never wrong)
  WRONG           restarted, then the test's own check said FAIL (or it died): silently wrong
  control-fail    it does not pass here even without chpox (not counted; a test flagged reqrst, which
                  passes only once restored, has no control run)
  skipped         its .checkskip says this host cannot run it (not counted)

Usage: run-zdtm.py --zdtm DIR --bin DIR [--list FILE | --rerun EARLIER.json] [--json OUT] [--markdown OUT] [TEST...]
"""
import argparse
import ast
import ctypes
import json
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

# The ids zdtm.py gives a test without the 'suid' flag (its numbers, which the tests expect).
UNPRIVILEGED = {"ZDTM_UID": "18943", "ZDTM_GID": "58467", "ZDTM_GROUPS": "27495 48244"}


def describe(static, name):
    """The test's .desc (a Python literal, comments allowed), or {}."""
    path = os.path.join(static, name + ".desc")
    if not os.path.exists(path):
        return {}
    text = "\n".join(line.rstrip("\n").split("#", 1)[0] for line in open(path))
    text = text.strip()
    if not text:
        return {}
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        # A few compute a field from the environment, as zdtm.py evaluates them.
        return eval(text, {"__builtins__": {}, "os": os})


def flags(desc):
    return desc.get("flags", "").split()


def runs_on_host(desc):
    """What zdtm.py would run in the host flavour, and expects to succeed."""
    flavors = desc.get("flavor", "h ns uns").split()
    arch = desc.get("arch")
    return ("h" in flavors and "crfail" not in flags(desc) and "noauto" not in flags(desc)
            and (arch is None or "x86_64" in arch.split()))


def candidates(static):
    """Every built static test that the host flavour runs."""
    names = []
    for entry in sorted(os.listdir(static)):
        path = os.path.join(static, entry)
        if "." in entry or not os.path.isfile(path) or not os.access(path, os.X_OK):
            continue
        if not os.path.exists(path + ".c"):
            continue
        if runs_on_host(describe(static, entry)):
            names.append(entry)
    return names


def become_subreaper():
    """Orphans below the runner (a test daemonizes; ld-chpox hands its process over and exits)
    become the runner's children, reaped at once: pid 1 here reaps late, and a killed test
    would hold its pid, which its restart needs, for seconds."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def alive(pid):
    """Whether pid runs; a zombie of ours is reaped first."""
    reap()
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pid, seconds):
    """Waits until pid has exited and is free again (no zombie holds it)."""
    end = time.time() + seconds
    while time.time() < end:
        if not alive(pid) and not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.05)
    return False


def descendants(pid):
    """pid and every process below it (through /proc/*/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    queue += [int(c) for c in children.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def waiting(pid):
    """Where each process of a test that hangs waits: 'PID in WCHAN' (a hang's first clue)."""
    places = []
    for member in descendants(pid):
        try:
            with open(f"/proc/{member}/wchan") as f:
                places.append(f"{member} in {f.read().strip() or 'running'}")
        except OSError:
            pass
    return ", ".join(places) or "gone"


def kill_tree(pid):
    """SIGKILLs pid and every descendant; returns them (their pids are free once reaped)."""
    members = descendants(pid)
    for member in members:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return members


def tail(path, lines=6):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except FileNotFoundError:
        return "(no outfile)"


def first_line(text, limit=240):
    """The message, its lines joined: a refusal's list follows its first line."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return (joined[:limit] + "...") if len(joined) > limit else (joined or "(no message)")


def filter_rules():
    """The rules of the host's iptables and ip6tables filter tables ("-A ..." lines), or none
    where the tools are missing."""
    rules = []
    for tool in ["iptables", "ip6tables"]:
        try:
            listed = subprocess.run([tool, "-w", "-S"], capture_output=True, text=True, timeout=30)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue
        rules += [(tool, line) for line in listed.stdout.splitlines() if line.startswith("-A ")]
    return rules


def drop_new_rules(before):
    """Deletes the filter rules a test added and did not delete: one killed midway (as a
    refused one is) leaves them (socket-tcp-syn-sent's DROP on its port), and they break every
    later test on that port. Returns those it deleted."""
    left = [rule for rule in filter_rules() if rule not in before]
    for tool, line in left:
        subprocess.run([tool, "-w", "-D"] + line.split()[1:], capture_output=True, timeout=30)
    return left


class Test:
    def __init__(self, static, name, timeout):
        self.static, self.name, self.timeout = static, name, timeout
        self.desc = describe(static, name)
        self.env = dict(os.environ, TMPDIR=os.environ.get("TMPDIR", "/tmp"))
        if "suid" not in flags(self.desc):
            self.env.update(UNPRIVILEGED)

    def path(self, suffix):
        return os.path.join(self.static, self.name + suffix)

    def hook(self, action):
        hook = self.path(".hook")
        if os.access(hook, os.X_OK):
            subprocess.run([hook, action], cwd=self.static, env=self.env, timeout=self.timeout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def checkskip(self):
        """True when the test's own check says this host cannot run it."""
        check = self.path(".checkskip")
        if not os.access(check, os.X_OK):
            return False
        return subprocess.run([check], cwd=self.static, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode != 0

    def leftovers(self):
        """Processes of this test still running (one whose start timed out, or its children)."""
        mark = f"--pidfile={self.name}.pid".encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if mark in f.read().split(b"\0"):
                            found.append(int(entry))
                except OSError:
                    pass
        return found

    def clean(self):
        for pid in self.leftovers():
            kill_tree(pid)
        for suffix in [".pid", ".out", ".out.inprogress", ".out.external"]:
            try:
                os.unlink(self.path(suffix))
            except FileNotFoundError:
                pass
        # A run killed midway leaves what the test made (file_locks01's NAME.test.0, .1...).
        for leftover in glob.glob(glob.escape(self.path(".test")) + ".*"):
            if os.path.isfile(leftover) and not os.path.islink(leftover):
                os.unlink(leftover)
        for suffix in [".test", ".dir.test"]:
            target = self.path(suffix)
            # What a test mounted there (cgroup tests mount one) would leak into the next test.
            while os.path.ismount(target):
                if subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL).returncode != 0:
                    break
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, ignore_errors=True)
            elif os.path.lexists(target):
                os.unlink(target)
        self.hook("--clean")

    def start(self):
        """Starts the test as zdtm.py does (make NAME.pid); returns its pid."""
        self.clean()
        subprocess.run(["make", "--no-print-directory", "-C", self.static, self.name + ".pid"],
                       env=self.env, timeout=self.timeout, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.hook("--post-start")
        with open(self.path(".pid")) as f:
            return int(f.read().split()[0])

    def stop(self, pid):
        """SIGTERM, wait for the test to exit, and whether it wrote PASS."""
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, self.timeout):
            stuck = waiting(pid)
            kill_tree(pid)
            wait_gone(pid, 10)
            return False, "did not exit after SIGTERM (" + stuck + ")"
        text = tail(self.path(".out"))
        # A test may report FAIL and go on to PASS (seccomp_no_new_privs): any FAIL line fails it.
        failed = [line for line in tail(self.path(".out"), lines=100000).splitlines() if "FAIL:" in line]
        if failed:
            return False, "\n".join([line for line in failed[:3] if line not in text] + [text])
        return "PASS" in text.split(), text


def run(command, timeout):
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def dump_options(desc):
    """The cpx options the .desc asks zdtm.py to dump with (opts, dopts) that cpx has."""
    words = (desc.get("opts", "") + " " + desc.get("dopts", "")).split()
    options = [option for option in ("--tcp-established", "--tcp-close") if option in words]
    # CRIU's --ext-unix-sk (every UNIX socket whose peer is outside the tree) is connected again.
    return options + (["--external-unix", "*=reconnect"] if "--ext-unix-sk" in words else [])


def restore_options(desc):
    """The ld-chpox options the .desc asks zdtm.py to restore with (opts, ropts) that ld-chpox has."""
    words = (desc.get("opts", "") + " " + desc.get("ropts", "")).split()
    return ["--tcp-close"] if "--tcp-close" in words else []


LAZY = []  # ["--lazy"] with --lazy: every restart lets the process run before its memory is in


def through_chpox(test, bin_dir, store):
    """One test through cpx, cpx, kill, ld-chpox, SIGTERM: (outcome, detail)."""
    cpx, ld = os.path.join(bin_dir, "cpx"), os.path.join(bin_dir, "ld-chpox")
    pid = test.start()
    try:
        test.hook("--pre-dump")
        options = dump_options(test.desc)
        for round in range(2):
            # As criu dump --tcp-established kills the tree with its connections locked, the
            # last generation is taken with --kill: cpx holds connections to peers outside it.
            last = ["--kill"] if round == 1 and "--tcp-established" in options else []
            try:
                status, _, errors = run([cpx, "--store", store, "--name", "t"] + options + last + [str(pid)],
                                        test.timeout)
            except subprocess.TimeoutExpired:  # chpox's, not the test's: never a control failure
                return "refused-cpx", f"cpx did not finish in {test.timeout} s (too slow for this process)"
            if status != 0:
                return "refused-cpx", first_line(errors)
            if not last and not alive(pid):
                return "WRONG", "the test died while it was checkpointed"
            time.sleep(0.2)
    finally:
        members = kill_tree(pid)
    # A tree restarts with its pids: every one must be free again.
    for member in members:
        if not wait_gone(member, 30):
            return "refused-restart", f"pid {member} was not released after SIGKILL"
    test.hook("--pre-restore")
    try:
        status, _, errors = run([ld, "--store", store, "--name", "t"] + LAZY + restore_options(test.desc),
                                test.timeout)
    except subprocess.TimeoutExpired:
        return "refused-restart", f"ld-chpox did not finish in {test.timeout} s"
    if status != 0:
        return "refused-restart", first_line(errors)
    match = re.search(r"restarted as pid (\d+)", errors)
    if not match:
        return "WRONG", "ld-chpox succeeded but named no pid: " + first_line(errors)
    restarted = int(match.group(1))
    time.sleep(0.2)
    test.hook("--post-restore")
    if not alive(restarted):
        return "WRONG", "the restarted process died: " + tail(test.path(".out"), 3).replace("\n", " | ")
    passed, text = test.stop(restarted)
    if passed:
        return "pass", ""
    return "WRONG", text.replace("\n", " | ")[-300:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zdtm", required=True, help="CRIU's test/zdtm folder, built")
    parser.add_argument("--bin", required=True, help="the folder holding cpx and ld-chpox")
    parser.add_argument(
        "--list", help="a file naming the tests to run, one a line (# comments), each optionally followed by the "
        "outcome it is expected to have: then the run checks it, and prints 'zdtm: N passed, M failed'")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--markdown", help="write the results here as a Markdown table")
    parser.add_argument("--timeout", type=int, default=30, help="seconds per step (default 30)")
    parser.add_argument(
        "--rerun", metavar="EARLIER_JSON",
        help="run again only the tests that did not pass in an earlier --json run (skipped ones aside), and write "
        "--json/--markdown for the whole earlier set: each row of this run marked 'rerun', the others kept")
    parser.add_argument("--lazy", action="store_true",
                        help="restart every test with ld-chpox --lazy (its memory filled on touch as it runs)")
    parser.add_argument("tests", nargs="*")
    args = parser.parse_args()
    if args.lazy:
        LAZY.append("--lazy")
    static = os.path.abspath(os.path.join(args.zdtm, "static"))
    bin_dir = os.path.abspath(args.bin)
    names = args.tests
    expected = {}
    if not args.tests and args.list:
        names = []
        for line in open(args.list):
            words = line.split("#", 1)[0].split()
            if words:
                names.append(words[0])
                if len(words) > 1:
                    expected[words[0]] = words[1]
    elif not args.tests and args.rerun:
        earlier = json.load(open(args.rerun))["results"]
        names = [r["test"] for r in earlier if r["outcome"] not in ("pass", "skipped")]
    elif not args.tests:
        names = candidates(static)
    # Tests run as another uid write their outfiles beside themselves, as under zdtm.py.
    os.chmod(static, os.stat(static).st_mode | 0o333)
    store = f"/tmp/chpox-zdtm-{os.getpid()}"
    become_subreaper()
    results = []
    for number, name in enumerate(names, 1):
        test = Test(static, name, args.timeout)
        shutil.rmtree(store, ignore_errors=True)
        rules = filter_rules()
        started = time.time()
        try:
            if test.checkskip():
                outcome, detail = "skipped", "its .checkskip fails here"
            elif "reqrst" in flags(test.desc):
                # It passes only once restored (zdtm.py never runs it without a restore): no control run.
                outcome, detail = through_chpox(test, bin_dir, store)
            else:
                pid = test.start()
                time.sleep(0.1)
                passed, text = test.stop(pid)
                if not passed:
                    outcome, detail = "control-fail", text.replace("\n", " | ")[-200:]
                else:
                    outcome, detail = through_chpox(test, bin_dir, store)
        except subprocess.TimeoutExpired as error:
            outcome, detail = "control-fail", f"timed out: {' '.join(map(str, error.cmd))[:80]}"
        except subprocess.CalledProcessError as error:
            outcome, detail = "control-fail", "did not start: " + first_line(error.stderr.decode(errors="replace"))
        except Exception as error:  # a runner bug must not stop the run
            outcome, detail = "control-fail", f"runner: {error!r}"
        test.clean()
        for tool, line in drop_new_rules(rules):
            print(f"zdtm: {name} left the {tool} rule {line}: deleted", flush=True)
        results.append({"test": name, "outcome": outcome, "detail": detail,
                        "suid": "suid" in flags(test.desc), "seconds": round(time.time() - started, 1)})
        print(f"[{number}/{len(names)}] {name}: {outcome}" + (f" ({detail})" if detail else ""), flush=True)
    shutil.rmtree(store, ignore_errors=True)
    if args.rerun:
        fresh = {r["test"]: dict(r, rerun=True) for r in results}
        results = [fresh.get(r["test"], r) for r in json.load(open(args.rerun))["results"]]

    counted = [r for r in results if r["outcome"] not in ("control-fail", "skipped")]
    tally = {o: sum(1 for r in results if r["outcome"] == o)
             for o in ["pass", "refused-cpx", "refused-restart", "WRONG", "control-fail", "skipped"]}
    share = 100.0 * tally["pass"] / len(counted) if counted else 0.0
    summary = (f"zdtm: {tally['pass']} of {len(counted)} that pass their control run pass through chpox "
               f"({share:.0f}%); refused at cpx {tally['refused-cpx']}, at restart {tally['refused-restart']}, "
               f"WRONG {tally['WRONG']}; control-fail {tally['control-fail']}, skipped {tally['skipped']}")
    print(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "chpox.zdtm/1", "summary": tally, "results": results}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| test | outcome | reason |" + (" run |\n|---|---|---|---|\n" if args.rerun else "\n|---|---|---|\n"))
            for r in results:
                detail = r["detail"].replace("|", "\\|")
                f.write(f"| {r['test']}{' (suid)' if r['suid'] else ''} | {r['outcome']} | {detail} |"
                        + (" rerun |\n" if r.get("rerun") else (" |\n" if args.rerun else "\n")))
            f.write(f"\n{summary}\n")
    if expected:
        # Each test checked against what it is expected to do: a pass that became anything
        # else, or a refusal that became WRONG, fails.
        missed = [r for r in results if r["test"] in expected and r["outcome"] != expected[r["test"]]]
        for r in missed:
            print(f"zdtm: {r['test']} was expected to end {expected[r['test']]}, and ended {r['outcome']}")
        print(f"{'zdtm-lazy' if LAZY else 'zdtm'}: {len(results) - len(missed)} passed, {len(missed)} failed")
        # A WRONG the list holds (cow00, with its reason) is known; any other WRONG is missed.
        sys.exit(1 if missed else 0)
    # The run fails when a test restarted silently wrong: that is a defect, a refusal a gap.
    sys.exit(1 if tally["WRONG"] else 0)


if __name__ == "__main__":
    main()
