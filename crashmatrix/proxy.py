#!/usr/bin/env python3
"""A fault-injecting TCP proxy for the MySQL/MariaDB client protocol, or (--protocol resp) for
Redis's RESP, or (--protocol amqp) for AMQP 0-9-1 (crash matrix, TESTING.md).

It sits between seigo and one shard on 127.0.0.1 and forwards bytes both ways. It understands
just enough of the protocol to find command boundaries: every client->server packet with
sequence id 0 is a command (handshake packets never have sequence 0 from the client), and a
COM_QUERY (0x03) carries its SQL text. Faults, each with a seeded probability per command:

  cut   : the connection is closed INSTEAD of forwarding the command (the request is lost; the
          server sees a disconnect: it rolls back an open transaction, detaches a prepared branch).
  drop  : a COM_QUERY whose SQL matches --drop-match is forwarded, the server's whole reply is
          read and swallowed (until the final OK/ERR packet, i.e. the statement batch ran), then
          both sides are closed: the client gets "lost connection" for a statement that DID run
          on the server. That is a lost COMMIT / PREPARE / XA COMMIT reply.
  cut all (control command, or --cut-all-every-ms at random): close every open connection now.

RESP (--protocol resp): a command is one RESP array of bulk strings; --drop-match is matched
against its words joined by spaces ("FCALL seigo2_prepare 0 ..."); a dropped command's whole
reply (one RESP value, arrays included) is read and swallowed, then both sides are closed.

AMQP 0-9-1 (--protocol amqp): the client's protocol header is forwarded, then frames both ways
(type, channel, size, payload, 0xCE). A method frame is named "<dir> <class>.<method>", dir "c"
for client->server and "s" for server->client ("c basic.ack" = a consumer's ack, "s basic.ack"
= a publisher confirm, "c basic.publish"). cut: before forwarding a client method frame, the
connection is closed instead. drop: a method frame matching --drop-match is NOT forwarded and
both sides are closed at once: a lost consumer ack (the broker redelivers) or a lost confirm of
a message the broker has stored (the publisher must publish it again).

Control: a line protocol on --control PORT (127.0.0.1). Each line gets one reply line:
  stats                       -> "conns=.. open=.. cmds=.. matched=.. dropped=.. cut=.. cut_all=.."
  set cut_prob P | set drop_prob P | set drop_match REGEX | set cut_all_every_ms MS
  pass                        -> all probabilities 0 (forward everything), counters kept
  reset                       -> pass + counters zeroed
  cut all                     -> close every open connection ("cut N")
  quit                        -> exits
Example from bash: exec 3<>/dev/tcp/127.0.0.1/PORT; echo stats >&3; read -r line <&3

Python 3 standard library only (asyncio).
"""

import argparse
import asyncio
import random
import re
import struct
import sys

COM_QUERY = 0x03
SERVER_MORE_RESULTS_EXIST = 0x0008


def lenenc(buf, pos):
    """Reads a length-encoded integer; returns (value, new_pos)."""
    b = buf[pos]
    if b < 0xFB:
        return b, pos + 1
    if b == 0xFC:
        return struct.unpack_from("<H", buf, pos + 1)[0], pos + 3
    if b == 0xFD:
        return int.from_bytes(buf[pos + 1:pos + 4], "little"), pos + 4
    if b == 0xFE:
        return struct.unpack_from("<Q", buf, pos + 1)[0], pos + 9
    raise ValueError("bad lenenc")


def final_reply_packet(payload):
    """True if this server packet ends the reply to a COM_QUERY that returns no rows:
    an ERR packet, or an OK packet without SERVER_MORE_RESULTS_EXIST."""
    if not payload:
        return False
    if payload[0] == 0xFF:
        return True
    if payload[0] == 0x00 and len(payload) >= 7:
        try:
            _, p = lenenc(payload, 1)
            _, p = lenenc(payload, p)
            status = struct.unpack_from("<H", payload, p)[0]
        except (ValueError, IndexError, struct.error):
            return False
        return not status & SERVER_MORE_RESULTS_EXIST
    return False


async def read_packet(reader):
    """Returns (header, payload) of one protocol packet, or None at EOF."""
    try:
        header = await reader.readexactly(4)
        n = header[0] | header[1] << 8 | header[2] << 16
        payload = await reader.readexactly(n) if n else b""
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return None
    return header, payload


class Proxy:
    def __init__(self, args):
        self.target_host, self.target_port = args.target.rsplit(":", 1)
        self.target_port = int(self.target_port)
        self.rng = random.Random(args.seed)
        self.cut_prob = args.cut_prob
        self.drop_prob = args.drop_prob
        self.drop_match = re.compile(args.drop_match, re.I | re.S)
        self.cut_all_every_ms = args.cut_all_every_ms
        self.conns = set()
        self.verbose = args.verbose
        self.protocol = args.protocol
        self.zero()

    def zero(self):
        self.n_conns = self.n_cmds = self.n_matched = self.n_dropped = self.n_cut = 0
        self.n_cut_all = 0

    def stats(self):
        return (f"conns={self.n_conns} open={len(self.conns)} cmds={self.n_cmds} "
                f"matched={self.n_matched} dropped={self.n_dropped} cut={self.n_cut} "
                f"cut_all={self.n_cut_all}")

    def log(self, msg):
        if self.verbose:
            print(f"proxy: {msg}", file=sys.stderr, flush=True)

    async def handle(self, creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            cwriter.close()  # shard down: the client sees a refused/lost connection
            return
        self.n_conns += 1
        kind = {"resp": RespConn, "amqp": AmqpConn}.get(self.protocol, Conn)
        conn = kind(self, creader, cwriter, sreader, swriter)
        self.conns.add(conn)
        try:
            await conn.run()
        finally:
            self.conns.discard(conn)

    def cut_all(self):
        n = len(self.conns)
        for c in list(self.conns):
            c.close()
        self.n_cut_all += 1
        self.n_cut += n
        return n

    async def random_cuts(self):
        while True:
            ms = self.cut_all_every_ms
            if ms <= 0:
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(self.rng.expovariate(1.0 / ms) / 1000.0)
            if self.cut_all_every_ms > 0:
                self.log(f"random cut all: {self.cut_all()} connection(s)")

    async def control(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                words = line.decode(errors="replace").strip().split(None, 2)
                reply = "ok"
                try:
                    if not words:
                        reply = "error: empty command"
                    elif words[0] == "stats":
                        reply = self.stats()
                    elif words[0] == "pass":
                        self.cut_prob = self.drop_prob = 0.0
                        self.cut_all_every_ms = 0
                    elif words[0] == "reset":
                        self.cut_prob = self.drop_prob = 0.0
                        self.cut_all_every_ms = 0
                        self.zero()
                    elif words[:2] == ["cut", "all"]:
                        reply = f"cut {self.cut_all()}"
                    elif words[0] == "set" and len(words) == 3:
                        key, val = words[1], words[2]
                        if key == "cut_prob":
                            self.cut_prob = float(val)
                        elif key == "drop_prob":
                            self.drop_prob = float(val)
                        elif key == "drop_match":
                            self.drop_match = re.compile(val, re.I | re.S)
                        elif key == "cut_all_every_ms":
                            self.cut_all_every_ms = float(val)
                        elif key == "seed":
                            self.rng.seed(int(val))
                        else:
                            reply = f"error: unknown setting {key}"
                    elif words[0] == "quit":
                        writer.write(b"ok\n")
                        await writer.drain()
                        asyncio.get_running_loop().stop()
                        return
                    else:
                        reply = f"error: unknown command {' '.join(words)}"
                except (ValueError, re.error) as e:
                    reply = f"error: {e}"
                writer.write((reply + "\n").encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def read_resp(reader):
    """One RESP value: (its raw bytes, its words if it is an array of bulk strings / the bulk
    string itself), or None at EOF."""
    try:
        line = await reader.readuntil(b"\r\n")
        kind = line[:1]
        if kind in (b"+", b"-", b":", b"_", b",", b"#"):
            return line, None
        if kind == b"$":
            n = int(line[1:-2])
            if n < 0:
                return line, None
            data = await reader.readexactly(n + 2)
            return line + data, data[:-2]
        if kind == b"*":
            n = int(line[1:-2])
            raw, words = line, []
            for _ in range(max(n, 0)):
                got = await read_resp(reader)
                if got is None:
                    return None
                raw += got[0]
                words.append(got[1])
            return raw, words
        raise ValueError(f"not RESP: {line[:20]!r}")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError,
            ValueError):
        return None


class RespConn:
    """A RESP connection: the client (hiredis, one command at a time) never pipelines."""

    def __init__(self, proxy, creader, cwriter, sreader, swriter):
        self.p = proxy
        self.creader, self.cwriter = creader, cwriter
        self.sreader, self.swriter = sreader, swriter
        self.closed = False

    close = None  # set below (same as Conn.close)

    async def run(self):
        try:
            await self.forward()
        finally:
            self.close()

    async def forward(self):
        p = self.p
        while not self.closed:
            req = await read_resp(self.creader)
            if req is None:
                return
            raw, words = req
            p.n_cmds += 1
            if p.cut_prob > 0 and p.rng.random() < p.cut_prob:
                p.n_cut += 1
                p.log("cut before a command")
                return
            text = " ".join(w.decode("utf-8", "replace") for w in (words or [])
                            if isinstance(w, bytes))
            swallow = False
            if p.drop_prob > 0 and p.drop_match.search(text):
                p.n_matched += 1
                swallow = p.rng.random() < p.drop_prob
            try:
                self.swriter.write(raw)
                await self.swriter.drain()
            except (ConnectionError, OSError):
                return
            try:
                reply = await asyncio.wait_for(read_resp(self.sreader), 30.0)
            except asyncio.TimeoutError:
                reply = None
            if reply is None:
                return
            if swallow:
                p.n_dropped += 1
                p.log(f"dropped the reply to: {text[:80]}")
                return  # the command ran; its reply is lost
            try:
                self.cwriter.write(reply[0])
                await self.cwriter.drain()
            except (ConnectionError, OSError):
                return


class Conn:
    def __init__(self, proxy, creader, cwriter, sreader, swriter):
        self.p = proxy
        self.creader, self.cwriter = creader, cwriter
        self.sreader, self.swriter = sreader, swriter
        self.swallow = False  # set (before forwarding) when the reply to this command is to be lost
        self.closed = False

    def close(self):
        if self.closed:
            return
        self.closed = True
        for w in (self.cwriter, self.swriter):
            try:
                w.transport.abort()  # no lingering half-open side: both ends see it at once
            except Exception:  # noqa: BLE001 - already closed
                pass

    async def run(self):
        up = asyncio.ensure_future(self.client_to_server())
        down = asyncio.ensure_future(self.server_to_client())
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        self.close()
        for t in (up, down):
            t.cancel()
        await asyncio.gather(up, down, return_exceptions=True)

    async def client_to_server(self):
        p = self.p
        while not self.closed:
            pkt = await read_packet(self.creader)
            if pkt is None:
                return
            header, payload = pkt
            if header[3] == 0 and payload:  # a command
                p.n_cmds += 1
                if p.cut_prob > 0 and p.rng.random() < p.cut_prob:
                    p.n_cut += 1
                    p.log(f"cut before command 0x{payload[0]:02x}")
                    return
                if payload[0] == COM_QUERY and p.drop_prob > 0:
                    sql = payload[1:].decode("utf-8", errors="replace")
                    if p.drop_match.search(sql):
                        p.n_matched += 1
                        if p.rng.random() < p.drop_prob:
                            self.swallow = True
                            p.log(f"dropping the reply to: {sql[:120]}")
            try:
                self.swriter.write(header + payload)
                await self.swriter.drain()
            except (ConnectionError, OSError):
                return
            if self.swallow:
                # Stop reading the client: the reply is swallowed and the connection closed
                # by server_to_client.
                await asyncio.sleep(3600)

    async def server_to_client(self):
        # The client never pipelines: when it sends a command, it has read every earlier reply.
        # So once client_to_server has set self.swallow (before forwarding the command), every
        # packet that arrives is part of the reply to that command.
        p = self.p
        loop = asyncio.get_running_loop()
        end = None
        while not self.closed:
            if self.swallow and end is None:
                end = loop.time() + 10.0
            if end is not None:
                # Swallow the whole reply, so the statement batch has run on the server; give
                # up waiting after 10 s (e.g. a lock wait) and cut anyway.
                try:
                    pkt = await asyncio.wait_for(read_packet(self.sreader),
                                                 max(0.01, end - loop.time()))
                except asyncio.TimeoutError:
                    pkt = None
                if pkt is None or final_reply_packet(pkt[1]):
                    p.n_dropped += 1
                    return
                continue
            pkt = await read_packet(self.sreader)
            if pkt is None:
                return
            if self.swallow:
                end = loop.time() + 10.0
                if final_reply_packet(pkt[1]):
                    p.n_dropped += 1
                    return
                continue
            try:
                self.cwriter.write(pkt[0] + pkt[1])
                await self.cwriter.drain()
            except (ConnectionError, OSError):
                return


RespConn.close = Conn.close

AMQP_METHODS = {
    (10, 10): "connection.start", (10, 11): "connection.start-ok", (10, 30): "connection.tune",
    (10, 31): "connection.tune-ok", (10, 40): "connection.open", (10, 41): "connection.open-ok",
    (10, 50): "connection.close", (10, 51): "connection.close-ok",
    (20, 10): "channel.open", (20, 11): "channel.open-ok", (20, 40): "channel.close",
    (20, 41): "channel.close-ok", (40, 10): "exchange.declare", (40, 11): "exchange.declare-ok",
    (50, 10): "queue.declare", (50, 11): "queue.declare-ok", (50, 20): "queue.bind",
    (50, 21): "queue.bind-ok", (50, 30): "queue.purge", (50, 31): "queue.purge-ok",
    (60, 10): "basic.qos", (60, 11): "basic.qos-ok", (60, 20): "basic.consume",
    (60, 21): "basic.consume-ok", (60, 40): "basic.publish", (60, 50): "basic.return",
    (60, 60): "basic.deliver", (60, 80): "basic.ack", (60, 90): "basic.reject",
    (60, 120): "basic.nack", (85, 10): "confirm.select", (85, 11): "confirm.select-ok",
}


async def read_amqp_frame(reader):
    """One AMQP frame: (its raw bytes, its method name or None), or None at EOF."""
    try:
        head = await reader.readexactly(7)
        size = int.from_bytes(head[3:7], "big")
        rest = await reader.readexactly(size + 1)
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return None
    if rest[-1] != 0xCE:
        return None  # not AMQP framing: treat as a broken connection
    name = None
    if head[0] == 1 and size >= 4:
        key = (int.from_bytes(rest[0:2], "big"), int.from_bytes(rest[2:4], "big"))
        name = AMQP_METHODS.get(key, f"{key[0]}.{key[1]}")
    return head + rest, name


class AmqpConn(Conn):
    """AMQP 0-9-1: frames both ways, faults on method frames (see the docstring)."""

    async def client_to_server(self):
        try:
            header = await self.creader.readexactly(8)  # "AMQP\0\0\x09\x01"
            self.swriter.write(header)
            await self.swriter.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        await self.pump(self.creader, self.swriter, "c")

    async def server_to_client(self):
        await self.pump(self.sreader, self.cwriter, "s")

    async def pump(self, reader, writer, side):
        p = self.p
        while not self.closed:
            got = await read_amqp_frame(reader)
            if got is None:
                return
            raw, name = got
            if name is not None:
                text = f"{side} {name}"
                if side == "c":
                    p.n_cmds += 1
                    if p.cut_prob > 0 and p.rng.random() < p.cut_prob:
                        p.n_cut += 1
                        p.log(f"cut before {text}")
                        return
                if p.drop_prob > 0 and p.drop_match.search(text):
                    p.n_matched += 1
                    if p.rng.random() < p.drop_prob:
                        p.n_dropped += 1
                        p.log(f"dropped {text} and closed")
                        return
            try:
                writer.write(raw)
                await writer.drain()
            except (ConnectionError, OSError):
                return


async def watch_parent(pid):
    """Exits when the process that started us is gone (a killed driver must not leave the
    proxy holding its ports)."""
    import os
    while os.getppid() == pid:
        await asyncio.sleep(0.5)
    asyncio.get_running_loop().stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", type=int, required=True, help="port to listen on (127.0.0.1)")
    ap.add_argument("--target", required=True, help="HOST:PORT of the shard")
    ap.add_argument("--control", type=int, default=0, help="control port (127.0.0.1), 0 = none")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--protocol", choices=["mysql", "resp", "amqp"], default="mysql")
    ap.add_argument("--cut-prob", type=float, default=0.0)
    ap.add_argument("--drop-prob", type=float, default=0.0)
    ap.add_argument("--drop-match", default=".",
                    help="regex on the SQL of a COM_QUERY (resp: on the command's words; "
                         "amqp: on '<c|s> <class>.<method>')")
    ap.add_argument("--cut-all-every-ms", type=float, default=0.0,
                    help="on average, cut every connection this often (exponential), 0 = never")
    ap.add_argument("--parent-pid", type=int, default=0, help="exit when this parent is gone")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    proxy = Proxy(args)

    async def start():
        await asyncio.start_server(proxy.handle, "127.0.0.1", args.listen, reuse_address=True)
        if args.control:
            await asyncio.start_server(proxy.control, "127.0.0.1", args.control,
                                       reuse_address=True)
        asyncio.ensure_future(proxy.random_cuts())
        if args.parent_pid:
            asyncio.ensure_future(watch_parent(args.parent_pid))
        print(f"proxy: listening on 127.0.0.1:{args.listen} -> {args.target}"
              f"{f', control on {args.control}' if args.control else ''}", flush=True)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(start())
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    print(f"proxy: exiting, {proxy.stats()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
