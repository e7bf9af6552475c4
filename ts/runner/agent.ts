/**
 * `weir run`: wires source -> store -> plan -> reconciler -> datapath.
 *
 * Start-up order matters for not disturbing traffic on restart: load the
 * object (re-adopting pinned maps, so conntrack survives), adopt ids and slot
 * layouts, wait for the first complete view of the cluster, then do one full
 * sync that also prunes what vanished while no agent ran. Only then are new
 * devices attached — an already attached filter is replaced atomically.
 */
import { ClusterStore } from '../model/store';
import { IPv4 } from '../model/types';
import { Reconciler } from '../reconcile/reconciler';
import { BpfDatapath } from '../datapath/loader';
import { DeviceWatcher, listLinks } from '../datapath/devices';
import { loadShim } from '../datapath/ffi';
import { FileSource } from '../source/file';
import { Source } from '../source/source';
import { HealthServer, startHealthServer } from '../health/health';
import { Logger, errorText } from '../util/log';
import { RunOptions, UsageError, parseHostPort } from '../cli/options';
import { Runner } from './runner';
import { Syncer } from './sync';

export interface Agent {
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/** A queued update older than this makes /healthz answer 503. */
const HEALTH_TIMEOUT_MS = 60_000;

export async function startAgent(opts: RunOptions, log: Logger): Promise<Agent> {
  if (opts.mode === 'iptables') throw new UsageError('--mode iptables is not implemented yet; use --mode bpf');
  log.info('starting', { node: opts.nodeName, mode: 'bpf', reason: opts.mode === 'auto' ? 'auto: BPF is the only mode in this build' : 'requested', pinRoot: opts.bpffsRoot });

  const shim = loadShim();
  shim.setLogLevel(1);
  const dp = BpfDatapath.load(shim, opts.bpffsRoot);
  dp.writeConfig({ hairpinAddr: opts.hairpinAddr });
  const reconciler = new Reconciler(dp.maps);
  const adopted = reconciler.adopt();
  log.info('adopted pinned state', { frontends: adopted.frontends, backends: adopted.backends, ffi: shim.backend });

  const store = new ClusterStore((origin, errors) => {
    for (const e of errors) {
      log.error('invalid object; keeping its last good version', { file: origin, object: `${e.kind} ${e.object}`, field: e.field, error: e.message });
    }
  });

  const syncer = new Syncer({
    store,
    reconciler,
    log,
    ctx: { nodeName: opts.nodeName, nodePortAddrs: await nodeIPs(opts) },
  });
  let synced = false;
  const sync = (): void => {
    // Nothing is written before every source has delivered its first full view.
    if (!synced) return;
    const r = syncer.sync();
    if (r.upserts || r.deletes || r.services) {
      log.info('synced', { services: r.services, upserts: r.upserts, deletes: r.deletes, ms: Math.round(r.ms * 100) / 100 });
    }
  };
  const runner = new Runner({ minSyncPeriodMs: opts.minSyncPeriodMs, sync, log });

  let source: Source;
  if (opts.source.kind === 'file') {
    source = new FileSource({ dir: opts.source.dir, store, onChange: () => runner.request(), log });
  } else {
    throw new UsageError('--source kube is not implemented yet; use --source file:DIR');
  }
  await source.start();
  synced = true;
  sync();
  log.info('ready', { services: store.services.size, slices: store.slices.size });

  const devices = new DeviceWatcher({
    globs: [...opts.podDevices, ...opts.externalDevices],
    log,
    onDevice: (link) => {
      dp.attachIngress(link.ifindex);
      log.info('attached', { device: link.name, ifindex: link.ifindex });
    },
  });
  await devices.start();

  let health: HealthServer | null = null;
  if (opts.healthAddr) {
    const { host, port } = parseHostPort('health-addr', opts.healthAddr);
    health = await startHealthServer({
      host,
      port,
      timeoutMs: HEALTH_TIMEOUT_MS,
      state: { pendingSince: () => runner.pendingSince, lastSuccessAt: () => runner.lastSuccessAt },
    });
    log.info('health server listening', { addr: `${host}:${health.port}` });
  }

  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((r) => (resolveDone = r));
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return done;
    stopping = true;
    source.stop();
    runner.stop();
    devices.stop();
    await health?.close();
    // The dataplane stays programmed: filters and pinned maps outlive us, so
    // traffic keeps flowing until the next agent adopts them.
    dp.close();
    log.info('stopped; dataplane left programmed');
    resolveDone();
    return done;
  };
  return { done, stop };
}

async function nodeIPs(opts: RunOptions): Promise<IPv4[]> {
  if (opts.nodeIPs.length) return opts.nodeIPs;
  if (!opts.externalDevices.length) return [];
  try {
    const links = await listLinks();
    return links.filter((l) => opts.externalDevices.includes(l.name)).flatMap((l) => l.addrs as IPv4[]);
  } catch (e) {
    throw new Error(`cannot read addresses of --external-devices: ${errorText(e)}`);
  }
}
