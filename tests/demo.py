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
        for proto, d in detections:
            show("send --protocol %s --wait '%s'" % (proto, json.dumps(d)),
                 gw.ctl("send", "--protocol", proto, "--wait", json.dumps(d))[1])
        image = os.path.join(s.tmp, "plate-0001.jpg")
        with open(image, "wb") as f:
            f.write(os.urandom(2 * 1024 * 1024))
        for proto in ("sftp", "rsync"):
            show("send-file --protocol %s --remote-name %s-plate-0001.jpg --wait %s" % (proto, proto, image),
                 gw.ctl("send-file", "--protocol", proto, "--remote-name", proto + "-plate-0001.jpg", "--wait",
                        image)[1])
        time.sleep(0.5)
        show("stats", gw.ctl("stats")[1])
        print("\nwhat the servers received:")
        for r in peer.records():
            print("  lpr-peer %-4s id=%s body=%s" % (r["proto"], r["id"], r["body"][:80]))
        for m in sub.received("lpr/aicamera-edge-001/data"):
            print("  mosquitto lpr/aicamera-edge-001/data message-id=%s payload=%s"
                  % (m["props"].get("message-id"), m["payload"].decode()[:80]))
        for name in sorted(os.listdir(sshd.remote)):
            print("  sshd %s/%s (%d bytes)" % (sshd.remote, name, os.path.getsize(os.path.join(sshd.remote, name))))
        print("\nstopping ucgwd (SIGTERM): exit status %s" % gw.stop())
    finally:
        if gw:
            gw.kill()
        s.close()


if __name__ == "__main__":
    main()
