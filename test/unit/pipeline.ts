/**
 * The control plane from manifests to map bytes, with the in-memory twin in
 * place of the kernel: what the golden tests and reconcile tests drive.
 */
import * as path from 'node:path';
import * as C from '../../ts/datapath/codecs';
import { MemoryMap, keyString } from '../../ts/datapath/maps';
import { formatServices, readServices } from '../../ts/datapath/dump';
import { ClusterStore } from '../../ts/model/store';
import { IP } from '../../ts/model/types';
import { ServicePlan, planService } from '../../ts/plan/plan';
import { PORT_WORDS } from '../../ts/reconcile/ports';
import { Reconciler } from '../../ts/reconcile/reconciler';
import { FileSource } from '../../ts/source/file';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';

/** test/ in the source tree (tests run from dist/test/...). */
export const TEST_SRC = path.resolve(__dirname, '../../../test');

/** The maps the reconciler writes, with their IPv6 twins (docs/ipv6.md). */
export function memoryMaps(): Record<'svc' | 'be' | 'revnat' | 'member' | 'cidr' | 'svc6' | 'be6' | 'revnat6' | 'cidr6', MemoryMap> {
  return {
    svc: new MemoryMap('weir1_svc', C.svcKey.size, C.svcVal.size),
    be: new MemoryMap('weir1_be', 4, C.backend.size),
    revnat: new MemoryMap('weir1_revnat', 4, C.revnat.size),
    member: new MemoryMap('weir1_member', C.memberKey.size, 4),
    cidr: new MemoryMap('weir1_cidr', C.cidrKey.size, 4),
    svc6: new MemoryMap('weir1_svc6', C.svc6Key.size, C.svcVal.size),
    be6: new MemoryMap('weir1_be6', 4, C.backend6.size),
    revnat6: new MemoryMap('weir1_revnat6', 4, C.revnat6.size),
    cidr6: new MemoryMap('weir1_cidr6', C.cidr6Key.size, 4),
  };
}

/** weir1_ports as the kernel creates it: every word of the array exists, zero. */
export function memoryPortsMap(): MemoryMap {
  const m = new MemoryMap('weir1_ports', 4, 8);
  for (let w = 0; w < 2 * PORT_WORDS; w++) m.upsert([[keyString(C.u32Key.encode({ value: w })), Buffer.alloc(8)]]);
  return m;
}

/** The plans of a golden case's manifests, on node n1 with the golden cases' node-port addresses (the rule renderers' tests). */
export async function casePlans(caseDir: string): Promise<ServicePlan[]> {
  const store = new ClusterStore(() => undefined);
  const src = new FileSource({ dir: caseDir, store, onChange: () => undefined, log: createLogger('error', () => undefined) });
  await src.start();
  src.stop();
  const ctx = { nodeName: 'n1', nodePortAddrs: ['192.168.77.10' as IP, 'fd00:77::10' as IP], zone: store.nodes.get('n1')?.zone ?? '' };
  return [...store.services.values()].map((s) => planService(s, store.slicesOf(s.key), ctx));
}

export interface PipelineResult {
  text: string;
  logs: Array<Record<string, unknown>>;
  maps: ReturnType<typeof memoryMaps>;
  store: ClusterStore;
  reconciler: Reconciler;
  /** Re-plan dirty services and commit. */
  sync(): void;
}

export async function runPipeline(dir: string, opts: { nodeName?: string; nodePortAddrs?: IP[]; nodeIPs?: IP[]; maps?: ReturnType<typeof memoryMaps> } = {}): Promise<PipelineResult> {
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger('debug', (line) => logs.push(JSON.parse(line) as Record<string, unknown>));
  const store = new ClusterStore((origin, errors) => {
    for (const e of errors) log.error('invalid object', { file: origin, object: `${e.kind} ${e.object}`, field: e.field, error: e.message });
  });
  const maps = opts.maps ?? memoryMaps();
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const source = new FileSource({ dir, store, onChange: () => undefined, log });
  await source.start();
  source.stop();
  // The node's zone comes from its Node object, as the agent takes it.
  const nodeName = opts.nodeName ?? 'n1';
  const syncer = new Syncer({ store, reconciler, log, ctx: { nodeName, nodePortAddrs: opts.nodePortAddrs ?? [], nodeIPs: opts.nodeIPs ?? [], zone: store.nodes.get(nodeName)?.zone ?? '' } });
  const sync = (): void => void syncer.sync();
  sync();
  return {
    get text() {
      return formatServices(readServices(maps));
    },
    logs,
    maps,
    store,
    reconciler,
    sync,
  };
}
