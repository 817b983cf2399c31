#!/usr/bin/python3
"""A fault-injecting TCP proxy for the tests (this kernel has no netem).

    faultproxy.py LISTEN_PORT TARGET_HOST TARGET_PORT CONTROL_PORT

Prints "listening on PORT control PORT" once ready (LISTEN_PORT/CONTROL_PORT 0
pick free ports). The control port takes one command per line and answers "ok":

    pass                 forward untouched
    latency MS           delay every chunk, each way, by MS milliseconds
    drop                 close every connection, and refuse new ones
    blackhole            accept, but forward nothing and never answer
    bandwidth BYTES      cap each direction at BYTES per second
    stats                answer "connections N bytes_up N bytes_down N"
"""
import asyncio
import sys
import time


class Proxy:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.mode = "pass"
        self.latency = 0.0
        self.rate = 0
        self.conns = set()
        self.count = 0
        self.up = self.down = 0

    async def pipe(self, reader, writer, up):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while self.mode == "blackhole":
                    await asyncio.sleep(0.05)
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
        tasks = [asyncio.ensure_future(self.pipe(creader, swriter, True)),
                 asyncio.ensure_future(self.pipe(sreader, cwriter, False))]
        entry = (cwriter, swriter, tuple(tasks))
        self.conns.add(entry)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (cwriter, swriter):
            w.close()
        self.conns.discard(entry)

    def drop_all(self):
        for cw, sw, tasks in list(self.conns):
            for t in tasks:
                t.cancel()
            cw.close()
            sw.close()

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
            elif cmd == "stats":
                answer = "connections %d bytes_up %d bytes_down %d" % (self.count, self.up, self.down)
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
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
