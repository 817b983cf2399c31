"""ucgwctl's command line: --json and --help after any command, each command's
usage, one-line errors for bad command lines, queue --limit; and that its
help, the man page and docs/control-protocol.md name what the daemon serves."""
import json
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ctlclient import Ctl  # noqa: E402
from ucgwtest import BIN, SRC, GatewayTest, wait_for  # noqa: E402

UCGWCTL = os.path.join(BIN, "ucgwctl")

# The commands ucgwd serves (supervisor/commands.c's table), and ucgwctl's own.
DAEMON_COMMANDS = ["status", "workers", "restart", "pause", "resume", "reload", "shutdown", "send",
                   "send-file", "queue", "stats", "trace"]
LOCAL_COMMANDS = ["decrypt"]
# Served for the client libraries (the reference design's protocol_selector and dashboard data), not by ucgwctl.
LIBRARY_COMMANDS = ["select", "dashboard"]


def cfg(tmp, **tw):
    t = {"record": os.path.join(tmp, "delivered.txt")}
    t.update(tw)
    return {"gateway": {"log_level": "info", "job_timeout_ms": 5000},
            "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000},
            "testworker": t}


def run(*args, input=None, env=None):
    r = subprocess.run([UCGWCTL, *args], input=input, capture_output=True, text=True, timeout=60, env=env)
    return r.returncode, r.stdout, r.stderr


def read(*parts):
    with open(os.path.join(SRC, *parts)) as f:
        return f.read()


class CtlWithoutDaemonTest(GatewayTest):
    """Nothing here may reach a daemon: the socket does not exist, so any
    attempt would end with exit status 3."""

    def setUp(self):
        super().setUp()
        self.none = os.path.join(self.tmp, "none.sock")

    def ctl(self, *args, **kw):
        return run("-s", self.none, *args, **kw)

    def test_commands_table_matches_the_daemon(self):
        text = read("supervisor", "commands.c")
        table = text[text.index("} commands[] = {"):]
        served = re.findall(r'\{ "([a-z-]+)", cmd_', table)
        self.assertEqual(served, DAEMON_COMMANDS + LIBRARY_COMMANDS)

    def test_help_lists_every_command_and_the_global_options(self):
        rc, out, err = self.ctl("--help")
        self.assertEqual((rc, err), (0, ""))
        lines = out.splitlines()
        for name in DAEMON_COMMANDS + LOCAL_COMMANDS:
            line = [i for i, l in enumerate(lines) if l.startswith("  %s " % name) or l == "  " + name]
            self.assertEqual(len(line), 1, name)
            # a one-line description, on its line or the next when the synopsis is long
            desc = lines[line[0]][33:].strip() or lines[line[0] + 1].strip()
            self.assertTrue(desc, name)
        for opt in ("--socket", "--json", "--timeout", "--api-key-file", "--help"):
            self.assertIn(opt, out)
        self.assertNotIn("  encrypt ", out)  # hidden: for tests
        rc, out2, err = self.ctl("-h")
        self.assertEqual((rc, out2), (0, out))

    def test_each_command_help_without_the_daemon(self):
        for name in DAEMON_COMMANDS + LOCAL_COMMANDS:
            for flag in ("--help", "-h"):
                rc, out, err = self.ctl(name, flag)
                self.assertEqual((rc, err), (0, ""), (name, flag))
                self.assertTrue(out.startswith("usage: ucgwctl %s" % name), out)
                self.assertIn("-h, --help", out)
                if name in DAEMON_COMMANDS:
                    self.assertIn("-j, --json", out, name)
        # --help wins wherever it stands, and nothing is sent
        rc, out, err = self.ctl("send", "--wait", "--protocol", "mqtt", '{"a":1}', "--help")
        self.assertEqual((rc, err), (0, ""))
        self.assertTrue(out.startswith("usage: ucgwctl send "))

    def options_of(self, name):
        rc, out, err = self.ctl(name, "--help")
        self.assertEqual(rc, 0, err)
        return set(re.findall(r"^  (?:-\w, )?(--[a-z-]+)", out, re.M)), out

    def test_send_and_send_file_help_tell_every_option(self):
        opts, out = self.options_of("send")
        self.assertEqual(opts, {"--protocol", "--priority", "--topic", "--endpoint", "--raw", "--ttl",
                                "--encrypt", "--wait", "--json", "--help"})
        opts, out = self.options_of("send-file")
        self.assertEqual(opts, {"--protocol", "--priority", "--remote-name", "--ttl", "--wait", "--json",
                                "--help"})
        self.assertIn("--encrypt is for send only", out)
        opts, out = self.options_of("queue")
        self.assertEqual(opts, {"--limit", "--json", "--help"})
        for action in ("list", "dead", "retry ID|all", "purge ID", "requeue ID|all"):
            self.assertIn("  " + action, out)
        opts, out = self.options_of("decrypt")
        self.assertEqual(opts, {"--key-file", "--help"})

    def test_every_option_the_help_tells_is_accepted(self):
        """Each option is taken (the command then fails only for want of the daemon)."""
        path = os.path.join(self.tmp, "f.jpg")
        with open(path, "w") as f:
            f.write("x")
        value = {"--protocol": "auto", "--priority": "high", "--topic": "a/b", "--endpoint": "/x",
                 "--ttl": "60", "--remote-name": "r.jpg", "--limit": "5"}
        for name, arg in (("send", ["{}"]), ("send-file", [path]), ("queue", [])):
            opts, _ = self.options_of(name)
            for opt in sorted(opts - {"--help"}):
                rc, out, err = self.ctl(name, opt, *([value[opt]] if opt in value else []), *arg)
                self.assertEqual(rc, 3, (name, opt, err))
                self.assertIn("ucgwd is not running", err)

    def test_man_page_tells_the_same_options(self):
        man = read("docs", "man", "ucgwctl.8").replace("\\-", "-")
        heads = {}
        for name in DAEMON_COMMANDS + LOCAL_COMMANDS:
            m = re.search(r'^\.BI? "?%s(?=[ "\\]|$)' % re.escape(name), man, re.M)
            self.assertTrue(m, name)
            heads[name] = m.start()
        for name in ("send", "send-file", "queue", "decrypt"):
            opts, _ = self.options_of(name)
            section = man[heads[name]:man.index("\n.RE", heads[name])]
            for opt in opts - {"--help", "--json"}:
                self.assertIn(opt, section, (name, opt))

    def test_control_protocol_doc_names_every_command(self):
        doc = read("docs", "control-protocol.md")
        table = doc[doc.index("## Commands"):]
        names = re.findall(r"^\| `([a-z-]+)` \|", table, re.M)
        self.assertEqual(sorted(names), sorted(DAEMON_COMMANDS + LIBRARY_COMMANDS))
        # every argument of the daemon's tables (supervisor/ctlargs.c)
        fields = set(re.findall(r'\{ "(\w+)", CTLARGS_', read("supervisor", "ctlargs.c")))
        fields |= {"protocol", "priority", "ttl_s", "wait", "encrypt", "id"}  # the shared ones, by macro
        self.assertGreaterEqual(len(fields), 15, fields)
        for field in fields:
            self.assertIn("`%s`" % field, table, field)

    def test_bad_command_lines_fail_alone_in_one_line(self):
        path = os.path.join(self.tmp, "f.jpg")
        with open(path, "w") as f:
            f.write("x")
        cases = [
            ([], "which command?"),
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["--bogus", "status"], "unknown option '--bogus'"),
            (["-t", "soon", "status"], "--timeout wants a number of milliseconds"),
            (["-t"], "-t needs a value"),
            (["stats", "extra"], "stats: unexpected argument 'extra'"),
            (["trace"], "trace: missing argument"),
            (["send"], "send: missing argument"),
            (["send", "{}", "{}"], "send: unexpected argument '{}'"),
            (["send", "--bogus", "{}"], "send: unknown option '--bogus'"),
            (["send", "-z", "{}"], "send: unknown option '-z'"),
            (["send", "--wait=yes", "{}"], "send: --wait takes no value"),
            (["send", "{}", "--topic"], "send: --topic needs a value"),
            (["send", "--ttl", "soon", "{}"], "--ttl wants a number of seconds"),
            (["send", "--ttl", "-1", "{}"], "--ttl wants a number of seconds"),
            (["send", "--remote-name", "x", "{}"], "send: unknown option '--remote-name'"),
            (["send-file", "--topic", "a/b", path], "send-file: unknown option '--topic'"),
            (["send-file", "--raw", path], "send-file: unknown option '--raw'"),
            (["send-file", "--encrypt", path], "send-file: --encrypt is for metadata (send)"),
            (["queue", "bogus"], "queue: unknown action 'bogus' (valid: list, dead, retry ID|all, purge ID, "
                                 "requeue ID|all)"),
            (["queue", "retry"], "queue retry: which message? give its id, or all"),
            (["queue", "purge"], "queue purge: which message? give its id"),
            (["queue", "dead", "x"], "queue dead takes no id"),
            (["queue", "--limit", "0"], "--limit wants a number of messages"),
            (["queue", "--limit", "many"], "--limit wants a number of messages"),
            (["queue", "retry", "all", "--limit", "3"], "--limit is for list and dead"),
            (["decrypt", "--json", "--key-file", path, "AAAA"], "decrypt runs without ucgwd and has no --json"),
            (["--json", "decrypt", "--key-file", path, "AAAA"], "decrypt runs without ucgwd and has no --json"),
        ]
        for args, words in cases:
            rc, out, err = self.ctl(*args)
            self.assertEqual(rc, 2, (args, err))
            self.assertEqual(out, "", args)
            self.assertIn(words, err, args)
            self.assertEqual(len(err.strip().splitlines()), 1, (args, err))


class CtlTest(GatewayTest):
    def test_json_after_the_command(self):
        gw = self.gateway(cfg(self.tmp))
        for args in (["stats"], ["status"], ["workers"], ["queue"], ["queue", "dead"]):
            before = json.loads(gw.ctl("--json", *args)[1])
            for flag in ("--json", "-j"):
                rc, out, err = gw.ctl(*args, flag)
                self.assertEqual(rc, 0, (args, err))
                self.assertEqual(type(json.loads(out)), type(before), args)
        self.assertEqual(set(json.loads(gw.ctl("stats", "--json")[1])["testworker"]),
                         set(json.loads(gw.ctl("--json", "stats")[1])["testworker"]))
        rc, out, err = gw.ctl("send", "--wait", "--json", "--protocol", "testworker", '{"plate":"J1"}')
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual((o["status"], o["protocol"]), ("ok", "testworker"))
        rc, out, err = gw.ctl("trace", o["id"], "-j")
        self.assertEqual(json.loads(out)["message"]["id"], o["id"])
        path = os.path.join(self.tmp, "plate.jpg")
        with open(path, "wb") as f:
            f.write(os.urandom(5000))
        rc, out, err = gw.ctl("send-file", "--protocol", "testworker", path, "--wait", "-j")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["status"], "ok")
        rc, out, err = gw.ctl("send", "--protocol", "testworker", '{"n":1}', "--json")
        self.assertEqual(json.loads(out)["status"], "accepted")
        rc, out, err = gw.ctl("pause", "testworker", "--json")
        self.assertEqual((rc, json.loads(out)), (0, {"ok": True}))
        self.assertEqual(gw.ctl("resume", "-j", "testworker")[0], 0)

    def test_options_after_the_data(self):
        gw = self.gateway(cfg(self.tmp))
        rc, out, err = gw.ctl("send", '{"n":2}', "--protocol", "testworker", "--ttl", "0", "--wait")
        self.assertEqual(rc, 0, err)
        self.assertIn("delivered by testworker", out)
        # -- ends the options: a raw payload that looks like one
        rc, out, err = gw.ctl("send", "--raw", "--protocol", "testworker", "--wait", "--", "-j")
        self.assertEqual(rc, 0, err)

    def test_queue_limit_says_how_many_more(self):
        c = cfg(self.tmp, delay_ms=60000)
        c["gateway"]["window"] = 1
        gw = self.gateway(c)
        ids = [gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(5)]
        rc, out, err = gw.ctl("queue", "--limit", "2")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 1 + 2 + 1, out)
        self.assertEqual([l.split()[0] for l in lines[1:3]], ids[:2])
        self.assertEqual(lines[-1], "... and 3 more (ucgwctl queue --limit 5)")
        rc, out, err = gw.ctl("queue", "-n", "2", "--json")
        self.assertEqual([m["id"] for m in json.loads(out)], ids[:2])
        self.assertIn("2 of 5 messages listed (ucgwctl queue --limit 5)", err)
        for args in (["queue"], ["queue", "--limit", "5"], ["queue", "--limit", "all"]):
            rc, out, err = gw.ctl(*args)
            self.assertEqual(len(out.splitlines()), 1 + 5, (args, out))
            self.assertNotIn("more", out)
        rc, out, err = gw.ctl("queue", "dead", "--limit", "1")
        self.assertEqual(out, "(no dead letters)\n")

    def test_daemon_checks_the_queue_action_first(self):
        gw = self.gateway(cfg(self.tmp))
        mid = gw.ctl("send", "--protocol", "testworker", '{"cmd":"retry"}')[1].strip()
        c = Ctl(gw.sock)
        cases = [  # (body, words, code)
            ({"action": "bogus", "id": mid}, "queue: unknown action 'bogus' (valid: list, dead, retry ID|all, "
                                             "purge ID, requeue ID|all)", 400),
            ({"action": "bogus"}, "unknown action 'bogus'", 400),
            ({"action": "x" * 100}, "queue: unknown action 'xxxx", 400),
            ({"action": 7}, "queue: action must be a string (list, dead, retry ID|all, purge ID, requeue ID|all), "
                            "not an integer", 400),
            ({"action": "retry", "id": ""}, "queue retry: which message? give its id, or all", 400),
            ({"action": "requeue"}, "queue requeue: which message? give its id, or all", 400),
            ({"action": "purge"}, "queue purge: which message? give its id", 400),
            ({"action": "purge", "id": "all"}, "queue purge: one message at a time", 400),
            ({"action": "purge", "id": 12}, "queue: id must be a string (a message id, or all), not an integer", 400),
            ({"action": "retry", "id": "01NOSUCHMESSAGE0000000000X"}, "no message with id '01NOSUCH", 404),
            ({"action": "requeue", "id": mid}, "queue requeue: message %s is not dead" % mid, 409),
            ({"action": "list", "limit": 0}, "queue: limit 0 is too small, expected how many messages to list, "
                                             "at least 1", 400),
            ({"action": "list", "limt": 5}, "queue: unknown key 'limt' (did you mean 'limit'? it takes: action, id, "
                                            "limit)", 400),
        ]
        for body, words, code in cases:
            c.request("queue", body)
            r = c.reply()
            self.assertFalse(r["ok"], body)
            self.assertIn(words, r["error"], body)
            self.assertEqual(r.get("code"), code, (body, r))
        c.request("queue", {"action": "list", "id": "", "limit": 1})
        r = c.reply()
        self.assertTrue(r["ok"], r)
        self.assertEqual([m["id"] for m in r["body"]], [mid])
        c.sock.close()


class CtlForPeopleTest(GatewayTest):
    """What a person at the console sees: --version, permission denied said as
    such, no latency figure where none was measured, counts, valid names."""

    def test_version(self):
        rc, out, err = run("--version")
        self.assertEqual((rc, err), (0, ""))
        self.assertRegex(out, r"^ucgwctl \d+\.\d+\.\d+ \(control protocol \d+\)\n$")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to become another user")
    def test_permission_denied_is_not_not_running(self):
        gw = self.gateway(cfg(self.tmp))
        os.chmod(gw.sock, 0o600)
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", UCGWCTL, "-s", gw.sock,
                            "status"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("permission denied on ucgwd's control socket %s: add this user to the socket's group" % gw.sock,
                      r.stderr)
        self.assertIn("adduser nobody ucgw", r.stderr)
        self.assertIn("gateway.control_socket_mode", r.stderr)
        self.assertNotIn("not running", r.stderr)

    def test_stats_dash_without_samples_and_counts(self):
        gw = self.gateway(cfg(self.tmp))
        rc, out, err = gw.ctl("stats")
        row = [l.split() for l in out.splitlines() if l.startswith("testworker")][0]
        self.assertEqual(row[7:11], ["-", "-", "-", "-"], out)
        gw.ctl("send", "--protocol", "testworker", "--wait", '{"a":1}')
        row = [l.split() for l in gw.ctl("stats")[1].splitlines() if l.startswith("testworker")][0]
        self.assertRegex(row[7], r"^\d+\.\d\d$")
        self.assertEqual(gw.ctl_json("stats")["testworker"]["samples"], 1)
        for i in range(3):
            gw.ctl("send", "--protocol", "testworker", '{"cmd":"retry","n":%d}' % i)
        wait_for(lambda: [m["state"] for m in gw.ctl_json("queue")] == ["waiting"] * 3, what="three waiting")
        rc, out, err = gw.ctl("queue", "retry", "all")
        self.assertEqual((rc, out), (0, "queue retry all: 3 messages retried\n"), err)
        for i in range(2):
            gw.ctl("send", "--protocol", "testworker", '{"cmd":"permfail","n":%d}' % i)
        wait_for(lambda: len(gw.ctl_json("queue", "dead")) == 2, what="two dead letters")
        rc, out, err = gw.ctl("queue", "requeue", "all")
        self.assertEqual((rc, out), (0, "queue requeue all: 2 messages requeued\n"), err)
        rc, out, err = gw.ctl("pause", "nosuch")
        self.assertEqual(rc, 1)
        self.assertIn("pause: no protocol named 'nosuch' (protocols: websocket, rest, mqtt, sftp, rsync, testworker)",
                      err)

    def test_daemon_log_on_a_terminal_has_times(self):
        """On a terminal each line starts with an ISO 8601 time and the level's
        name, the workers' lines too; elsewhere (journald, a file) '<N>' as before."""
        import pty
        gw = self.gateway(cfg(self.tmp), start=False)
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(os.path.join(BIN, "ucgwd"), [os.path.join(BIN, "ucgwd"), "-c", gw.cfg_path])
        out = b""
        try:
            wait_for(lambda: os.path.exists(gw.sock), what="ucgwd on a terminal")
            time.sleep(0.5)
            os.kill(pid, 15)
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            os.waitpid(pid, 0)
            os.close(fd)
        lines = [l for l in out.decode().replace("\r\n", "\n").splitlines() if l]
        when = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
        self.assertTrue(lines)
        for l in lines:
            self.assertRegex(l, when + r"(ucgwd|ucgw-testworker): (error|warning|notice|info|debug): ")
        self.assertTrue([l for l in lines if " ucgw-testworker: info: " in l], lines)
        gw.start()
        self.assertRegex(gw.log_text(), r"(?m)^<6>ucgwd: ")

    def test_send_wait_on_a_terminal_has_no_blank_line(self):
        import pty
        gw = self.gateway(cfg(self.tmp))
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(UCGWCTL, [UCGWCTL, "-s", gw.sock, "send", "--protocol", "testworker", "--wait", '{"a":1}'])
        out = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.waitpid(pid, 0)
        os.close(fd)
        text = out.decode().replace("\r\n", "\n")
        self.assertIn("delivered by testworker", text)
        self.assertFalse(text.startswith("\n"), repr(text))
        self.assertNotIn("\n\n", text)


class CtlCodesTest(GatewayTest):
    """Over the real socket: every command's body read against its table
    (an unknown key, a wrong type, a value out of range, each naming the key,
    with code 400), every error reply with its code, and a version 1 client
    answered as version 1 answered."""

    # per command: (a valid body, a wrong type, a value out of range, the key those name)
    BODIES = {
        "restart": ({"name": "testworker"}, {"name": 5}, {"name": "w" * 64}, "name"),
        "pause": ({"name": "testworker"}, {"name": [1]}, {"name": ""}, "name"),
        "resume": ({"name": "testworker"}, {"name": True}, {"name": "p" * 100}, "name"),
        "send": ({"data": b"{}", "protocol": "testworker"}, {"data": b"{}", "wait": 1},
                 {"data": b"{}", "ttl_s": 3153600001}, None),
        "send-file": ({"path": "/etc/hostname"}, {"path": "/etc/hostname", "fd": "no"},
                      {"path": "/etc/hostname", "remote_name": "r" * 256}, None),
        "queue": ({}, {"limit": "10"}, {"limit": 0}, "limit"),
        "trace": ({"id": "01JF0000000000000000000000"}, {"id": 1}, {"id": "i" * 64}, "id"),
        "select": ({}, {"size": "big"}, {"size": -1}, "size"),
    }

    def test_every_command_refuses_what_its_table_does_not_allow(self):
        gw = self.gateway(cfg(self.tmp))
        c = Ctl(gw.sock)
        for name in DAEMON_COMMANDS + LIBRARY_COMMANDS:
            valid = self.BODIES.get(name, ({},))[0]
            body = dict(valid, prioritty="high")
            c.request(name, body)
            r = c.reply()
            self.assertEqual((r["ok"], r["code"], r["v"]), (False, 400, 2), (name, r))
            self.assertTrue(r["error"].startswith("%s: unknown key 'prioritty' (" % name), r["error"])
            if name in ("send", "select"):
                self.assertIn("did you mean 'priority'?", r["error"])
            if name not in self.BODIES:
                continue
            _, wrong, out_of_range, key = self.BODIES[name]
            for bad in (wrong, out_of_range):
                c.request(name, bad)
                r = c.reply()
                k = key or [k for k in bad if bad[k] != valid.get(k)][0]
                self.assertEqual((r["ok"], r["code"]), (False, 400), (name, bad, r))
                self.assertTrue(r["error"].startswith(name + ": "), r["error"])
                self.assertIn(k, r["error"], (name, bad))
        c.sock.close()

    def test_each_kind_of_refusal_has_its_code(self):
        conf = cfg(self.tmp)
        conf["spool"]["max_messages"] = 2
        gw = self.gateway(conf)
        c = Ctl(gw.sock)
        big = b'"' + b"x" * (1 << 20) + b'"'
        cases = [
            ("nosuch", {}, 400, "unknown command 'nosuch'"),
            ("restart", {"name": "nosuch"}, 404, "no worker named 'nosuch'"),
            ("pause", {}, 400, "pause: which protocol?"),
            ("trace", {"id": "01JF0000000000000000000000"}, 404, "trace: no message"),
            ("select", {"protocol": "nosuch"}, 404, "unknown protocol 'nosuch'"),
            ("send", {"data": b"{}", "protocol": "nosuch"}, 404, "unknown metadata protocol 'nosuch'"),
            ("send", {"data": b"{}", "protocol": "sftp"}, 400, "carries files, not metadata"),
            ("send", {"data": b"{}", "protocol": "testworker", "encrypt": True}, 503, "cannot encrypt"),
            ("send-file", {"path": os.path.join(self.tmp, "none"), "protocol": "testworker"}, 404,
             "cannot open"),
            ("send", {"data": b"{", "protocol": "testworker"}, 400, "payload is not valid JSON"),
            ("send", {"data": big, "protocol": "testworker"}, 413, "larger than gateway.max_message_bytes"),
        ]
        for name, body, code, words in cases:
            c.request(name, body)
            r = c.reply()
            self.assertEqual((r["ok"], r.get("code")), (False, code), (name, body, r))
            self.assertIn(words, r["error"], (name, body))
        # the spool full (its bound: 2 messages; the protocol paused keeps them there)
        c.request("pause", {"name": "testworker"})
        self.assertTrue(c.reply()["ok"])
        for _ in range(2):
            self.assertTrue(c.send(b"{}", protocol="testworker")["ok"])
        r = c.send(b"{}", protocol="testworker")
        self.assertEqual((r["ok"], r["code"]), (False, 507), r)
        self.assertIn("spool full", r["error"])
        # a reload of a configuration the loader refuses
        gw.write_config(None, text="gateway: [\n")
        c.request("reload", {})
        r = c.reply()
        self.assertEqual((r["ok"], r["code"]), (False, 422), r)
        # a version ucgwd does not speak
        c.version = 7
        c.request("status", {})
        r = c.reply()
        self.assertEqual((r["ok"], r["code"]), (False, 505), r)
        self.assertIn("control protocol version 7 not supported (this ucgwd speaks 1 to 2)", r["error"])
        c.sock.close()

    def test_a_version_1_client_is_answered_as_version_1(self):
        """A client of the version before: its replies say v 1 and carry no
        code (a version 1 decoder refuses a field it does not know), and keys
        a command does not know are ignored, as version 1 did."""
        gw = self.gateway(cfg(self.tmp))
        c = Ctl(gw.sock, version=1)
        r = c.send(b'{"plate":"V1"}', protocol="testworker", wait=True, someday="ignored")
        self.assertEqual((r["ok"], r["v"]), (True, 1), r)
        self.assertEqual(r["body"]["status"], "ok", r)
        self.assertNotIn("code", r)
        delivered = r["body"]["id"]
        for name, body in (("status", {"verbose": True}), ("select", {"kind": "metadata", "colour": "red"}),
                           ("queue", {"action": "list", "sort": "age"})):
            c.request(name, body)
            r = c.reply()
            self.assertEqual((r["ok"], r["v"]), (True, 1), (name, r))
        for name, body, words in (("restart", {"name": "nosuch"}, "no worker named 'nosuch'"),
                                  ("send", {"data": b"{}", "ttl_s": -1}, "send: ttl_s -1 is negative"),
                                  ("nosuch", {}, "unknown command 'nosuch'")):
            c.request(name, body)
            r = c.reply()
            self.assertEqual((r["ok"], r["v"]), (False, 1), (name, r))
            self.assertIn(words, r["error"])
            self.assertNotIn("code", r)
            self.assertEqual(set(r), {"t", "v", "seq", "ok", "error"}, r)
        # the same connection speaking version 2 gets codes again
        c.version = 2
        c.request("restart", {"name": "nosuch"})
        r = c.reply()
        self.assertEqual((r["v"], r["code"]), (2, 404), r)
        c.sock.close()
        with open(cfg(self.tmp)["testworker"]["record"]) as f:
            self.assertIn(delivered, f.read())


if __name__ == "__main__":
    unittest.main()
