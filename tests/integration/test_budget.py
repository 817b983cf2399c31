"""The link's byte budget and rate cap (the `link` section) against a real
mosquitto and a real OpenSSH sshd: a daily budget that runs out holds the
images while the detections flow, its count survives a restart of ucgwd, and
the held images go once a reload raises it, and a start before the clock is
set (a camera booting before NTP) neither zeroes it nor starts a period of its
own; a rate cap shared by the workers slows the images and not the
detections."""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from sshd import Sshd  # noqa: E402
from ucgwtest import GatewayTest, preload, wait_for  # noqa: E402

DATA = "lpr/test-cam-1/data"


class BudgetTest(GatewayTest):
    def servers(self):
        mq = Mosquitto(self)
        sub = Subscriber(mq.port, "#")
        self.addCleanup(sub.close)
        sshd = Sshd(self)
        return mq, sub, sshd

    def cfg(self, mq, sshd, link):
        return {"mqtt": {"broker_url": mq.url()},
                "sftp": {"host": "127.0.0.1", "port": sshd.port, "username": sshd.user, "key_file": sshd.user_key,
                         "known_hosts": sshd.known_hosts, "remote_path": sshd.remote},
                "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000},
                "link": link}

    def image(self, name, size):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def send_file(self, gw, path, wait=False):
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "sftp", *(["--wait"] if wait else []), path)
        self.assertEqual(rc, 0, err)
        return json.loads(out)["id"] if out.strip().startswith("{") else out.strip()

    def arrived(self, sshd):
        return sorted(os.listdir(sshd.remote))

    def link(self, gw):
        return gw.ctl_json("status")["link"]

    def test_budget_holds_images_across_a_restart_until_raised(self):
        mq, sub, sshd = self.servers()
        budget = 200000  # two images of 100 KiB and their SSH overhead pass 80% of it
        cfg = self.cfg(mq, sshd, {"budget_bytes_per_day": budget, "budget_warn_percent": 80,
                                  "budget_policy": "hold_files"})
        gw = self.gateway(cfg)
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="both workers connected")
        for i in range(2):
            self.send_file(gw, self.image("before-%d.jpg" % i, 100 * 1024), wait=True)
        # the wire count (TCP bytes, both directions) has the images and the SSH around them
        link = wait_for(lambda: (lambda l: l if l["holding"] == "daily" else None)(self.link(gw)), timeout=5,
                        what="the daily budget holding files")
        self.assertGreater(link["day"]["used_bytes"], 2 * 100 * 1024)
        self.assertGreater(link["wire_bytes"]["sftp"], 2 * 100 * 1024)
        self.assertEqual(link["day"]["budget_bytes"], budget)
        self.assertGreaterEqual(link["day"]["projected_bytes"], link["day"]["used_bytes"])
        # from here the images wait; the detections go
        held = [self.send_file(gw, self.image("held-%d.jpg" % i, 100 * 1024)) for i in range(3)]
        ids = []
        for i in range(20):
            rc, out, err = gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", '{"plate":"B%03d"}' % i)
            self.assertEqual(rc, 0, err)
            o = json.loads(out)
            self.assertEqual(o["status"], "ok", o)
            ids.append(o["id"])
        wait_for(lambda: {m["props"]["message-id"] for m in sub.received(DATA)} >= set(ids), what="detections")
        queue = {m["id"]: m for m in gw.ctl_json("queue")}
        self.assertEqual(set(queue), set(held))
        for mid in held:
            self.assertEqual(queue[mid]["state"], "waiting")
            self.assertRegex(queue[mid]["last_error"],
                             r"^held: daily byte budget \d+% used \(\d+ of 200000 bytes; link.budget_policy hold_files\)")
        rc, out, _ = gw.ctl("trace", held[0])
        self.assertIn("held: daily byte budget", out)
        self.assertEqual(len(self.arrived(sshd)), 2)
        self.assertEqual(self.link(gw)["held"], 3)
        # a restart: the count is kept, the images still wait
        used = self.link(gw)["day"]["used_bytes"]
        self.assertEqual(gw.stop(), 0)
        with open(os.path.join(gw.dir, "state", "link-budget")) as f:
            self.assertIn("day ", f.read())
        gw.start()
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="both workers connected again")
        link = self.link(gw)
        self.assertGreaterEqual(link["day"]["used_bytes"], used)
        wait_for(lambda: self.link(gw)["held"] == 3, what="the three images held again after the restart")
        time.sleep(0.5)
        self.assertEqual(len(self.arrived(sshd)), 2)
        self.assertEqual(gw.ctl_json("status")["spool"]["dead"], 0)
        # a reload that raises the budget lets them go
        cfg["link"]["budget_bytes_per_day"] = 10 * budget
        gw.write_config(cfg)
        rc, _, err = gw.ctl("reload")
        self.assertEqual(rc, 0, err)
        wait_for(lambda: len(self.arrived(sshd)) == 5, timeout=10, what="the held images delivered")
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="spool drained")
        self.assertIn("held messages go round again", gw.log_text())

    def test_count_kept_across_a_start_before_the_clock_is_set(self):
        mq = Mosquitto(self)
        cfg = {"mqtt": {"broker_url": mq.url()}, "link": {"budget_bytes_per_month": 10**9}}
        gw = self.gateway(cfg)
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="the worker connected")
        for i in range(20):
            rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"plate":"B%d","pad":"%s"}' % (i, "x" * 500))
            self.assertEqual(rc, 0, err)
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="all delivered")
        wait_for(lambda: self.link(gw)["month"]["used_bytes"] > 10000, what="the bytes counted")
        gw.stop()
        with open(os.path.join(cfg["gateway"]["state_dir"], "link-budget")) as f:
            saved = int(f.read().split("month ")[1].split()[1])
        unset = os.path.join(self.tmp, "clock-unset")
        open(unset, "w").close()
        mark = len(gw.log_text())
        gw.start(env=preload("unsetclock.so", UCGW_CLOCK_UNSET_FILE=unset))  # the clock reads 20 years behind
        wait_for(lambda: "the clock is not known to be set" in gw.log_text()[mark:], what="a start before the clock is set")
        self.assertGreaterEqual(self.link(gw)["month"]["used_bytes"], saved)
        self.assertGreaterEqual(self.link(gw)["day"]["used_bytes"], saved)
        os.unlink(unset)  # NTP sets the clock
        wait_for(lambda: "the clock is set" in gw.log_text()[mark:], what="the clock set")
        time.sleep(1.5)  # the budget's tick
        self.assertGreaterEqual(self.link(gw)["month"]["used_bytes"], saved)
        self.assertGreaterEqual(self.link(gw)["day"]["used_bytes"], saved)
        self.assertNotIn("ended with", gw.log_text()[mark:])

    def test_rate_cap_shares_the_link(self):
        mq, sub, sshd = self.servers()
        cap = 100000
        gw = self.gateway(self.cfg(mq, sshd, {"max_bytes_per_s": cap}))
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="both workers connected")
        n, size = 5, 64 * 1024
        start = time.monotonic()
        for i in range(n):
            self.send_file(gw, self.image("capped-%d.jpg" % i, size))
        # while the images wait for the cap, every detection goes at once
        worst = 0.0
        ids = []
        for i in range(10):
            t = time.monotonic()
            rc, out, err = gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", '{"plate":"R%03d"}' % i)
            worst = max(worst, time.monotonic() - t)
            self.assertEqual(rc, 0, err)
            ids.append(json.loads(out)["id"])
        self.assertLess(len(self.arrived(sshd)), n, "the images were not capped")
        self.assertLess(worst, 1.0, "a detection waited behind the images")
        wait_for(lambda: len(self.arrived(sshd)) == n, timeout=15, what="every image delivered")
        took = time.monotonic() - start
        # a second's worth may go at once, and a job may overshoot the bucket by its size; the rest at the cap
        self.assertGreater(took, (n * size - cap - size) / cap * 0.9)
        self.assertGreater(self.link(gw)["rate_waits"], 0)
        wait_for(lambda: {m["props"]["message-id"] for m in sub.received(DATA)} >= set(ids), what="detections")


if __name__ == "__main__":
    unittest.main()
