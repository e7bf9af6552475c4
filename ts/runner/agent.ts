/**
 * `weir run`: wires source -> store -> plan -> reconciler -> datapath.
 *
 * Start-up order matters for not disturbing traffic on restart: load the
 * objects (re-adopting pinned maps, so conntrack survives), adopt ids and
 * slot layouts, wait for the first complete view of the cluster, then do one
 * full sync that also prunes what vanished while no agent ran. Only then are
 * devices and the cgroup attached — an attached program is replaced
 * atomically, so there is no window without one.
 */
import { ClusterStore } from '../model/store';
import { IPv4, cidrContains } from '../model/types';
import { usableEndpoints } from '../plan/plan';
import { Reconciler } from '../reconcile/reconciler';
import { BpfDatapath, DeviceRole } from '../datapath/loader';
import { DeviceWatcher, listLinks } from '../datapath/devices';
import { loadShim } from '../datapath/ffi';
import { FileSource } from '../source/file';
import { KubeSource } from '../source/kube';
import { Source } from '../source/source';
import { HealthServer, startHealthServer } from '../health/health';
import { HealthCheckNodePorts, HealthCheckTarget } from '../health/hcnodeport';
import { Logger, errorText } from '../util/log';
import { RunOptions, UsageError, parseHostPort } from '../cli/options';
import { Runner } from './runner';
import { agentMetrics } from '../metrics/agent-metrics';
import { startMetricsServer } from '../metrics/server';
import { Syncer } from './sync';

export interface Agent {
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/** A queued update older than this makes /healthz answer 503. */
const HEALTH_TIMEOUT_MS = 60_000;
const LOCALHOST = '127.0.0.1' as IPv4;

export async function startAgent(opts: RunOptions, log: Logger): Promise<Agent> {
  if (opts.mode === 'iptables') throw new UsageError('--mode iptables is not implemented yet; use --mode bpf');
  log.info('starting', { node: opts.nodeName, mode: 'bpf', reason: opts.mode === 'auto' ? 'auto: BPF is the only mode in this build' : 'requested', pinRoot: opts.bpffsRoot });

  const nodeIPs = await resolveNodeIPs(opts);
  const nodePortAddrs = nodeIPs.filter((ip) => opts.nodePortAddresses.length === 0 || opts.nodePortAddresses.some((c) => cidrContains(c, ip)));
  // 127.0.0.1 frontends only ever match in the socket hooks (node processes).
  if (opts.localhostNodePorts && opts.cgroupRoot) nodePortAddrs.push(LOCALHOST);
  if (nodeIPs.length === 0) log.warn('no node IP known: NodePorts are not served and nothing can be masqueraded', { hint: '--node-ips or --external-devices' });

  const shim = loadShim();
  shim.setLogLevel(1);
  const dp = BpfDatapath.load(shim, opts.bpffsRoot);
  dp.writeConfig({
    hairpinAddr: opts.hairpinAddr,
    snatAddr: nodeIPs[0] ?? '',
    masqueradeAll: opts.masqueradeAll,
    haveClusterCidrs: opts.clusterCIDRs.length > 0,
  });
  const reconciler = new Reconciler(dp.maps);
  const adopted = reconciler.adopt();
  reconciler.setClusterCidrs(opts.clusterCIDRs);
  log.info('adopted pinned state', { frontends: adopted.frontends, backends: adopted.backends, ffi: shim.backend });

  const store = new ClusterStore(
    (origin, errors) => {
      for (const e of errors) {
        log.error('invalid object; keeping its last good version', { file: origin, object: `${e.kind} ${e.object}`, field: e.field, error: e.message });
      }
    },
    { nodePortRange: opts.nodePortRange },
  );
  const syncer = new Syncer({ store, reconciler, log, ctx: { nodeName: opts.nodeName, nodePortAddrs } });
  const runnerRef: { runner?: Runner } = {};
  const metrics = agentMetrics({ reconciler, runner: () => runnerRef.runner, ct: dp.maps.ct, verdicts: dp.maps.verdicts });
  const hcNodePorts = new HealthCheckNodePorts({ log, proxyHealthy: () => (runnerRef.runner?.pendingSince ?? 0) === 0 || Date.now() - runnerRef.runner!.pendingSince < HEALTH_TIMEOUT_MS });
  let synced = false;
  const sync = (): void => {
    // Nothing is written before every source has delivered its first full view.
    if (!synced) return;
    const r = syncer.sync();
    metrics.syncDuration.observe(r.ms / 1000);
    for (const ms of r.programmingMs) metrics.programming.observe(ms / 1000);
    if (r.upserts || r.deletes || r.services) {
      log.info('synced', { services: r.services, upserts: r.upserts, deletes: r.deletes, ms: Math.round(r.ms * 100) / 100 });
    }
    hcNodePorts.update(healthCheckTargets(store, opts.nodeName));
  };
  const runner = new Runner({ minSyncPeriodMs: opts.minSyncPeriodMs, sync, log });
  runnerRef.runner = runner;

  let source: Source;
  if (opts.source.kind === 'file') {
    source = new FileSource({ dir: opts.source.dir, store, onChange: () => runner.request(), log });
  } else {
    source = new KubeSource({ store, onChange: () => runner.request(), log, nodeName: opts.nodeName, kubeconfig: opts.kubeconfig });
  }
  await source.start();
  // No --node-ips and no external device addresses: the Node object knows.
  const node = store.nodes.get(opts.nodeName);
  if (nodeIPs.length === 0 && node && node.internalIPs.length > 0) {
    nodeIPs.push(...node.internalIPs);
    const addrs = nodeIPs.filter((ip) => opts.nodePortAddresses.length === 0 || opts.nodePortAddresses.some((c) => cidrContains(c, ip)));
    if (opts.localhostNodePorts && opts.cgroupRoot) addrs.push(LOCALHOST);
    syncer.setContext({ nodeName: opts.nodeName, nodePortAddrs: addrs });
    dp.writeConfig({ hairpinAddr: opts.hairpinAddr, snatAddr: nodeIPs[0]!, masqueradeAll: opts.masqueradeAll, haveClusterCidrs: opts.clusterCIDRs.length > 0 });
    log.info('node IPs from the Node object', { nodeIPs: nodeIPs.join(','), zone: node.zone });
  }
  synced = true;
  runner.syncNow();
  log.info('ready', { services: store.services.size, slices: store.slices.size, nodeIPs: nodeIPs.join(',') });

  const devices = new DeviceWatcher<DeviceRole>({
    // External first: a device named in --external-devices is never a pod device.
    roles: [
      ['ext', opts.externalDevices],
      ['pod', opts.podDevices],
    ],
    log,
    onDevice: (link, role) => {
      dp.attach(role, link.ifindex);
      log.info('attached', { device: link.name, ifindex: link.ifindex, role });
    },
  });
  await devices.start();
  if (opts.cgroupRoot) {
    dp.attachCgroup(opts.cgroupRoot);
    log.info('socket hooks attached', { cgroup: opts.cgroupRoot });
  } else {
    log.warn('no --cgroup-root: node processes and hostNetwork pods reach services only through pod-facing devices');
  }

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

  let metricsServer: { port: number; close(): Promise<void> } | null = null;
  if (opts.metricsAddr) {
    const { host, port } = parseHostPort('metrics-addr', opts.metricsAddr);
    metricsServer = await startMetricsServer({ host, port, registry: metrics.registry });
    log.info('metrics server listening', { addr: `${host}:${metricsServer.port}` });
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
    hcNodePorts.close();
    await health?.close();
    await metricsServer?.close();
    // The dataplane stays programmed: filters, links and pinned maps outlive
    // us, so traffic keeps flowing until the next agent adopts them.
    dp.close();
    log.info('stopped; dataplane left programmed');
    resolveDone();
    return done;
  };
  return { done, stop };
}

/** --node-ips, or the IPv4 addresses of the external devices. */
async function resolveNodeIPs(opts: RunOptions): Promise<IPv4[]> {
  if (opts.nodeIPs.length) return [...opts.nodeIPs];
  if (!opts.externalDevices.length) return [];
  try {
    const links = await listLinks();
    return links.filter((l) => opts.externalDevices.includes(l.name)).flatMap((l) => l.addrs as IPv4[]);
  } catch (e) {
    throw new Error(`cannot read addresses of --external-devices: ${errorText(e)}`);
  }
}

/** LoadBalancer services with eTP=Local and a healthCheckNodePort, with their local ready endpoints. */
function healthCheckTargets(store: ClusterStore, nodeName: string): HealthCheckTarget[] {
  const out: HealthCheckTarget[] = [];
  for (const svc of store.services.values()) {
    if (svc.type !== 'LoadBalancer' || svc.externalTrafficPolicy !== 'Local' || !svc.healthCheckNodePort) continue;
    const local = new Set<string>();
    for (const slice of store.slicesOf(svc.key)) {
      for (const ep of usableEndpoints(slice.endpoints)) if (ep.nodeName === nodeName && ep.ready) local.add(ep.addr);
    }
    out.push({ namespace: svc.namespace, name: svc.name, port: svc.healthCheckNodePort, localEndpoints: local.size });
  }
  return out;
}
