/**
 * Connected UDP sockets left on a backend that is gone (bpf/lib/sockterm.h
 * has the why). The socket hooks record every socket they point at a
 * backend in skrevnat: {cookie, backend} -> frontend. After a sync the
 * frontends in the kernel say which backends each still has; a record
 * whose backend is no longer one of its UDP frontend's, or whose frontend
 * is gone altogether, names a socket to destroy. Records of TCP sockets
 * (whose frontend is a TCP one) are left alone: kube-proxy keeps
 * established TCP connections to a removed endpoint too.
 */
import * as C from './codecs';
import { MapIO, keyBuffer, keyString } from './maps';

export interface StaleSocket {
  readonly cookie: bigint;
  readonly family: 4 | 6;
  /** The backend the socket was pointed at. */
  readonly addr: string;
  readonly port: number;
}

export interface SocketMaps {
  readonly skrevnat: Pick<MapIO, 'dump'>;
  readonly skrevnat6: Pick<MapIO, 'dump'>;
  readonly svc: Pick<MapIO, 'lookup'>;
  readonly svc6: Pick<MapIO, 'lookup'>;
  readonly be: Pick<MapIO, 'lookup'>;
  readonly be6: Pick<MapIO, 'lookup'>;
}

type Frontend = 'udp' | 'tcp' | 'none';

/** Per family: how to read a frontend's backends out of the service and backend maps. */
function reader(maps: SocketMaps, family: 4 | 6): (addr: string, port: number) => { kind: Frontend; backends: Set<string> } {
  const svc = family === 4 ? maps.svc : maps.svc6;
  const be = family === 4 ? maps.be : maps.be6;
  const key = (addr: string, port: number, proto: number, slot: number): string =>
    keyString(family === 4 ? C.svcKey.encode({ addr, port, proto, scope: C.SCOPE_ALL, slot, pad: 0 }) : C.svc6Key.encode({ addr, port, proto, scope: C.SCOPE_ALL, slot, pad: 0 }));
  const cache = new Map<string, { kind: Frontend; backends: Set<string> }>();
  return (addr, port) => {
    const id = `${addr}|${port}`;
    let hit = cache.get(id);
    if (hit) return hit;
    const master = svc.lookup(key(addr, port, C.IPPROTO.UDP, 0));
    hit = { kind: master ? 'udp' : svc.lookup(key(addr, port, C.IPPROTO.TCP, 0)) ? 'tcp' : 'none', backends: new Set() };
    const count = master ? C.svcVal.decode(master).count : 0;
    for (let slot = 1; slot <= count; slot++) {
      const v = svc.lookup(key(addr, port, C.IPPROTO.UDP, slot));
      if (!v) continue;
      const b = be.lookup(keyString(C.u32Key.encode({ value: C.svcVal.decode(v).backend_id })));
      if (!b) continue;
      const d = family === 4 ? C.backend.decode(b) : C.backend6.decode(b);
      hit.backends.add(`${d.addr}|${d.port}`);
    }
    cache.set(id, hit);
    return hit;
  };
}

/** The sockets the socket hooks pointed at a backend their UDP frontend no longer has. */
export function staleSockets(maps: SocketMaps): StaleSocket[] {
  const out: StaleSocket[] = [];
  const scan = (family: 4 | 6, entries: Array<[string, Buffer]>): void => {
    const frontend = reader(maps, family);
    for (const [k, v] of entries) {
      // The frontend first: most records are TCP sockets', whose keys need no decoding.
      const val = family === 4 ? C.skVal.decode(v) : C.sk6Val.decode(v);
      const f = frontend(val.addr, val.port);
      if (f.kind === 'tcp') continue;
      const key = family === 4 ? C.skKey.decode(keyBuffer(k)) : C.sk6Key.decode(keyBuffer(k));
      if (f.backends.has(`${key.addr}|${key.port}`)) continue;
      out.push({ cookie: key.cookie, family, addr: key.addr, port: key.port });
    }
  };
  scan(4, maps.skrevnat.dump());
  scan(6, maps.skrevnat6.dump());
  return out;
}

/** weir1_sockterm's value for a stale socket: IPv4 in the first word of the address. */
export function sockTermValue(s: StaleSocket): Buffer {
  if (s.family === 6) return C.sockterm.encode({ addr: s.addr, port: s.port, family: 6 });
  const buf = C.sockterm.encode({ addr: '::', port: s.port, family: 4 });
  Buffer.from(s.addr.split('.').map(Number)).copy(buf, 0);
  return buf;
}
