/**
 * Writers of the map entries a sync makes by the hundred thousand (slots,
 * members, masters, backends, rev-NAT): straight into packed buffers, at
 * the codecs' offsets (checked against the BTF).
 */
import * as C from '../datapath/codecs';
import { BackendTable } from './backends';
import type { BackendId, RevNatId } from './ids';
import { Packed, copyWords } from './packed';

// Direct writers for the entries a full sync makes by the hundred thousand:
// field offsets come from the codecs (checked against the BTF), and every
// byte of the struct is written, so reused buffers need no clearing.
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

/**
 * Word offsets for the hot entries: a sync at ten thousand services writes
 * a hundred thousand slots and as many members, and a Buffer method call
 * per field was a tenth of its planning. Host-order fields of 32 bits (or a
 * u16 whose other half is padding) are written as words of the packed
 * buffers' Int32Array views, which are host order, as the kernel reads them
 * (the u16 is the word's low half: little-endian, as every host-order field
 * written here with a Buffer's ...LE methods assumes).
 * The layout is the codecs' (checked against the BTF); these checks make a
 * layout change fail at load instead of writing wrong entries.
 */
const SLOT_WORD = wordOf(C.svcKey.at.slot, 'weir_svc_key.slot');
const SV_BACKEND_WORD = wordOf(C.svcVal.at.backend_id, 'weir_svc_val.backend_id');
export const MK_REV = wordOf(C.memberKey.at.rev_nat_id, 'weir_member_key.rev_nat_id');
export const MK_BACKEND = wordOf(C.memberKey.at.backend_id, 'weir_member_key.backend_id');
if (C.svcKey.at.pad !== C.svcKey.at.slot + 2) throw new Error('weir_svc_key: slot is expected to share its word with pad');

function wordOf(byteOffset: number, field: string): number {
  if (byteOffset % 4 !== 0) throw new Error(`${field} is not word-aligned (offset ${byteOffset})`);
  return byteOffset / 4;
}

/**
 * The slot entries of one frontend: slot i + 1 names backend ids[i]. The
 * first is written field by field; the others copy its words and change
 * the slot number and the backend id.
 */
export function pushSlots(out: Packed, addr: number, port: number, proto: number, scope: number, ids: readonly BackendId[]): void {
  if (ids.length === 0) return;
  out.reserve(ids.length);
  const first = out.push();
  writeSvcKey(out.keys, first * out.keySize, addr, port, proto, scope, 1);
  writeSvcVal(out.values, first * out.valueSize, ids[0]!, 0, 0, 0, 0);
  const kw = out.keySize >> 2;
  const vw = out.valueSize >> 2;
  const keys = out.keyWords;
  const values = out.valueWords;
  for (let i = 1; i < ids.length; i++) {
    const at = out.push();
    copyWords(keys, first * kw, kw, keys, at * kw);
    keys[at * kw + SLOT_WORD] = i + 1; // slot (u16) and pad (0)
    copyWords(values, first * vw, vw, values, at * vw);
    values[at * vw + SV_BACKEND_WORD] = ids[i]!;
  }
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
