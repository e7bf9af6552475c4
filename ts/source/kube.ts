/**
 * `--source kube`: @kubernetes/client-node informers (list + watch) for v1
 * Services, discovery.k8s.io/v1 EndpointSlices and this node's v1 Node.
 *
 * What the library does and what this adds:
 *  - an expired watch (410 Gone) relists; a relist reports only what
 *    changed (deletions of objects that are gone, updates of the rest), so
 *    it never flushes traffic — the library does that;
 *  - bookmarks advance the resourceVersion — the library does that;
 *  - any other error (connection refused, 401, 403, a dropped stream that
 *    fails to re-open) stops a client-node 1.x informer for good: this
 *    source restarts it with exponential backoff, and says clearly when the
 *    API server refuses our credentials;
 *  - start() resolves only once every informer has delivered its first full
 *    list, so the agent never prunes on a partial view.
 *
 * Filters as kube-proxy: Services and EndpointSlices labelled
 * service.kubernetes.io/service-proxy-name (another proxy's) or
 * service.kubernetes.io/headless are not even listed.
 */
import * as k8s from '@kubernetes/client-node';
import type { V1EndpointSlice } from '@kubernetes/client-node';
import { ClusterStore } from '../model/store';
import { objectKey } from '../model/types';
import { Logger, errorText } from '../util/log';
import { requireKubeConfig } from './kubeconfig';
import { ChangeListener, Source } from './source';

const LABEL_SELECTOR = '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless';
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const ORIGIN = 'kube';

type Resource = 'services' | 'endpointslices' | 'node';

interface Tracked {
  readonly name: Resource;
  informer: k8s.ListWatch<k8s.KubernetesObject>;
  synced: boolean;
  failures: number;
  timer: NodeJS.Timeout | null;
}

export interface KubeSourceOptions {
  store: ClusterStore;
  onChange: ChangeListener;
  log: Logger;
  nodeName: string;
  /** kubeconfig path; empty: in-cluster config, else the default loading rules. */
  kubeconfig: string;
}

export class KubeSource implements Source {
  private readonly opts: KubeSourceOptions;
  private readonly tracked: Tracked[] = [];
  private stopped = false;
  private resolveSynced: () => void = () => undefined;

  constructor(opts: KubeSourceOptions) {
    this.opts = opts;
  }

  async start(): Promise<void> {
    const kc = new k8s.KubeConfig();
    // Never client-node's last resort, http://localhost:8080.
    requireKubeConfig(this.opts.kubeconfig);
    if (this.opts.kubeconfig) kc.loadFromFile(this.opts.kubeconfig);
    else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
    else kc.loadFromDefault();
    const server = kc.getCurrentCluster()?.server ?? '(none)';
    this.opts.log.info('kube source', { server, node: this.opts.nodeName });

    const core = kc.makeApiClient(k8s.CoreV1Api);
    const discovery = kc.makeApiClient(k8s.DiscoveryV1Api);
    const synced = new Promise<void>((r) => (this.resolveSynced = r));
    const { store } = this.opts;

    this.track('services', kc, '/api/v1/services', () => core.listServiceForAllNamespaces({ labelSelector: LABEL_SELECTOR }), LABEL_SELECTOR, undefined, {
      upsert: (o) => store.upsertService(o, ORIGIN),
      remove: (o) => store.deleteService(objectKey(o.metadata?.namespace ?? 'default', o.metadata?.name ?? '')),
    });
    this.track('endpointslices', kc, '/apis/discovery.k8s.io/v1/endpointslices', () => discovery.listEndpointSliceForAllNamespaces({ labelSelector: LABEL_SELECTOR }), LABEL_SELECTOR, undefined, {
      upsert: (o) => store.upsertSlice(o as V1EndpointSlice, ORIGIN),
      remove: (o) => store.deleteSlice(objectKey(o.metadata?.namespace ?? 'default', o.metadata?.name ?? '')),
    });
    const nodeField = `metadata.name=${this.opts.nodeName}`;
    this.track('node', kc, '/api/v1/nodes', () => core.listNode({ fieldSelector: nodeField }), undefined, nodeField, {
      upsert: (o) => store.upsertNode(o, ORIGIN),
      remove: (o) => store.deleteNode(o.metadata?.name ?? ''),
    });
    for (const t of this.tracked) this.run(t);
    await synced;
    this.opts.log.info('kube source synced', { resources: this.tracked.map((t) => t.name).join(',') });
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.tracked) {
      if (t.timer) clearTimeout(t.timer);
      void t.informer.stop();
    }
  }

  private track(
    name: Resource,
    kc: k8s.KubeConfig,
    path: string,
    list: () => Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>,
    labelSelector: string | undefined,
    fieldSelector: string | undefined,
    apply: { upsert: (o: k8s.KubernetesObject) => void; remove: (o: k8s.KubernetesObject) => void },
  ): void {
    const t: Tracked = { name, informer: null as never, synced: false, failures: 0, timer: null };
    // The informer applies a list's items synchronously right after our
    // promise resolves; by the next macrotask the first view is complete.
    const listFn = async (): Promise<k8s.KubernetesListObject<k8s.KubernetesObject>> => {
      const r = await list();
      setImmediate(() => this.listed(t));
      return r;
    };
    // ListWatch rather than makeInformer: the Node informer needs a field selector.
    t.informer = new k8s.ListWatch(path, new k8s.Watch(kc), listFn, false, labelSelector, fieldSelector);
    const changed = (fn: (o: k8s.KubernetesObject) => void) => (o: k8s.KubernetesObject) => {
      fn(o);
      if (t.synced) this.opts.onChange();
    };
    t.informer.on(k8s.ADD, changed(apply.upsert));
    t.informer.on(k8s.UPDATE, changed(apply.upsert));
    t.informer.on(k8s.DELETE, changed(apply.remove));
    t.informer.on(k8s.ERROR, (err) => this.failed(t, err));
    this.tracked.push(t);
  }

  private run(t: Tracked): void {
    if (this.stopped) return;
    t.informer.start().catch((err: unknown) => this.failed(t, err));
  }

  private listed(t: Tracked): void {
    t.failures = 0;
    const first = !t.synced;
    t.synced = true;
    if (first && this.tracked.every((x) => x.synced)) this.resolveSynced();
    else if (!first) this.opts.onChange(); // a relist may have changed anything
  }

  /** The informer stopped: explain, then start it again after a backoff. */
  private failed(t: Tracked, err: unknown): void {
    if (this.stopped || t.timer) return;
    t.failures++;
    const delay = Math.min(BACKOFF_MIN_MS * 2 ** (t.failures - 1), BACKOFF_MAX_MS);
    const code = statusCode(err);
    const fields = { resource: t.name, error: apiErrorText(err), retryInMs: delay, attempt: t.failures };
    if (code === 401) this.opts.log.error('API server rejected our credentials (401 Unauthorized); keeping the last state', fields);
    else if (code === 403) this.opts.log.error(`not allowed to list/watch ${t.name} (403 Forbidden): check the ClusterRole; keeping the last state`, fields);
    else this.opts.log.warn('watch failed; reconnecting', { ...fields, ...(code ? { status: code } : {}) });
    t.timer = setTimeout(() => {
      t.timer = null;
      this.run(t);
    }, delay);
  }
}

/** The API server's own message (a Status body) rather than the client's dump of headers. */
function apiErrorText(err: unknown): string {
  const body = (err as { body?: unknown } | null)?.body;
  if (typeof body === 'string') {
    try {
      const status = JSON.parse(body) as { message?: unknown };
      if (typeof status.message === 'string') return status.message;
    } catch {
      /* not JSON: fall through */
    }
  }
  return errorText(err).split('\n')[0]!;
}

function statusCode(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { statusCode?: unknown; code?: unknown; body?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  if (typeof e.code === 'number') return e.code;
  // ApiException from the generated clients carries the HTTP code as `code`.
  return undefined;
}
