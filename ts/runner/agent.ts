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
import * as fs from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { ClusterStore } from '../model/store';
import { Cidr, IP, IPv4, cidrContains, cidrFamily, ipFamily, parseIP } from '../model/types';
import { PlanContext, usableEndpoints } from '../plan/plan';
import { sliceEndpoints, sliceFamily } from '../model/endpoints';
import { MapFill, MapFullError, Reconciler } from '../reconcile/reconciler';
import { BpfDatapath, DEFAULT_SIZES, DeviceRole, MAP_NAMES } from '../datapath/loader';
import { DeviceWatcher, listLinks, upDeviceAddrs } from '../datapath/devices';
import { loadShim } from '../datapath/ffi';
import { FileSource } from '../source/file';
import { requireKubeConfig } from '../source/kubeconfig';
import { Source } from '../source/source';
import { HealthServer, startHealthServer } from '../health/health';
import { HealthCheckNodePorts, HealthCheckTarget } from '../health/hcnodeport';
import { Logger, errorText } from '../util/log';
import { RUN_FLAGS, RunOptions, conntrackEntries, parseHostPort } from '../cli/options';
import { Runner } from './runner';
import { Dataplane } from '../reconcile/dataplane';
// The iptables fallback (../fallback/iptables) is imported where it is used:
// a BPF-mode agent needs it only after "ready", to remove leftover rules.
import { cleanupBpf, ensureBpffs } from '../datapath/loader';
import { enableLoopbackPath } from '../datapath/loopback';
import { PinRootLock, lockPinRoot } from '../datapath/pinlock';
import { agentMetrics } from '../metrics/agent-metrics';
import { startMetricsServer } from '../metrics/server';
import { SyncResult, Syncer } from './sync';
import { DriftCheck, IptablesRulesCheck, NftDriftCheck } from './drift';
import { attachedSummary, rootNetns } from './attached';
import { LocalDetector, describeDetector, detectorCidrs, detectorDeviceGlobs, iptablesLocalMatches, isLocalDevice, localDetector } from './local-detector';
import type { IptablesDataplane } from '../fallback/iptables';
import type { NftablesDataplane } from '../fallback/nftables';
import { CONNTRACK_DEFAULTS } from '../cli/options';

export interface Agent {
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/** A queued update older than this makes /healthz answer 503. */
const HEALTH_TIMEOUT_MS = 60_000;
const LOCALHOST = '127.0.0.1' as IPv4;

/** Milliseconds since the process started: start-up phases in the log ("atMs"). */
const sinceStart = (): number => Math.round(process.uptime() * 1000);

export async function startAgent(opts: RunOptions, log: Logger): Promise<Agent> {
  // A start that fails stops what it started, in reverse order, and the
  // caller exits non-zero: no half-started agent goes on writing maps.
  const undo: Array<() => void | Promise<void>> = [];
  try {
    return await start(opts, log, undo);
  } catch (e) {
    for (const fn of undo.reverse()) {
      try {
        await fn();
      } catch (err) {
        log.warn('while stopping a failed start', { error: errorText(err) });
      }
    }
    throw e;
  }
}

async function start(opts: RunOptions, log: Logger, undo: Array<() => void | Promise<void>>): Promise<Agent> {
  // No cluster to read is known at once: said before anything is locked, loaded or attached.
  if (opts.source.kind === 'kube') requireKubeConfig(opts.kubeconfig);
  // One writer per pin root: a second agent (a rollout's surge, a restart
  // whose predecessor is still exiting) waits here until the first exits.
  const rootExisted = fs.existsSync(opts.bpffsRoot);
  const lock = await lockIfPossible(opts, log);
  if (lock) undo.push(() => lock.release());
  // Pins this start creates are removed if it fails before its first sync.
  const pinsBefore = lock ? new Set(fs.readdirSync(opts.bpffsRoot)) : null;
  let wrote = false;
  if (pinsBefore) undo.push(() => (wrote ? undefined : removeNewPins(opts.bpffsRoot, pinsBefore, !rootExisted)));
  // BPF objects load on a worker thread (the kernel creating maps and
  // verifying programs) while the node's addresses and the manifests are read.
  const loading = opts.mode === 'iptables' || opts.mode === 'nftables' ? null : startLoading(opts);
  // Whatever the load gives is closed again if the start fails (chooseMode's caller adds the datapath's own close).
  const settleLoading = async (): Promise<void> =>
    void (await loading?.then(
      (dp) => dp.close(),
      () => undefined,
    ));
  // Node IPs: at once for devices that are up, else `ip addr` runs as a child process while the sources are read.
  const resolvingIPs = resolveNodeIPs(opts);
  resolvingIPs.catch(() => undefined); // read below, after the sources

  const store = new ClusterStore((origin, errors) => {
    for (const e of errors) {
      log.error('invalid object; keeping its last good version', { file: origin, object: `${e.kind} ${e.object}`, field: e.field, error: e.message });
    }
  });
  if (opts.nodePortRange) {
    log.warn('--service-node-port-range has no effect: every nodePort the API server accepted is programmed', { serviceNodePortRange: opts.nodePortRange });
  }
  // Changes that arrive before the runner exists only mark services dirty:
  // the first sync takes them all.
  const runnerRef: { runner?: Runner } = {};
  const onChange = (): void => runnerRef.runner?.request();
  let source: Source;
  let loadSettled = false;
  undo.push(() => (loadSettled ? undefined : settleLoading()));
  if (opts.source.kind === 'file') {
    source = new FileSource({ dir: opts.source.dir, store, onChange, log });
  } else {
    // @kubernetes/client-node takes half a second to load: only when it is used.
    const { KubeSource } = await import('../source/kube');
    source = new KubeSource({ store, onChange, log, nodeName: opts.nodeName, kubeconfig: opts.kubeconfig });
  }
  undo.push(() => source.stop());
  await source.start();
  log.info('sources synced', { services: store.services.size, slices: store.slices.size, atMs: sinceStart() });
  const nodeIPs = await resolvingIPs;

  const { dp, mode } = await chooseMode(opts, log, loading);
  loadSettled = true;
  if (dp) undo.push(() => dp.close());
  // NodePorts on 127.0.0.1 in iptables and nftables mode are a nat output rule, which needs route_localnet (as kube-proxy sets it).
  if (mode !== 'bpf' && opts.localhostNodePorts) fs.writeFileSync('/proc/sys/net/ipv4/conf/all/route_localnet', '1');
  // BPF mode's loopback path (weir_tc_host) hands replies to loopback ingress with a local or 127/8
  // source: lo alone is told to accept them. Packets from any other device are checked as before.
  if (mode === 'bpf' && opts.cgroupRoot) {
    const changed = enableLoopbackPath();
    if (changed.length) log.info('loopback path: set on lo', { sysctls: changed.map((k) => `${k}=1`).join(',') });
  }
  // The local-traffic detector; NodeCIDR's follows the Node (applyNode).
  let detector: LocalDetector = localDetector(opts);
  log.info('local traffic detector', { detectLocalMode: opts.detectLocalMode, pods: describeDetector(detector) });
  const conntrack = {
    tcpEstablished: opts.conntrackTcpEstablishedSec ?? CONNTRACK_DEFAULTS.tcpEstablished,
    tcpCloseWait: opts.conntrackTcpCloseWaitSec ?? CONNTRACK_DEFAULTS.tcpCloseWait,
    udp: opts.conntrackUdpSec ?? CONNTRACK_DEFAULTS.udp,
    udpStream: opts.conntrackUdpStreamSec ?? CONNTRACK_DEFAULTS.udpStream,
  };
  // Each family masquerades to the node's first address of that family and knows its own pod CIDRs.
  const hasCidrs = (family: 4 | 6): boolean => detector.kind === 'cidrs' && detector.cidrs.some((c) => cidrFamily(c) === family);
  // The socket hooks tell the node's sockets from pods' by this namespace's cookie.
  const hostNetns = dp && opts.cgroupRoot ? loadShim().netnsCookie() : null;
  if (dp && opts.cgroupRoot && hostNetns === null) log.warn('no network namespace cookie (kernel < 5.14): the socket hooks treat pods as node processes');
  const writeConfig = (): void => {
    dp?.writeConfig({
      hairpinAddr: opts.hairpinAddr,
      snatAddr: nodeIPs.find((ip) => ipFamily(ip) === 4) ?? '',
      masqueradeAll: opts.masqueradeAll,
      haveClusterCidrs: hasCidrs(4),
      localDevices: detector.kind === 'devices',
      conntrack,
      hostNetns: hostNetns ?? undefined,
      socketLbHostnsOnly: opts.socketLbHostnsOnly,
    });
    dp?.writeConfig6({
      hairpinAddr: opts.hairpinAddr6,
      snatAddr: nodeIPs.find((ip) => ipFamily(ip) === 6) ?? '',
      haveClusterCidrs: hasCidrs(6),
    });
  };
  let reconciler: Dataplane;
  let iptables: IptablesDataplane | null = null;
  let nftables: NftablesDataplane | null = null;
  let mapFill: (() => readonly MapFill[]) | undefined;
  if (dp) {
    writeConfig();
    const r = new Reconciler(dp.maps, dp.writes);
    const adopted = r.adopt();
    r.setClusterCidrs(detectorCidrs(detector));
    log.info('adopted pinned state', { frontends: adopted.frontends, backends: adopted.backends });
    for (const what of adopted.repaired) log.warn('pinned state inconsistent; repaired at the first sync', { repair: what });
    reconciler = r;
    mapFill = () => r.fill();
  } else if (mode === 'nftables') {
    const { NftablesDataplane } = await import('../fallback/nftables');
    nftables = new NftablesDataplane({ ctx: { clusterCIDRs: opts.clusterCIDRs, masqueradeAll: opts.masqueradeAll, localTraffic: detector }, log });
    reconciler = nftables;
  } else {
    const { IptablesDataplane, ip6tablesAvailable } = await import('../fallback/iptables');
    const v6problem = ip6tablesAvailable();
    if (v6problem) log.warn('ip6tables not usable: IPv6 services are not served in iptables mode', { error: v6problem });
    iptables = new IptablesDataplane({ ctx: { clusterCIDRs: opts.clusterCIDRs, masqueradeAll: opts.masqueradeAll, localTraffic: iptablesLocalMatches(detector) }, log, ipv6: v6problem === null });
    reconciler = iptables;
  }
  /** NodeCIDR: the detector is the Node's pod CIDRs, as they are now. */
  const applyPodCidrs = (podCIDRs: readonly Cidr[]): void => {
    const next = localDetector(opts, podCIDRs);
    if (isDeepStrictEqual(next, detector)) return;
    detector = next;
    if (reconciler instanceof Reconciler) reconciler.setClusterCidrs(detectorCidrs(detector));
    writeConfig();
    iptables?.setLocalTraffic(iptablesLocalMatches(detector));
    nftables?.setLocalTraffic(detector);
    log.info('local traffic detector from the Node', { detectLocalMode: opts.detectLocalMode, pods: describeDetector(detector) });
  };

  // This node as the plan sees it: its IPs (NodePort frontends, masquerade
  // source) and its zone label (topology hints). Without --node-ips and
  // external-device addresses the IPs are the Node's InternalIPs; both follow
  // the Node object while the agent runs (applyNode below).
  const ipsFromNode = nodeIPs.length === 0;
  let zone = '';
  const planContext = (): PlanContext => ({ nodeName: opts.nodeName, nodePortAddrs: nodePortAddrs(nodeIPs, opts, mode), nodeIPs, zone });
  const syncer = new Syncer({ store, reconciler, log, ctx: planContext() });
  // Only an agent that serves metrics records them (see ../metrics/agent-metrics).
  const metrics = opts.metricsAddr
    ? agentMetrics({
        reconciler,
        runner: () => runnerRef.runner,
        changes: () => store.changes,
        noLocalEndpoints: () => syncer.noLocalEndpoints,
        ...(dp ? { ct: dp.maps.ct, verdicts: dp.maps.verdicts, mapFill } : {}),
      })
    : null;
  const proxyHealthy = (): boolean => {
    const since = runnerRef.runner?.pendingSince ?? 0;
    return since === 0 || Date.now() - since < HEALTH_TIMEOUT_MS;
  };
  const hcNodePorts = new HealthCheckNodePorts({ log, proxyHealthy });
  let synced = false;
  // BPF mode compares the maps with the desired state every --sync-period
  // (kube-proxy's syncPeriod) and repairs what differs (./drift.ts).
  // nftables mode lists table inet weir as often and rewrites it when it differs;
  // iptables mode reads its marker chains and hooks, and rewrites a family that lost any.
  const repaired = metrics ? { repaired: metrics.driftRepairs } : {};
  const requestSync = (): void => runnerRef.runner?.request();
  const drift =
    reconciler instanceof Reconciler
      ? new DriftCheck({ reconciler, log, ...repaired, requestSync })
      : nftables
        ? new NftDriftCheck({
            table: nftables,
            log,
            ...repaired,
            requestSync,
            format: (await import('../fallback/nft-drift')).formatDrift,
            periodMs: opts.syncPeriodMs,
            holdSyncs: (until) => runnerRef.runner?.hold(until),
          })
        : iptables
          ? new IptablesRulesCheck({ rules: iptables, log, ...repaired, requestSync })
          : null;
  let nodesVersion = -1;
  /** Take this node's IPs and zone from its Node object when it changed; re-plan everything when they did. */
  const applyNode = (): void => {
    if (store.nodesVersion === nodesVersion) return;
    nodesVersion = store.nodesVersion;
    const node = store.nodes.get(opts.nodeName);
    if (!node) return; // gone or never listed: keep what we have (a deleted node keeps serving until it is gone)
    if (opts.detectLocalMode === 'NodeCIDR') applyPodCidrs(node.podCIDRs);
    const ips = ipsFromNode && node.internalIPs.length > 0 && node.internalIPs.join() !== nodeIPs.join() ? node.internalIPs : null;
    if (ips === null && node.zone === zone) return;
    if (ips) nodeIPs.splice(0, nodeIPs.length, ...ips);
    const first = !synced;
    zone = node.zone;
    syncer.setContext(planContext());
    if (ips) writeConfig();
    log.info(first ? 'node from the Node object' : 'node changed; re-planning every service', {
      node: opts.nodeName,
      zone: zone || '(none)',
      ...(ipsFromNode ? { nodeIPs: nodeIPs.join(',') } : {}),
    });
  };
  // A sync that removed backends may leave node processes' connected UDP
  // sockets pointed at one (the socket hooks chose it at connect()): they
  // are destroyed, so their owners connect again, as kube-proxy clears such
  // conntrack entries. Reading every socket record is a walk of up to 64k
  // entries, so the syncs that deleted something within a second share one.
  let sockTermWarned = false;
  let sockTermTimer: NodeJS.Timeout | null = null;
  undo.push(() => void (sockTermTimer && clearTimeout(sockTermTimer)));
  const terminateStaleSockets = (): void => {
    if (!dp || !opts.cgroupRoot || sockTermTimer) return;
    sockTermTimer = setTimeout(() => {
      sockTermTimer = null;
      terminateNow();
    }, SOCKTERM_COALESCE_MS).unref();
  };
  const terminateNow = (): void => {
    if (!dp) return;
    try {
      const t = dp.terminateStaleSockets();
      if (t === null && !sockTermWarned) {
        sockTermWarned = true;
        log.warn('connected UDP sockets of node processes stay on a removed backend: destroying them needs bpf_sock_destroy (Linux 6.5+)');
      }
      if (t?.named) log.info('sockets left on removed backends', { named: t.named, destroyed: t.destroyed });
    } catch (e) {
      log.warn('could not destroy sockets left on removed backends', { error: errorText(e) });
    }
  };
  const sync = (): boolean | Promise<boolean> => {
    // Nothing is written before every source has delivered its first full view.
    if (!synced) return true;
    applyNode();
    // The fallbacks write in child processes the event loop does not wait on; BPF mode writes from here.
    if (iptables || nftables) return syncer.syncAsync().then(committed);
    let r: SyncResult;
    try {
      r = syncer.sync();
    } catch (e) {
      if (e instanceof MapFullError) {
        // The service and membership maps are sized at load; the others are fixed in bpf/shared/weir.h.
        const sized = e.maps.some((m) => m.map === MAP_NAMES.svc || m.map === MAP_NAMES.member);
        log.error('a BPF map is full: what does not fit is not programmed until it has room', {
          maps: e.maps.map((m) => `${m.map} ${m.wanted}/${m.max}`).join(','),
          ...(sized ? { hint: `--lb-map-entries sizes ${MAP_NAMES.svc} and ${MAP_NAMES.member} (now ${dp?.sizes.svc}); a pinned map keeps its size until \`weir cleanup\`` } : {}),
        });
      }
      throw e;
    }
    return committed(r);
  };
  /** After a commit: metrics, the log line, health-check node ports, sockets left on removed backends, the drift check's report. */
  const committed = (r: SyncResult): boolean => {
    metrics?.syncDuration.observe(r.ms / 1000);
    if (metrics) for (const ms of r.programmingMs) metrics.programming.observe(ms / 1000);
    if (metrics) for (const ms of r.triggerLatenciesMs) metrics.triggerLatency.observe(ms / 1000);
    if (r.upserts || r.deletes || r.services) {
      const programmingMs = r.programmingMs.length ? Math.max(...r.programmingMs) : 0;
      log.info('synced', { services: r.services, upserts: r.upserts, deletes: r.deletes, ms: Math.round(r.ms * 100) / 100, programmingMs });
    }
    hcNodePorts.update(healthCheckTargets(store, opts.nodeName));
    if (r.deletes) terminateStaleSockets();
    drift?.afterSync();
    return r.failed.length === 0;
  };
  const runner = new Runner({ minSyncPeriodMs: opts.minSyncPeriodMs, sync, log });
  runnerRef.runner = runner;
  undo.push(() => runner.stop());
  const verifyTimer = drift && opts.syncPeriodMs > 0 ? setInterval(() => drift.scan(), opts.syncPeriodMs).unref() : null;
  undo.push(() => void (verifyTimer && clearInterval(verifyTimer)));
  undo.push(() => hcNodePorts.close());

  // No --node-ips and no external device addresses: the Node object knows.
  applyNode();
  if (nodeIPs.length === 0) log.warn('no node IP known: NodePorts are not served and nothing can be masqueraded', { hint: '--node-ips, --external-devices or a Node with InternalIPs' });
  synced = true;
  // From the first sync on, the maps may hold this agent's writes: a failed
  // start leaves them programmed, as a stopped agent does, for the next one.
  wrote = true;
  runner.syncNow();
  // "ready" means programmed: after the first sync that succeeded (a failed
  // one is retried with backoff; health and metrics are up meanwhile).
  void runner.synced.then(() => {
    // Once the rules are in (they load nf_conntrack), as kube-proxy sets them: only the timeouts given.
    if (!dp) setTimeouts(opts, log);
    log.info('ready', { services: store.services.size, slices: store.slices.size, nodeIPs: nodeIPs.join(','), atMs: sinceStart() });
  });

  const devices = dp ? attachDevices(dp, opts, log, detector) : null;
  devices?.start();
  if (devices) undo.push(() => devices.stop());
  if (dp && opts.cgroupRoot) {
    dp.attachCgroup(opts.cgroupRoot);
    log.info('socket hooks attached', { cgroup: opts.cgroupRoot });
  } else if (dp) {
    log.warn('no --cgroup-root: node processes and hostNetwork pods reach services only through pod-facing devices');
  }
  // One line that says what this start attached to (devices that appear later get their own "attached" line).
  if (devices) {
    const byRole = devices.byRole();
    const { msg, fields } = attachedSummary({
      ext: byRole.get('ext') ?? [],
      pod: byRole.get('pod') ?? [],
      host: byRole.get('host') ?? [],
      cgroup: opts.cgroupRoot || null,
      podGlobs: opts.podDevices,
      defaultPodGlobs: opts.podDevices.join(',') === RUN_FLAGS.podDevices.default,
      rootNetns: rootNetns(),
    });
    log.info(msg, fields);
  }
  if (mode !== 'nftables') {
    // The table an nftables-mode agent left behind goes once this mode serves (after "ready", as below).
    setImmediate(() => {
      void import('../fallback/nftables')
        .then(({ cleanupNftables }) => cleanupNftables())
        .then(
          (removed) => void (removed && log.info('removed nftables-mode table', { table: 'inet weir' })),
          (e: unknown) => log.error('could not remove the nftables-mode table; `weir cleanup` removes it', { error: errorText(e) }),
        );
    });
  }
  if (dp || mode === 'nftables') {
    // Rules an iptables-mode agent left behind keep serving until the
    // programs above take over, so they go only now, and after "ready":
    // reading them is a child process, whose fork stalls a large agent.
    setImmediate(() => {
      void import('../fallback/iptables')
        .then(({ cleanupIptables }) => cleanupIptables())
        .then(
          (removed) => void (removed.length && log.info('removed iptables-mode rules', { chains: removed.length })),
          (e: unknown) => log.error('could not remove iptables-mode rules; `weir cleanup` removes them', { error: errorText(e) }),
        );
    });
  }
  // One turn of the event loop first: "ready" (above, on the first sync's
  // success) is reported when the dataplane is programmed, not after the
  // servers below have loaded node:http.
  await new Promise<void>((resolve) => setImmediate(resolve));
  let health: HealthServer | null = null;
  if (opts.healthAddr) {
    const { host, port } = parseHostPort('health-addr', opts.healthAddr);
    health = await startHealthServer({
      host,
      port,
      timeoutMs: HEALTH_TIMEOUT_MS,
      state: { pendingSince: () => runner.pendingSince, lastSuccessAt: () => runner.lastSuccessAt, nodeEligible: () => store.nodeEligible(opts.nodeName) },
      ...(metrics ? { answered: metrics.answered } : {}),
    });
    const h = health;
    undo.push(() => h.close());
    log.info('health server listening', { addr: `${host}:${health.port}` });
  }

  let metricsServer: { port: number; close(): Promise<void> } | null = null;
  if (opts.metricsAddr && metrics) {
    const { host, port } = parseHostPort('metrics-addr', opts.metricsAddr);
    metricsServer = await startMetricsServer({ host, port, registry: metrics.registry() });
    const m = metricsServer;
    undo.push(() => m.close());
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
    if (verifyTimer) clearInterval(verifyTimer);
    devices?.stop();
    // A write in a child process (the fallbacks) runs to its end: a next
    // agent, free to start once the lock is released, would write beside it.
    // (Its end updates the health-check node ports: they close after it.)
    if (runner.busy) {
      log.info('stopping once the sync in progress has written');
      await runner.settled();
    }
    hcNodePorts.close();
    await health?.close();
    await metricsServer?.close();
    // The dataplane stays programmed: filters, links and pinned maps outlive
    // us, so traffic keeps flowing until the next agent adopts them.
    dp?.close();
    lock?.release();
    log.info('stopped; dataplane left programmed');
    resolveDone();
    return done;
  };
  return { done, stop };
}

function waiting(log: Logger, root: string, pid: number | null): void {
  log.warn('another weir agent holds the pin root; waiting for it to exit', { pinRoot: root, pid: pid ?? 'not visible from this pid namespace' });
}

/**
 * The pin root's lock, once no other agent holds it. iptables mode takes it
 * too where there is a pin root (it removes BPF mode's pins, and two
 * iptables writers fight over the chains), but a node without bpffs still
 * runs iptables mode, unlocked.
 */
async function lockIfPossible(opts: RunOptions, log: Logger): Promise<PinRootLock | null> {
  try {
    ensureBpffs(opts.bpffsRoot);
  } catch (e) {
    if (opts.mode !== 'iptables' && opts.mode !== 'nftables') throw e;
    log.warn('no pin root to lock: nothing keeps a second agent from running here', { pinRoot: opts.bpffsRoot, error: errorText(e) });
    return null;
  }
  return lockPinRoot(loadShim(), opts.bpffsRoot, { onWait: (pid) => waiting(log, opts.bpffsRoot, pid) });
}

/** Remove what a failed start pinned under root: entries that were not there before it, and root itself if it made it. */
function removeNewPins(root: string, before: ReadonlySet<string>, rootToo: boolean): void {
  if (!fs.existsSync(root)) return;
  for (const name of fs.readdirSync(root)) if (!before.has(name)) fs.rmSync(`${root}/${name}`, { recursive: true, force: true });
  if (rootToo) fs.rmdirSync(root);
}

/** Start loading the BPF objects (settles to the datapath or the reason it cannot load). */
function startLoading(opts: RunOptions): Promise<BpfDatapath> {
  let loading: Promise<BpfDatapath>;
  try {
    const shim = loadShim();
    shim.setLogLevel(1);
    loading = BpfDatapath.loadAsync(shim, opts.bpffsRoot, { ...DEFAULT_SIZES, ct: conntrackEntries(opts), svc: opts.lbMapEntries, member: opts.lbMapEntries });
  } catch (e) {
    loading = Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
  // A failure is read when the mode is chosen (auto falls back), which may be
  // after it happened: mark it handled so it is not an unhandled rejection.
  loading.catch(() => undefined);
  return loading;
}

/**
 * --mode: bpf, nftables, iptables, or auto (BPF when the kernel and
 * privileges allow loading the programs, else nftables when nft can change
 * this network namespace's rules, else iptables; the log says which and
 * why). The mode that runs removes the other modes' state.
 */
async function chooseMode(opts: RunOptions, log: Logger, loading: Promise<BpfDatapath> | null): Promise<{ dp: BpfDatapath | null; mode: DataplaneMode }> {
  let why = 'requested';
  if (loading) {
    try {
      const dp = await loading;
      log.info('starting', {
        node: opts.nodeName,
        mode: 'bpf',
        reason: opts.mode === 'auto' ? 'auto: BPF programs load on this kernel' : 'requested',
        pinRoot: opts.bpffsRoot,
        ffi: loadShim().backend,
        conntrackEntries: dp.sizes.ct,
        lbMapEntries: dp.sizes.svc,
        loadedAtMs: dp.loadedAtMs,
      });
      if (dp.sizes.ct !== conntrackEntries(opts)) {
        log.warn('the pinned conntrack map keeps its size; `weir cleanup` and a restart resize it (established connections are then reset)', {
          entries: dp.sizes.ct,
          requested: conntrackEntries(opts),
        });
      }
      if (dp.sizes.svc !== opts.lbMapEntries || dp.sizes.member !== opts.lbMapEntries) {
        log.warn('the pinned service maps keep their size; `weir cleanup` and a restart resize them', { entries: dp.sizes.svc, requested: opts.lbMapEntries });
      }
      return { dp, mode: 'bpf' };
    } catch (e) {
      if (opts.mode === 'bpf') throw e;
      why = `auto: BPF unavailable (${errorText(e).split('\n')[0]})`;
    }
  }
  let mode: DataplaneMode = 'iptables';
  if (opts.mode === 'nftables' || opts.mode === 'auto') {
    const { nftablesAvailable } = await import('../fallback/nftables');
    const problem = nftablesAvailable();
    if (problem === null) {
      mode = 'nftables';
      if (opts.mode === 'auto') why += '; nft works in this network namespace';
    } else if (opts.mode === 'nftables') throw new Error(`nftables mode: ${problem}`);
    else why += `; nftables unavailable (${problem.split('\n')[0]})`;
  }
  if (mode === 'iptables') {
    const { iptablesAvailable } = await import('../fallback/iptables');
    const problem = iptablesAvailable();
    if (problem) throw new Error(`iptables mode: ${problem}`);
  }
  log.info('starting', { node: opts.nodeName, mode, reason: why });
  try {
    // The pin root stays: this agent's lock is on it.
    const res = await cleanupBpf(loadShim(), opts.bpffsRoot, { keepRoot: true });
    if (res.detached.length || res.pinsRemoved) log.info('removed BPF-mode state', { filters: res.detached.length, pins: opts.bpffsRoot });
  } catch (e) {
    log.warn('could not remove BPF-mode state', { error: errorText(e) });
  }
  return { dp: null, mode };
}

type DataplaneMode = 'bpf' | 'nftables' | 'iptables';

/** How long the syncs that deleted map entries are gathered before stale sockets are looked for once. */
const SOCKTERM_COALESCE_MS = 1000;

/** iptables mode: the netfilter conntrack sysctls of the timeouts given. A failure is logged: the rules still serve. */
function setTimeouts(opts: RunOptions, log: Logger): void {
  void import('../fallback/conntrack').then(({ setConntrackTimeouts }) => {
    try {
      const set = setConntrackTimeouts(opts);
      if (set.length) log.info('conntrack timeouts set', { sysctls: set.join(',') });
    } catch (e) {
      log.error('could not set conntrack timeouts', { error: errorText(e) });
    }
  });
}

/**
 * Attach the programs as devices appear. With a device detector
 * (InterfaceNamePrefix, BridgeInterface) its devices are pod devices too, and
 * each pod device's entry in the localdev map says whether it matches.
 */
function attachDevices(dp: BpfDatapath, opts: RunOptions, log: Logger, detector: LocalDetector): DeviceWatcher<DeviceRole> {
  const shim = loadShim();
  const byDevice = detector.kind === 'devices';
  return new DeviceWatcher<DeviceRole>({
    list: () => shim.links(),
    // External first: a device named in --external-devices is never a pod device.
    roles: [
      // lo carries node processes' traffic that the socket hooks leave to the packet path (bound to 127/8 or to the service address).
      ['host', opts.cgroupRoot ? ['lo'] : []],
      ['ext', opts.externalDevices],
      ['pod', [...opts.podDevices, ...detectorDeviceGlobs(detector)]],
    ],
    log,
    onDevice: (link, role) => {
      // Before the program: its first packet must already be told right. Every
      // device is written, so an ifindex a removed pod device had is not inherited.
      if (byDevice) dp.setLocalDevice(link.ifindex, role === 'pod' && isLocalDevice(detector, link, (i) => shim.links().find((l) => l.ifindex === i)?.name ?? null));
      dp.attach(role, link.ifindex);
      log.info('attached', { device: link.name, ifindex: link.ifindex, role });
    },
  });
}

/**
 * Where NodePorts answer: node IPs (narrowed by --nodeport-addresses), and
 * 127.0.0.1 for node processes (socket hooks in BPF mode, OUTPUT in iptables mode).
 * Never ::1: IPv6 has no route_localnet, so kube-proxy serves no NodePort there either.
 */
function nodePortAddrs(nodeIPs: readonly IP[], opts: RunOptions, mode: DataplaneMode): IP[] {
  const out = nodeIPs.filter((ip) => opts.nodePortAddresses.length === 0 || opts.nodePortAddresses.some((c) => cidrContains(c, ip)));
  if (opts.localhostNodePorts && (mode !== 'bpf' || opts.cgroupRoot)) out.push(LOCALHOST);
  return out;
}

/** --node-ips, or the addresses of the external devices (IPv4, then global IPv6; exported for its test). */
export async function resolveNodeIPs(opts: Pick<RunOptions, 'nodeIPs' | 'externalDevices'>): Promise<IP[]> {
  if (opts.nodeIPs.length) return [...opts.nodeIPs];
  if (!opts.externalDevices.length) return [];
  const up = upDeviceAddrs(opts.externalDevices);
  if (up) return up.map((a) => parseIP(a)).filter((a): a is IP => a !== null);
  try {
    const links = await listLinks();
    return links
      .filter((l) => opts.externalDevices.includes(l.name))
      .flatMap((l) => l.addrs.map((a) => parseIP(a)))
      .filter((a): a is IP => a !== null);
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
    // A dual-stack pod is an endpoint in each family's slices: count one family's (the primary's), as one kube-proxy family proxier reports them.
    const family = ipFamily(svc.clusterIPs[0]!);
    for (const slice of store.slicesOf(svc.key)) {
      if (sliceFamily(slice) !== family) continue;
      for (const ep of usableEndpoints(sliceEndpoints(slice))) if (ep.nodeName === nodeName && ep.ready) local.add(ep.addr);
    }
    out.push({ namespace: svc.namespace, name: svc.name, port: svc.healthCheckNodePort, localEndpoints: local.size });
  }
  return out;
}
