"""compress: none | gzip | zstd, decoded by real servers: lpr-peer decodes
REST's Content-Encoding and speaks permessage-deflate (libwebsockets), a
subscriber on mosquitto reads MQTT 5's content-encoding user property. What
arrives decompresses to exactly what was sent, and fewer bytes crossed the
wire (lpr-peer's count of the body as it came, ucgw-linkem's of the link).
A payload that is also encrypted is compressed before it is sealed."""
import asyncio
import base64
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import detection  # noqa: E402
from linkem import Link, wait_drained  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber, decoded  # noqa: E402
from ucgwtest import BIN, GatewayTest, wait_for  # noqa: E402


def enveloped(o):
    """An envelope as it arrived, without the accepted_at ucgwd stamps in it
    (checked to be there: when ucgwd accepted the message)."""
    assert "accepted_at" in o, o
    return {k: v for k, v in o.items() if k != "accepted_at"}

SPOOL = {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}


class CompressTest(GatewayTest):
    def send(self, gw, proto, body, wait=True):
        args = ["--json", "send", "--protocol", proto] + (["--wait"] if wait else []) + [body]
        rc, out, err = gw.ctl(*args)
        self.assertEqual(rc, 0, err)
        return json.loads(out)["id"]

    def rest_gw(self, peer, **rest):
        r = {"base_url": peer.http_url(), "timeout": 5}
        r.update(rest)
        gw = self.gateway({"rest": r, "spool": SPOOL})
        wait_for(lambda: gw.workers()["rest"]["connected"], what="rest connected")
        return gw

    def test_rest_content_encoding_gzip_and_zstd(self):
        for alg in ("gzip", "zstd"):
            peer = LprPeer(self, name="peer-" + alg)
            gw = self.rest_gw(peer, compress=alg)
            big, small = detection.text(1), '{"plate":"S1"}'
            ids = [self.send(gw, "rest", big), self.send(gw, "rest", small)]
            recs = peer.records("http")
            self.assertEqual([r["id"] for r in recs], ids)
            # the large one came compressed, decoded by the peer to exactly what was sent
            self.assertEqual(recs[0]["ce"], alg)
            self.assertEqual(recs[0]["body"], big)
            self.assertLess(recs[0]["wire_len"], len(big.encode()))
            # below compress_min_bytes (256): as it is, no Content-Encoding
            self.assertIsNone(recs[1]["ce"])
            self.assertEqual((recs[1]["body"], recs[1]["wire_len"]), (small, len(small)))
            gw.stop()
            peer.stop()

    def test_rest_batch_is_one_compressed_body(self):
        peer = LprPeer(self)
        gw = self.rest_gw(peer, compress="gzip", batch_max=20, batch_linger_ms=5000)
        sent = {self.send(gw, "rest", detection.text(i), wait=False): detection.record(i) for i in range(20)}
        recs = wait_for(lambda: peer.records("http"), what="the batch at the peer")
        self.assertEqual(len(recs), 1, [r["len"] for r in recs])
        self.assertEqual(recs[0]["ce"], "gzip")
        got = {e["id"]: e["data"] for e in json.loads(recs[0]["body"])}
        self.assertEqual(got, sent)
        raw = len(recs[0]["body"].encode())
        self.assertLess(recs[0]["wire_len"] * 3, raw, "20 similar records compress to under a third")

    def test_mqtt_user_property_names_the_encoding(self):
        mq = Mosquitto(self)
        sub = Subscriber(mq.port, "lpr/#")
        self.addCleanup(sub.close)
        for alg in ("gzip", "zstd"):
            gw = self.gateway({"mqtt": {"broker_url": mq.url(), "compress": alg, "envelope": True}, "spool": SPOOL})
            wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt connected")
            big, small = detection.text(2), '{"plate":"S2"}'
            ids = [self.send(gw, "mqtt", big), self.send(gw, "mqtt", small)]
            msgs = sub.wait(2 if alg == "gzip" else 4, topic="lpr/test-cam-1/data")[-2:]
            self.assertEqual(msgs[0]["props"]["content-encoding"], alg)
            self.assertEqual(msgs[0]["props"]["message-id"], ids[0])
            env = json.loads(decoded(msgs[0]))
            self.assertEqual(enveloped(env), {"id": ids[0], "data": json.loads(big)})
            self.assertLess(len(msgs[0]["payload"]), len(json.dumps(env, ensure_ascii=False).encode()))
            self.assertNotIn("content-encoding", msgs[1]["props"])
            self.assertEqual(enveloped(json.loads(msgs[1]["payload"])), {"id": ids[1], "data": json.loads(small)})
            gw.stop()

    def ws_bytes(self, compress, n=40, deflate=True):
        """Upstream bytes the link carried for n records, and what the peer got."""
        peer = LprPeer(self, name="peer-%s-%s" % (compress, deflate), extra=[] if deflate else ["--no-deflate"])
        link = Link.for_test(self, peer.port, profile="lan")
        gw = self.gateway({"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % link.port, "compress": compress},
                           "spool": SPOOL})
        wait_for(lambda: gw.workers()["websocket"]["connected"], what="websocket connected")
        before = link.stats()["up_bytes"]
        ids = [self.send(gw, "websocket", detection.text(i), wait=False) for i in range(n)]
        wait_for(lambda: len(peer.records("ws")) >= n, what="%d records at the peer" % n)
        wait_drained(link)
        recs = peer.records("ws")
        self.assertEqual([enveloped(json.loads(r["body"])) for r in recs],
                         [{"id": i, "data": detection.record(k)} for k, i in enumerate(ids)])
        gw.stop()
        return link.stats()["up_bytes"] - before, recs, gw

    def test_websocket_permessage_deflate(self):
        plain, _, _ = self.ws_bytes("none")
        deflated, recs, gw = self.ws_bytes("gzip")
        self.assertIn("permessage-deflate", recs[0]["ext"])
        self.assertIn("permessage-deflate with", gw.log_text())
        # the context carries over: similar records cost a fraction each
        self.assertLess(deflated * 2, plain, "deflated %d bytes, plain %d" % (deflated, plain))
        # a server that does not agree gets them as they are, all the same
        refused, recs, gw = self.ws_bytes("gzip", deflate=False)
        self.assertIn("did not accept permessage-deflate", gw.log_text())
        self.assertGreater(refused * 10, plain * 9)

    def test_websocket_pings_under_deflate(self):
        # libwebsockets 4.1 loops on a pong with a payload once permessage-deflate is on:
        # the worker, stalled, was killed for not answering the supervisor's pings
        peer = LprPeer(self)
        gw = self.gateway({"websocket": {"server_url": peer.ws_url(), "compress": "gzip", "ping_interval_s": 1},
                           "spool": SPOOL})
        wait_for(lambda: gw.workers()["websocket"]["connected"], what="websocket connected")
        pid = gw.workers()["websocket"]["pid"]
        time.sleep(7)  # six pings and pongs; a stall of 5 s gets the worker killed
        self.assertEqual(gw.workers()["websocket"]["pid"], pid, gw.log_text())
        self.assertNotIn("did not answer pings", gw.log_text())
        i = self.send(gw, "websocket", detection.text(5))
        self.assertEqual(enveloped(json.loads(peer.records("ws")[-1]["body"])), {"id": i, "data": detection.record(5)})

    def python_ws_server(self, ping_interval=20, **pmd):
        """A second implementation, Python's websockets (zlib inflating, strict about
        RSV1), with the permessage-deflate parameters given; acks every message."""
        from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
        from websockets.exceptions import ConnectionClosed
        from websockets.server import serve
        got, ready, loop = [], threading.Event(), asyncio.new_event_loop()

        async def handler(ws):
            try:
                async for m in ws:
                    got.append(m)
                    await ws.send(json.dumps({"ack": json.loads(m)["id"]}))
            except ConnectionClosed:  # the gateway stopped at the test's end
                pass

        async def main():
            self.ws_stop = loop.create_future()
            async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=ping_interval,
                             extensions=[ServerPerMessageDeflateFactory(**pmd)]) as srv:
                self.ws_port = srv.sockets[0].getsockname()[1]
                ready.set()
                await self.ws_stop

        t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        t.start()
        ready.wait(10)
        self.addCleanup(lambda: (loop.call_soon_threadsafe(self.ws_stop.set_result, None), t.join(10)))
        return got

    def test_websocket_server_parameters_kept(self):
        # the server asks for a 10-bit window and no context takeover: each message deflated on its own
        got = self.python_ws_server(client_no_context_takeover=True, client_max_window_bits=10)
        link = Link.for_test(self, self.ws_port, profile="lan")
        gw = self.gateway({"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % link.port, "compress": "gzip"},
                           "spool": SPOOL})
        wait_for(lambda: gw.workers()["websocket"]["connected"], what="websocket connected")
        self.assertIn("window 10 bits, each message on its own", gw.log_text())
        before = link.stats()["up_bytes"]
        ids = [self.send(gw, "websocket", detection.text(i)) for i in range(10)]
        self.assertEqual([enveloped(json.loads(m)) for m in got], [{"id": i, "data": detection.record(k)}
                                                        for k, i in enumerate(ids)])
        sent = link.stats()["up_bytes"] - before
        plain = sum(len(m.encode()) + 8 for m in got)  # a masked frame's header: 8 bytes at this size
        self.assertLess(sent, plain * 0.9, "%d bytes for %d uncompressed" % (sent, plain))

    def test_websocket_server_pings_under_deflate(self):
        # the server's own pings (Python's websockets sends one every 20 s, with a payload)
        got = self.python_ws_server(ping_interval=1)
        gw = self.gateway({"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % self.ws_port, "compress": "gzip"},
                           "spool": SPOOL})
        wait_for(lambda: gw.workers()["websocket"]["connected"], what="websocket connected")
        pid = gw.workers()["websocket"]["pid"]
        time.sleep(7)
        self.assertEqual(gw.workers()["websocket"]["pid"], pid, gw.log_text())
        i = self.send(gw, "websocket", detection.text(6))
        self.assertEqual(enveloped(json.loads(got[-1])), {"id": i, "data": detection.record(6)})

    def test_compressed_before_sealed(self):
        from Cryptodome.Cipher import AES  # Debian: python3-pycryptodome
        key = os.urandom(32)
        path = os.path.join(self.tmp, "key")
        with open(path, "wb") as f:
            f.write(key)
        os.chmod(path, 0o600)
        peer = LprPeer(self)
        gw = self.gateway({"rest": {"base_url": peer.http_url(), "compress": "gzip", "encrypt": True},
                           "security": {"encryption_key_file": path}, "spool": SPOOL})
        wait_for(lambda: gw.workers()["rest"]["connected"], what="rest connected")
        big = detection.text(3)
        self.send(gw, "rest", big)
        rec = peer.records("http")[0]
        sealed = base64.b64decode(json.loads(rec["body"]))
        nonce, tag, ct = sealed[:12], sealed[12:28], sealed[28:]
        plain = AES.new(key, AES.MODE_GCM, nonce=nonce).decrypt_and_verify(ct, tag)
        self.assertEqual(plain[:2], b"\x1f\x8b", "the plaintext sealed is gzip")
        self.assertEqual(gzip.decompress(plain).decode(), big)
        self.assertLess(len(ct), len(big.encode()))

    def test_config_refuses_what_cannot_work(self):
        cases = [({"websocket": {"server_url": "ws://127.0.0.1:1/x", "compress": "zstd"}},
                  "websocket.compress: zstd has no WebSocket extension"),
                 ({"mqtt": {"broker_url": "127.0.0.1:1", "protocol_version": "3.1.1", "compress": "gzip"}},
                  "mqtt.compress: gzip needs protocol_version 5"),
                 ({"rest": {"base_url": "http://127.0.0.1:1", "compress": "brotli"}}, "compress")]
        for cfg, words in cases:
            gw = self.gateway(cfg, start=False)
            r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(words, r.stderr + r.stdout)


if __name__ == "__main__":
    unittest.main()
