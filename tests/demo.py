#!/usr/bin/python3
"""The gateway's demo: local servers (mosquitto, the LPR stand-in for HTTP and
WebSocket, OpenSSH sshd), ucgwd with all five protocols, sample detections and a
sample image through each, and what arrived."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from sshd import Sshd  # noqa: E402
from ucgwtest import Gateway, Scene, wait_for  # noqa: E402


def show(title, cmd_out):
    print("\n$ ucgwctl " + title)
    print(cmd_out.rstrip())


def main():
    s = Scene()
    gw = None
    try:
        print("starting local servers: mosquitto, lpr-peer (HTTP + WebSocket), sshd ...")
        mq = Mosquitto(s, users={"edge_user": "secure_password", "reader": "r"})
        sub = Subscriber(mq.port, "lpr/#", "reader", "r")
        peer = LprPeer(s)
        sshd = Sshd(s)
        cfg = {
            "gateway": {"device_id": "aicamera-edge-001", "log_level": "warning"},
            "websocket": {"server_url": peer.ws_url()},
            "rest": {"base_url": peer.http_url()},
            "mqtt": {"broker_url": mq.url(), "client_id": "aicamera-edge-001", "username": "edge_user",
                     "password": "secure_password"},
            "sftp": {"host": "127.0.0.1", "port": sshd.port, "username": sshd.user, "key_file": sshd.user_key,
                     "known_hosts": sshd.known_hosts, "remote_path": sshd.remote},
            "rsync": {"remote_host": "127.0.0.1", "port": sshd.port, "remote_user": sshd.user,
                      "key_file": sshd.user_key, "known_hosts": sshd.known_hosts, "remote_path": sshd.remote,
                      "options": ["-a", "--partial"]},
        }
        gw = Gateway(s.tmp, cfg, "gateway")
        print("starting ucgwd -c %s" % gw.cfg_path)
        gw.start()
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), timeout=20, what="servers reachable")
        show("status", gw.ctl("status")[1])
        show("workers --json", json.dumps(gw.ctl_json("workers"))[:400] + " ...")
        detections = [("websocket", {"plate": "ABC1234", "confidence": 0.97, "camera": "gate-1"}),
                      ("rest", {"plate": "XYZ9876", "confidence": 0.91, "camera": "gate-1"}),
                      ("mqtt", {"plate": "KLM5555", "confidence": 0.88, "camera": "gate-1"}),
                      ("auto", {"plate": "AUTO001", "confidence": 0.99, "camera": "gate-1"})]
        failed = []

        def outcome(what, rc, out, err):
            show(what, out + err)
            if rc != 0 or " delivered by " not in out:
                failed.append("%s: exit %d: %s" % (what, rc, (out + err).strip()))
        for proto, d in detections:
            outcome("send --protocol %s --wait '%s'" % (proto, json.dumps(d)),
                    *gw.ctl("send", "--protocol", proto, "--wait", json.dumps(d)))
        image = os.path.join(s.tmp, "plate-0001.jpg")
        with open(image, "wb") as f:
            f.write(os.urandom(2 * 1024 * 1024))
        for proto in ("sftp", "rsync"):
            outcome("send-file --protocol %s --remote-name %s-plate-0001.jpg --wait %s" % (proto, proto, image),
                    *gw.ctl("send-file", "--protocol", proto, "--remote-name", proto + "-plate-0001.jpg", "--wait",
                            image))
        time.sleep(0.5)
        show("stats", gw.ctl("stats")[1])
        print("\nwhat the servers received:")
        records, published = peer.records(), sub.received("lpr/aicamera-edge-001/data")
        for r in records:
            print("  lpr-peer %-4s id=%s body=%s" % (r["proto"], r["id"], r["body"][:80]))
        for m in published:
            print("  mosquitto lpr/aicamera-edge-001/data message-id=%s payload=%s"
                  % (m["props"].get("message-id"), m["payload"].decode()[:80]))
        with open(image, "rb") as f:
            sent = f.read()
        same = 0
        for name in sorted(os.listdir(sshd.remote)):
            path = os.path.join(sshd.remote, name)
            print("  sshd %s (%d bytes)" % (path, os.path.getsize(path)))
            with open(path, "rb") as f:
                same += f.read() == sent
        # one detection each by websocket, rest and mqtt, and the one sent with
        # auto by whichever the gateway chose: four in all; the image twice, whole
        protos = sorted(r["proto"] for r in records) + ["mqtt"] * len(published)
        if len(protos) != 4 or not {"ws", "http", "mqtt"} <= set(protos) or same != 2:
            failed.append("the servers received %s and %d identical images, not the 4 detections (ws, http, "
                          "mqtt, and one more) and 2 images sent" % (protos, same))
        rc = gw.stop()
        print("\nstopping ucgwd (SIGTERM): exit status %s" % rc)
        if rc != 0:
            failed.append("ucgwd exited with status %s" % rc)
    finally:
        if gw:
            gw.kill()
        s.close()
    if failed:
        print("\nDEMO FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    print("\ndemo done: 4 detections and 2 images delivered, each acknowledged by its server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
