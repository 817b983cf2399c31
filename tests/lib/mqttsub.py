"""A small MQTT 5 subscriber for the tests (standard library only): connects,
subscribes, and collects every PUBLISH with its topic, payload, retain flag and
user properties, in a background thread."""
import socket
import struct
import threading
import time


def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _read_varint(buf, i):
    mult, val = 1, 0
    while True:
        b = buf[i]
        i += 1
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, i
        mult *= 128


class Subscriber:
    def __init__(self, port, topic="#", username=None, password=None, host="127.0.0.1", qos=1, durable=False):
        """durable: a persistent session (fixed client id, clean start off, long
        session expiry) that reconnects by itself, so the broker keeps what is
        published while it is away, even across a broker restart."""
        self.messages = []
        self.lock = threading.Lock()
        self.args = (port, topic, username, password, host, qos)
        self.durable = durable
        self.closed = False
        self._connect()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _connect(self):
        port, topic, username, password, host, qos = self.args
        self.sock = socket.create_connection((host, port), timeout=10)
        flags = (0 if self.durable else 0x02) | (0x80 if username else 0) | (0x40 if password else 0)
        props = (bytes([0x11]) + struct.pack(">I", 3600)) if self.durable else b""
        var = _str("MQTT") + bytes([5, flags]) + struct.pack(">H", 30) + _varint(len(props)) + props
        payload = _str("ucgw-test-sub-%s" % (topic if self.durable else id(self)))
        if username:
            payload += _str(username)
        if password:
            payload += _str(password)
        body = var + payload
        self.sock.sendall(bytes([0x10]) + _varint(len(body)) + body)
        kind, data = self._packet()
        if kind != 2 or data[1] != 0:
            raise ConnectionError("subscriber: CONNACK refused (%r)" % data[:4])
        sub = struct.pack(">H", 1) + _varint(0) + _str(topic) + bytes([qos])
        self.sock.sendall(bytes([0x82]) + _varint(len(sub)) + sub)
        while True:  # a resumed session may deliver queued messages before the SUBACK
            kind, data = self._packet()
            if kind == 3:
                self._publish(self._flags, data)
            elif kind == 9:
                break
        self.sock.settimeout(None)

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def _packet(self):
        first = self._recv(1)[0]
        mult, length = 1, 0
        while True:
            b = self._recv(1)[0]
            length += (b & 0x7F) * mult
            if not b & 0x80:
                break
            mult *= 128
        self._flags = first & 0x0F
        return first >> 4, self._recv(length)

    def _run(self):
        while not self.closed:
            try:
                while True:
                    kind, data = self._packet()
                    if kind == 3:
                        self._publish(self._flags, data)
            except (OSError, ConnectionError, AssertionError):
                pass
            while self.durable and not self.closed:
                time.sleep(0.1)
                try:
                    self._connect()
                    break
                except (OSError, ConnectionError, AssertionError):
                    continue
            if not self.durable:
                return

    def _publish(self, flags, data):
        qos = (flags >> 1) & 3
        tlen = struct.unpack(">H", data[:2])[0]
        topic = data[2:2 + tlen].decode()
        i = 2 + tlen
        pid = None
        if qos:
            pid = struct.unpack(">H", data[i:i + 2])[0]
            i += 2
        plen, i = _read_varint(data, i)
        props, end = {}, i + plen
        while i < end:
            pid_ = data[i]
            i += 1
            if pid_ == 0x26:  # user property
                kl = struct.unpack(">H", data[i:i + 2])[0]
                k = data[i + 2:i + 2 + kl].decode()
                i += 2 + kl
                vl = struct.unpack(">H", data[i:i + 2])[0]
                v = data[i + 2:i + 2 + vl].decode()
                i += 2 + vl
                props[k] = v
            elif pid_ in (0x01,):
                i += 1
            elif pid_ in (0x02,):
                i += 4
            elif pid_ in (0x03, 0x08):
                sl = struct.unpack(">H", data[i:i + 2])[0]
                i += 2 + sl
            elif pid_ == 0x09:
                sl = struct.unpack(">H", data[i:i + 2])[0]
                i += 2 + sl
            elif pid_ == 0x0B:
                _, i = _read_varint(data, i)
            elif pid_ == 0x23:
                i += 2
            else:
                break
        payload = data[end:]
        with self.lock:
            self.messages.append({"topic": topic, "payload": payload, "retain": bool(flags & 1), "props": props})
        if qos == 1:
            self.sock.sendall(bytes([0x40, 2]) + struct.pack(">H", pid))
        elif qos == 2:
            self.sock.sendall(bytes([0x50, 2]) + struct.pack(">H", pid))

    def received(self, topic=None):
        with self.lock:
            return [m for m in self.messages if topic is None or m["topic"] == topic]

    def wait(self, n, topic=None, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(topic)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError("expected %d messages on %s, got %d" % (n, topic, len(self.received(topic))))

    def close(self):
        self.closed = True
        try:
            self.sock.sendall(bytes([0xE0, 0]))
            self.sock.close()
        except OSError:
            pass


def decoded(msg):
    """A received message's payload as it was before compression: by its MQTT 5 user property
    content-encoding (gzip, or zstd through the system's libzstd), or as it came."""
    enc = msg["props"].get("content-encoding")
    if enc is None:
        return msg["payload"]
    if enc == "gzip":
        import gzip
        return gzip.decompress(msg["payload"])
    if enc == "zstd":
        import ctypes
        z = ctypes.CDLL("libzstd.so.1")
        z.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
        z.ZSTD_decompress.restype = ctypes.c_size_t
        z.ZSTD_isError.argtypes = [ctypes.c_size_t]
        src = msg["payload"]
        size = z.ZSTD_getFrameContentSize(src, ctypes.c_size_t(len(src)))
        if size >= 2 ** 63:
            raise ValueError("zstd: frame without its size, or not zstd")
        out = ctypes.create_string_buffer(size)
        n = z.ZSTD_decompress(out, ctypes.c_size_t(size), src, ctypes.c_size_t(len(src)))
        if z.ZSTD_isError(n):
            raise ValueError("zstd: damaged payload")
        return out.raw[:n]
    raise ValueError("unknown content-encoding %r" % enc)
