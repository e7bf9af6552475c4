/**
 * Writers of the map entries a sync makes by the hundred thousand (slots,
 * members, masters, backends, rev-NAT): straight into packed buffers, at
 * the codecs' offsets (checked against the BTF), writing every byte of the
 * struct so reused buffers need no clearing.
 */
import * as C from '../datapath/codecs';
import { BackendTable } from './backends';
import type { BackendId, RevNatId } from './ids';
import { Packed } from './packed';

export const SK = C.svcKey.at;
export const SV = C.svcVal.at;

export function writeSvcKey(buf: Buffer, off: number, addr: number, port: number, proto: number, scope: number, slot: number): void {
  buf.writeUInt32BE(addr, off + SK.addr);
  buf.writeUInt16BE(port, off + SK.port);
  buf[off + SK.proto] = proto;
  buf[off + SK.scope] = scope;
  buf.writeUInt16LE(slot, off + SK.slot);
  buf.writeUInt16LE(0, off + SK.pad);
}

export function writeSvcVal(buf: Buffer, off: number, backendId: BackendId | 0, count: number, flags: number, revNatId: RevNatId | 0, affinityTimeout: number): void {
  buf.writeUInt32LE(backendId, off + SV.backend_id);
  buf.writeUInt16LE(count, off + SV.count);
  buf.writeUInt16LE(flags, off + SV.flags);
  buf.writeUInt32LE(revNatId, off + SV.rev_nat_id);
  buf.writeUInt32LE(affinityTimeout, off + SV.affinity_timeout);
}

/** The slot entries of one frontend: slot i + 1 names backend ids[i]. */
export function pushSlots(out: Packed, addr: number, port: number, proto: number, scope: number, ids: readonly BackendId[]): void {
  out.reserve(ids.length);
  ids.forEach((id, i) => {
    const at = out.push();
    writeSvcKey(out.keys, at * out.keySize, addr, port, proto, scope, i + 1);
    writeSvcVal(out.values, at * out.valueSize, id, 0, 0, 0, 0);
  });
}

/** One membership entry: the backend is a member of the frontend with this rev_nat id, active if it may be chosen. */
export function pushMember(out: Packed, revId: RevNatId, backendId: BackendId, active: boolean): void {
  const at = out.push();
  out.keys.writeUInt32LE(revId, at * out.keySize + C.memberKey.at.rev_nat_id);
  out.keys.writeUInt32LE(backendId, at * out.keySize + C.memberKey.at.backend_id);
  out.values.writeUInt32LE(active ? C.MEMBER_F.ACTIVE : 0, at * out.valueSize);
}

export function writeBackend(buf: Buffer, off: number, addr: number, port: number, proto: number, flags: number): void {
  buf.writeUInt32BE(addr, off + C.backend.at.addr);
  buf.writeUInt16BE(port, off + C.backend.at.port);
  buf[off + C.backend.at.proto] = proto;
  buf[off + C.backend.at.flags] = flags;
}

export function writeRevNat(buf: Buffer, off: number, addr: number, port: number): void {
  buf.writeUInt32BE(addr, off + C.revnat.at.addr);
  buf.writeUInt16BE(port, off + C.revnat.at.port);
  buf.writeUInt16LE(0, off + C.revnat.at.pad);
}

export function pushBackend(p: Packed, be: BackendTable, r: number): void {
  const i = p.push();
  p.keys.writeUInt32LE(be.id[r]!, i * p.keySize);
  p.values.writeInt32LE(be.v0[r]!, i * p.valueSize);
  p.values.writeInt32LE(be.v1[r]!, i * p.valueSize + 4);
}

/*
 * IPv6 entries: the address as 16 network-order bytes (`addr` here), the
 * rest as in the IPv4 structs.
 */
const SK6 = C.svc6Key.at;

export function writeSvc6Key(buf: Buffer, off: number, addr: Buffer, port: number, proto: number, scope: number, slot: number): void {
  addr.copy(buf, off + SK6.addr);
  buf.writeUInt16BE(port, off + SK6.port);
  buf[off + SK6.proto] = proto;
  buf[off + SK6.scope] = scope;
  buf.writeUInt16LE(slot, off + SK6.slot);
  buf.writeUInt16LE(0, off + SK6.pad);
}

/** The slot entries of one IPv6 frontend: slot i + 1 names backend ids[i]. */
export function pushSlots6(out: Packed, addr: Buffer, port: number, proto: number, scope: number, ids: readonly BackendId[]): void {
  out.reserve(ids.length);
  ids.forEach((id, i) => {
    const at = out.push();
    writeSvc6Key(out.keys, at * out.keySize, addr, port, proto, scope, i + 1);
    writeSvcVal(out.values, at * out.valueSize, id, 0, 0, 0, 0);
  });
}

export function writeRevNat6(buf: Buffer, off: number, addr: Buffer, port: number): void {
  addr.copy(buf, off + C.revnat6.at.addr);
  buf.writeUInt16BE(port, off + C.revnat6.at.port);
  buf.writeUInt16LE(0, off + C.revnat6.at.pad);
}

/** A weir_backend6 value as latin1 (what BackendTable6 keeps). */
export function backend6Value(addr: Buffer, port: number, proto: number, flags: number): string {
  const b = Buffer.alloc(C.backend6.size);
  addr.copy(b, C.backend6.at.addr);
  b.writeUInt16BE(port, C.backend6.at.port);
  b[C.backend6.at.proto] = proto;
  b[C.backend6.at.flags] = flags;
  return b.toString('latin1');
}
