#!/usr/bin/python3
"""A fault-injecting TCP proxy for the tests (this kernel has no netem).

    faultproxy.py LISTEN_PORT TARGET_HOST TARGET_PORT CONTROL_PORT

Prints "listening on PORT control PORT" once ready (LISTEN_PORT/CONTROL_PORT 0
pick free ports). The control port takes one command per line and answers "ok":

    pass                 forward untouched
    latency MS           delay every chunk, each way, by MS milliseconds: stop-and-wait
                         (it reads, sleeps, writes: one chunk per delay), which understates
                         every pipelined protocol; for a link's throughput use
                         tests/tools/linkem.c (build/bin/ucgw-linkem) instead
    drop                 close every connection, and refuse new ones
    blackhole            accept, but forward nothing and never answer
    bandwidth BYTES      cap each direction at BYTES per second
    hold                 the connections open now are black-holed until release, whatever
                         the mode, and stricter: not even a close passes (see below);
                         connections made later follow the mode
    release              the held connections follow the mode again
    stats                answer "connections N bytes_up N bytes_down N held N dropped N
                         resets N": held, bytes read and kept back by a black hole now;
                         dropped, such bytes dropped because their sender reset the
                         connection; resets, connections a client reset (RST)

What a black hole models. A chunk the proxy has read and keeps back stands for
bytes a real black hole never let arrive: they are still in the sender's kernel,
unacknowledged and retransmitted, and arrive once the hole clears (then the
proxy passes them on). Unless the sender resets the connection meanwhile
(close with SO_LINGER 0, or its process dies with the socket so set): its
kernel then discards them and stops retransmitting, and the RST itself is lost
in the hole. So a chunk kept back from a side that then resets is dropped, and
the other side learns of the end only when the hole clears (it is reset then:
its next segment would be answered with an RST). A side that closes normally
(FIN) still has its bytes retransmitted: they are passed on, then the close.
A held connection (hold) passes no close at all until release, as a real hole;
the blackhole mode, as it always has, passes a close with nothing kept back.
"""
import asyncio
import socket
import struct
import sys
import time


class Conn:
    """One proxied connection: the client's and the server's writers, the two pipes, and whether it is held."""

    def __init__(self, cwriter, swriter):
        self.cw, self.sw = cwriter, swriter
        self.tasks = ()
        self.held = False


def reset(writer):
    """Close with an RST (SO_LINGER 0), discarding what was not sent."""
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, AttributeError):
        pass
    writer.transport.abort()


class Proxy:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.mode = "pass"
        self.latency = 0.0
        self.rate = 0
        self.conns = set()
        self.count = 0
        self.up = self.down = 0
        self.held = self.dropped = self.resets = 0

    def blocked(self, conn):
        return self.mode == "blackhole" or conn.held

    async def hole(self, conn):
        while self.blocked(conn):
            await asyncio.sleep(0.05)

    async def keep_back(self, conn, reader, n, up):
        """Keeps n bytes read from reader back until the hole clears; False
        when their sender reset the connection meanwhile: they are dropped."""
        self.held += n
        try:
            while self.blocked(conn) and reader.exception() is None:
                await asyncio.sleep(0.05)
        finally:
            self.held -= n
        if reader.exception() is None:
            return True
        self.dropped += n
        self.resets += up
        await self.hole(conn)  # the RST is lost in the hole
        return False

    async def pipe(self, conn, reader, writer, up):
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionResetError:
                    self.resets += up
                    if not self.blocked(conn):
                        raise
                    await self.hole(conn)  # the RST is lost in the hole
                    reset(writer)
                    break
                if not data:
                    if conn.held:
                        await self.hole(conn)  # so is a FIN, on a held connection
                    break
                if self.blocked(conn) and not await self.keep_back(conn, reader, len(data), up):
                    reset(writer)
                    break
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.rate:
                    await asyncio.sleep(len(data) / self.rate)
                writer.write(data)
                await writer.drain()
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def handle(self, creader, cwriter):
        if self.mode == "drop":
            cwriter.close()
            return
        self.count += 1
        try:
            sreader, swriter = await asyncio.open_connection(self.host, self.port)
        except OSError:
            cwriter.close()
            return
        conn = Conn(cwriter, swriter)
        conn.tasks = (asyncio.ensure_future(self.pipe(conn, creader, swriter, True)),
                      asyncio.ensure_future(self.pipe(conn, sreader, cwriter, False)))
        self.conns.add(conn)
        await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in conn.tasks:
            t.cancel()
        for w in (cwriter, swriter):
            w.close()
        self.conns.discard(conn)

    def drop_all(self):
        for c in list(self.conns):
            for t in c.tasks:
                t.cancel()
            c.cw.close()
            c.sw.close()

    async def control(self, reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            words = line.decode().split()
            if not words:
                continue
            cmd, arg = words[0], (words[1] if len(words) > 1 else "0")
            answer = "ok"
            if cmd == "pass":
                self.mode, self.latency, self.rate = "pass", 0.0, 0
            elif cmd == "latency":
                self.mode, self.latency = "pass", float(arg) / 1000.0
            elif cmd == "drop":
                self.mode = "drop"
                self.drop_all()
            elif cmd == "blackhole":
                self.mode = "blackhole"
            elif cmd == "bandwidth":
                self.rate = int(arg)
            elif cmd in ("hold", "release"):
                for c in self.conns:
                    c.held = cmd == "hold"
            elif cmd == "stats":
                answer = "connections %d bytes_up %d bytes_down %d held %d dropped %d resets %d" % (
                    self.count, self.up, self.down, self.held, self.dropped, self.resets)
            else:
                answer = "error: unknown command %s" % cmd
            writer.write((answer + "\n").encode())
            await writer.drain()
        writer.close()


async def main():
    lport, host, tport, cport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    p = Proxy(host, tport)
    srv = await asyncio.start_server(p.handle, "127.0.0.1", lport)
    ctl = await asyncio.start_server(p.control, "127.0.0.1", cport)
    print("listening on %d control %d" % (srv.sockets[0].getsockname()[1], ctl.sockets[0].getsockname()[1]),
          flush=True)
    await asyncio.gather(srv.serve_forever(), ctl.serve_forever())


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stdout if sys.argv[1:2] in (["-h"], ["--help"]) else sys.stderr)
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
