"""Fallback at the supervisor with a real broker: a broker that is down sends
messages along the chain; a worker killed with jobs in flight has each of them
delivered once elsewhere; trace shows the route; stats count the fallbacks."""
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from ucgwtest import FaultProxy, GatewayTest, preload, wait_for  # noqa: E402

USERS = {"edge": "pw", "reader": "r"}


class FallbackTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.record = os.path.join(self.tmp, "delivered.txt")

    def delivered(self):
        try:
            with open(self.record) as f:
                return [l.split()[0] for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def cfg(self, mq, **tw):
        t = {"record": self.record}
        t.update(tw)
        return {"mqtt": {"broker_url": mq.url(), "username": "edge", "password": "pw"},
                "testworker": t,
                "fallback": {"chains": {"mqtt": ["testworker"], "testworker": ["mqtt"]}},
                "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}}

    def test_broker_down_goes_along_the_chain(self):
        mq = Mosquitto(self, users=USERS)
        gw = self.gateway(self.cfg(mq))
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt up")
        mq.stop()
        wait_for(lambda: not gw.workers()["mqtt"]["connected"], what="mqtt down")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", '{"plate":"FB1"}')
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual(o["protocol"], "testworker")
        self.assertIn(o["id"], self.delivered())
        stats = gw.ctl_json("stats")
        self.assertGreaterEqual(stats["mqtt"]["fallback_out"], 1)
        self.assertGreaterEqual(stats["testworker"]["fallback_in"], 1)

    def test_trace_shows_the_route(self):
        mq = Mosquitto(self, users=USERS)
        gw = self.gateway(self.cfg(mq, delay_ms=2000))
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt up")
        mq.stop()
        wait_for(lambda: not gw.workers()["mqtt"]["connected"], what="mqtt down")
        rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"plate":"TR"}')
        mid = out.strip()
        tr = wait_for(lambda: (lambda t: t if len(t["route"]) >= 2 else None)(gw.ctl_json("trace", mid)),
                      what="two hops")
        self.assertEqual(tr["route"][0]["protocol"], "mqtt")
        self.assertEqual(tr["route"][0]["result"], "retry")
        self.assertIn("unreachable", tr["route"][0]["error"])
        self.assertEqual(tr["route"][1]["protocol"], "testworker")
        rc, out, err = gw.ctl("trace", mid)
        self.assertIn("1. mqtt", out)
        self.assertIn("2. testworker", out)

    def test_worker_killed_with_jobs_in_flight_each_delivered_once(self):
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/test-cam-1/data", "reader", "r")
        # the worker holds each job 10 s: long enough for 20 sends on a slow (ASan, loaded) machine
        gw = self.gateway(self.cfg(mq, delay_ms=10000))
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt up")
        ids = [gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(20)]
        gw.wait_worker("testworker", lambda w: w["inflight"] == 20, what="20 jobs in flight")
        os.kill(gw.workers()["testworker"]["pid"], signal.SIGKILL)
        got = sub.wait(20)
        seen = [m["props"]["message-id"] for m in got]
        self.assertEqual(sorted(seen), sorted(ids))
        time.sleep(4)  # the restarted test worker must not deliver them again
        self.assertEqual([i for i in self.delivered() if i in ids], [])
        self.assertEqual(gw.ctl_json("stats")["testworker"]["fallback_out"], 20)

    def test_jobs_of_a_worker_whose_socket_closed_go_on_at_once(self):
        # A worker that closes its socket to the supervisor can answer none of
        # the jobs it holds; the process may still run for ping_timeout_ms
        # before it is killed for cause (20 s here). Its jobs go along their
        # chain (to mqtt) when the socket closes, not at the kill: the ten it
        # held and the marked one arrive at the broker within seconds, once
        # each, and neither the hung worker nor its successor delivers them.
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/test-cam-1/data", "reader", "r")
        self.addCleanup(sub.close)
        c = self.cfg(mq, delay_ms=60000)  # the worker holds each job until it hangs
        c["gateway"] = {"ping_timeout_ms": 20000, "job_timeout_ms": 120000, "restart_backoff_min_ms": 50}
        gw = self.gateway(c, env=preload("closehang.so", UCGW_CLOSEHANG_MARKER="close-and-hang",
                                         UCGW_CLOSEHANG_WORKER="ucgw-testworker"))
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt up")
        old = gw.workers()["testworker"]["pid"]
        ids = [gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(10)]
        gw.wait_worker("testworker", lambda w: w["inflight"] == 10, what="10 jobs in flight")
        t0 = time.monotonic()
        marked = gw.ctl("send", "--protocol", "testworker", '{"cmd":"close-and-hang"}')[1].strip()
        want = set(ids + [marked])
        wait_for(lambda: {m["props"]["message-id"] for m in sub.received()} >= want, timeout=40,
                 what="all 11 at the broker")
        took = time.monotonic() - t0
        print("\nsocket closed, worker hung: its 11 jobs at the broker after %.2f s (ping_timeout_ms 20000)" % took)
        self.assertLess(took, 3.0)
        self.assertEqual(gw.workers()["testworker"]["pid"], old)  # still there, hung: not what sent them on
        for mid in ids + [marked]:
            route = gw.ctl_json("trace", mid)["route"]
            self.assertEqual([(h["protocol"], h["result"]) for h in route], [("testworker", "retry"), ("mqtt", "ok")],
                             route)
            self.assertEqual(route[0]["error"], "worker closed its socket with the job in hand "
                                                "(peer closed the connection)")
        self.assertEqual(gw.ctl_json("stats")["testworker"]["fallback_out"], 11)
        # the kill for cause at 20 s, the restart; messages sent to it now are its own
        w = gw.wait_worker("testworker", lambda w: w["pid"] != old and w["state"] == "ready", timeout=40,
                           what="the hung worker killed and restarted")
        self.assertEqual(w["restarts"], 1)
        self.assertEqual(gw.log_text().count("its socket closed (peer closed the connection) and it did not exit "
                                             "within 20000 ms; killing it"), 1)
        crashdir = os.path.join(gw.dir, "crash", "testworker")
        [log] = os.listdir(crashdir)
        with open(os.path.join(crashdir, log)) as f:
            text = f.read()
        self.assertIn("did not exit within 20000 ms", text)
        self.assertIn("jobs_in_flight: 11\n", text)  # the jobs it held, though they went on before
        self.assertEqual(sorted(l.split()[1] for l in text.splitlines() if l.endswith(" sent_on=socket_closed")),
                         sorted(want))
        got = [m["props"]["message-id"] for m in sub.received()]
        self.assertEqual(sorted(got), sorted(want))  # each once
        self.assertEqual([i for i in self.delivered() if i in want], [])
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 0)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])

    def test_every_path_down_then_one_returns(self):
        mq = Mosquitto(self, users=USERS)
        gw = self.gateway(self.cfg(mq))
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt up")
        gw.ctl("pause", "testworker")
        mq.stop()
        wait_for(lambda: not gw.workers()["mqtt"]["connected"], what="mqtt down")
        ids = [gw.ctl("send", "--protocol", "mqtt", '{"n":%d}' % i)[1].strip() for i in range(10)]
        # each has walked its whole chain and waits: in the backoff, or for a moment on the
        # paused protocol's queue before it goes back to waiting (a slow poll may not catch
        # all ten in the backoff at the same instant)
        def all_waiting():
            q = {m["id"]: m for m in gw.ctl_json("queue")}
            return all(i in q and q[i]["state"] in ("waiting", "queued") and q[i]["attempts"] >= 2 for i in ids) \
                and any(m["state"] == "waiting" for m in q.values())
        wait_for(all_waiting, what="all waiting")
        self.assertEqual(self.delivered(), [])
        sub_started = time.monotonic()
        mq.start()
        sub = Subscriber(mq.port, "lpr/test-cam-1/data", "reader", "r")
        got = sub.wait(10, timeout=30)
        self.assertEqual(sorted(m["props"]["message-id"] for m in got), sorted(ids))
        print("\nwaiting messages went out %.1f s after the broker returned" % (time.monotonic() - sub_started))

    def test_chain_walked_to_the_end(self):
        # websocket answers retry (a 503 nack), rest answers 503, mqtt delivers:
        # three hops in the trace, one copy at the broker, the fallbacks counted.
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/test-cam-1/data", "reader", "r")
        peer = LprPeer(self)
        gw = self.gateway({"websocket": {"server_url": peer.ws_url(), "ack_timeout_ms": 5000},
                           "rest": {"base_url": peer.http_url()},
                           "mqtt": {"broker_url": mq.url(), "username": "edge", "password": "pw"},
                           "fallback": {"chains": {"websocket": ["rest", "mqtt"]}},
                           "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}})
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="all three up")
        self.assertEqual(peer.mode("503")["mode"], "503")  # every WebSocket message and HTTP POST: 503
        body = '{"plate":"CHAIN3","camera":"gate-1"}'
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", body)
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        # REST is tried rest.retry_attempts (3) times, as the reference design does
        self.assertEqual((o["status"], o["protocol"], o["attempts"]), ("ok", "mqtt", 5))
        tr = gw.ctl_json("trace", o["id"])
        self.assertEqual(tr["requested"], "websocket")
        self.assertEqual([(h["protocol"], h["result"]) for h in tr["route"]],
                         [("websocket", "retry")] + [("rest", "retry")] * 3 + [("mqtt", "ok")])
        self.assertIn("server refused (503)", tr["route"][0]["error"])
        self.assertIn("HTTP 503", tr["route"][1]["error"])
        self.assertIsNone(tr["route"][4]["error"])
        # the server saw each failed attempt once, with the message's id
        self.assertEqual([(r["proto"], r["id"], r["status"]) for r in peer.records()],
                         [("ws", o["id"], 503)] + [("http", o["id"], 503)] * 3)
        got = sub.wait(1)
        time.sleep(0.5)  # a second copy would have arrived by now
        got = sub.received()
        self.assertEqual(len(got), 1, got)
        self.assertEqual((got[0]["payload"], got[0]["props"]["message-id"]), (body.encode(), o["id"]))
        st = gw.ctl_json("stats")
        self.assertEqual((st["websocket"]["fallback_out"], st["websocket"]["fallback_in"]), (1, 0))
        self.assertEqual((st["rest"]["fallback_in"], st["rest"]["fallback_out"]), (1, 1))
        self.assertEqual((st["mqtt"]["fallback_in"], st["mqtt"]["fallback_out"]), (1, 0))

    def test_every_metadata_server_down_then_one_returns(self):
        # The broker is stopped; the HTTP/WebSocket server sits behind the fault
        # proxy, which closes every connection (drop). `auto` messages of every
        # size and priority wait, none lost; when the proxy passes again, each
        # arrives exactly once within seconds.
        mq = Mosquitto(self, users=USERS)
        peer = LprPeer(self)
        proxy = FaultProxy(self, peer.port)
        gw = self.gateway({"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % proxy.port,
                                         "reconnect_delay": 0.2, "reconnect_attempts": 1000,  # every 0.2 s
                                         "ack_timeout_ms": 2000},
                           "rest": {"base_url": "http://127.0.0.1:%d" % proxy.port, "timeout": 2},
                           "mqtt": {"broker_url": mq.url(), "username": "edge", "password": "pw"},
                           "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 500},
                           # REST cools down while its server closes every connection; when
                           # that ends, one message probes it and the rest follow at once
                           "fallback": {"cool_down_ms": 1000}})
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="all three up")
        mq.stop()
        self.assertEqual(proxy.command("drop"), "ok")
        wait_for(lambda: not any(gw.workers()[n]["connected"] for n in ("websocket", "mqtt")),
                 what="websocket and mqtt down")
        bodies = ['{"n":%d}' % i for i in range(4)]                              # small
        bodies += ['{"n":%d,"pad":"%s"}' % (i, "m" * 5000) for i in range(4, 6)]  # medium
        bodies += ['{"n":%d,"pad":"%s"}' % (i, "L" * 12000) for i in range(6, 8)]  # large
        ids = []
        for i, b in enumerate(bodies):
            rc, out, err = gw.ctl("send", *(("--priority", "high") if i % 3 == 0 else ()), b)
            self.assertEqual(rc, 0, err)
            ids.append(out.strip())
        wait_for(lambda: gw.ctl_json("status")["spool"]["waiting"] > 0, what="messages waiting")
        time.sleep(1)  # several rounds fail while every server is away
        st = gw.ctl_json("status")["spool"]
        self.assertEqual((st["depth"], st["dead"]), (len(ids), 0))
        self.assertEqual({m["id"] for m in gw.ctl_json("queue")}, set(ids))
        self.assertTrue(all(m["attempts"] >= 1 for m in gw.ctl_json("queue")))
        self.assertEqual(peer.records(), [])
        self.assertEqual(proxy.command("pass"), "ok")
        t0 = time.monotonic()
        wait_for(lambda: {r["id"] for r in peer.records()} >= set(ids), timeout=15, what="every message at the server")
        took = time.monotonic() - t0
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="spool drained")
        time.sleep(0.5)  # a second copy would have arrived by now
        got = sorted(r["id"] for r in peer.records())
        self.assertEqual(got, sorted(ids))  # each exactly once
        by_id = {r["id"]: r for r in peer.records()}
        for mid, b in zip(ids, bodies):  # the bytes as sent (WebSocket wraps them in its envelope)
            r = by_id[mid]
            if r["proto"] == "http":
                self.assertEqual(r["body"], b)
            else:
                self.assertTrue(r["body"].startswith('{"id":"%s","accepted_at":"' % mid) and
                                r["body"].endswith('","data":%s}' % b), r["body"])
        print("\n%d waiting messages at the server %.1f s after the proxy passed again (%s)" % (
            len(ids), took, ", ".join(sorted({r["proto"] for r in peer.records()}))))
        self.assertLess(took, 5)

    def test_server_that_closes_every_connection_is_not_hammered(self):
        """A server that accepts TCP connections and closes them at once (the
        fault proxy's drop; a load balancer without backends): each message
        waits its backoff (1 s doubling) and the protocol cools down after
        fallback.cool_after_failures (5). ucgw-rest's link flaps with every
        request (down on the failure, up on the next bare TCP connect); only a
        link that was down longer than the shortest backoff wakes the waiting
        messages, so the flapping does not send them again and again (it did:
        2,000 to 3,000 attempts a second)."""
        peer = LprPeer(self)
        proxy = FaultProxy(self, peer.port)
        gw = self.gateway({"rest": {"base_url": "http://127.0.0.1:%d" % proxy.port}})
        wait_for(lambda: gw.workers()["rest"]["connected"], what="rest up")
        self.assertEqual(proxy.command("drop"), "ok")
        for i in range(5):
            self.assertEqual(gw.ctl("send", "--protocol", "rest", '{"n":%d}' % i)[0], 0)
        time.sleep(2)
        retries = gw.ctl_json("stats")["rest"]["retries"]
        cooling = gw.log_text().count("protocol rest cooling down")
        proxy.command("pass")  # stop the storm before the test ends
        print("\n5 messages, 2 s of a server closing every connection: %d attempts, %d cool-down warnings" % (
            retries, cooling))
        # first try, then rounds 0.5-1 s and 1-2 s later: at most 3 attempts each
        self.assertLessEqual(retries, 15)
        self.assertLessEqual(cooling, 1)


if __name__ == "__main__":
    unittest.main()
