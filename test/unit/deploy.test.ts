/**
 * The manifests in deploy/ parse, and carry what a kube-proxy replacement
 * needs to run as a DaemonSet. The ConfigMap's config is fed to the real
 * option parser, so a key weir does not know fails here, not on a node.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { parseRunOptions } from '../../ts/cli/options';
import { TEST_SRC } from './pipeline';

const DEPLOY = path.resolve(TEST_SRC, '../deploy');
/** A parsed manifest: free-form JSON, read through at(). */
type Doc = { readonly [k: string]: unknown };

/** The value at a dotted path ("spec.template.spec"), or undefined. */
function at(doc: unknown, p: string): unknown {
  return p.split('.').reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Doc)[k] : undefined), doc);
}
const list = (doc: unknown, p: string): Doc[] => (at(doc, p) as Doc[] | undefined) ?? [];
const str = (doc: unknown, p: string): string => String(at(doc, p));

function docs(file: string): Doc[] {
  return YAML.parseAllDocuments(fs.readFileSync(path.join(DEPLOY, file), 'utf8')).map((d) => {
    assert.equal(d.errors, [], `${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS() as Doc;
  });
}

const all = (): Doc[] => ['rbac.yaml', 'configmap.yaml', 'daemonset.yaml'].flatMap(docs);
const find = (kind: string): Doc => all().find((d) => d.kind === kind)!;

test('every manifest in deploy/ parses', () => {
  for (const f of fs.readdirSync(DEPLOY).filter((f) => f.endsWith('.yaml'))) docs(f);
  for (const f of fs.readdirSync(path.join(DEPLOY, 'examples'))) docs(path.join('examples', f));
});

test('DaemonSet: host network, node name, privileges, mounts, tolerations, priority, rollout, probes', () => {
  const ds = find('DaemonSet');
  const pod = at(ds, 'spec.template.spec');
  const c = list(pod, 'containers')[0]!;
  assert.is(at(pod, 'hostNetwork'), true);
  assert.is(at(pod, 'priorityClassName'), 'system-node-critical');
  assert.ok(
    list(pod, 'tolerations').some((t) => t.operator === 'Exists' && !t.key),
    'tolerates every taint',
  );
  assert.is(at(pod, 'serviceAccountName'), 'weir');
  assert.is(at(ds, 'spec.updateStrategy.type'), 'RollingUpdate');
  // A surge pod waits for the pin root's lock: the old agent goes only after the new pod runs.
  assert.equal(at(ds, 'spec.updateStrategy.rollingUpdate'), { maxSurge: 1, maxUnavailable: 0 });
  assert.is(
    at(
      list(c, 'env').find((e) => e.name === 'NODE_NAME'),
      'valueFrom.fieldRef.fieldPath',
    ),
    'spec.nodeName',
  );
  assert.is(at(c, 'securityContext.privileged'), true);
  const mount = (p: string): Doc => list(c, 'volumeMounts').find((m) => m.mountPath === p)!;
  const volume = (name: unknown): Doc => list(pod, 'volumes').find((v) => v.name === name)!;
  assert.is(mount('/sys/fs/bpf').mountPropagation, 'Bidirectional');
  assert.is(at(volume(mount('/sys/fs/bpf').name), 'hostPath.path'), '/sys/fs/bpf');
  assert.is(at(volume(mount('/sys/fs/cgroup').name), 'hostPath.path'), '/sys/fs/cgroup');
  assert.is(at(volume(mount('/run/xtables.lock').name), 'hostPath.type'), 'FileOrCreate');
  // /healthz is 503 on a draining node (for load balancers): the probes use /livez, or the agent would be restarted while it drains.
  for (const probe of ['livenessProbe', 'readinessProbe']) assert.equal(at(c, `${probe}.httpGet`), { path: '/livez', port: 10256 });
  assert.equal(at(c, 'args'), ['run', '--config', '/etc/weir/config.yaml']);
  assert.is(at(volume(mount('/etc/weir').name), 'configMap.name'), str(find('ConfigMap'), 'metadata.name'));
});

test("RBAC: read services, endpointslices and nodes; write events; bound to the DaemonSet's account", () => {
  const role = find('ClusterRole');
  const can = (group: string, resource: string, verb: string): boolean =>
    list(role, 'rules').some((r) => (r.apiGroups as string[]).includes(group) && (r.resources as string[]).includes(resource) && (r.verbs as string[]).includes(verb));
  for (const v of ['get', 'list', 'watch']) {
    assert.ok(can('', 'services', v), `services ${v}`);
    assert.ok(can('', 'nodes', v), `nodes ${v}`);
    assert.ok(can('discovery.k8s.io', 'endpointslices', v), `endpointslices ${v}`);
  }
  assert.ok(can('', 'events', 'create') && can('', 'events', 'patch'));
  const binding = find('ClusterRoleBinding');
  assert.is(at(binding, 'roleRef.name'), at(role, 'metadata.name'));
  const sa = find('ServiceAccount');
  assert.equal(list(binding, 'subjects')[0], { kind: 'ServiceAccount', name: at(sa, 'metadata.name'), namespace: at(sa, 'metadata.namespace') });
});

test('ConfigMap: weir accepts its config as is', () => {
  const cm = find('ConfigMap');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-cm-'));
  try {
    fs.writeFileSync(path.join(dir, 'config.yaml'), String((at(cm, 'data') as Doc)['config.yaml']));
    const o = parseRunOptions(['--config', path.join(dir, 'config.yaml'), '--node-name', 'n1']);
    assert.equal(o.source, { kind: 'kube' });
    assert.is(o.cgroupRoot, '/sys/fs/cgroup');
    assert.is(o.healthAddr, '0.0.0.0:10256');
    assert.is(o.lbMapEntries, 262144);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

test('kustomization lists every manifest; the Dockerfile builds bpf, native and TypeScript in one stage', () => {
  const k = docs('kustomization.yaml')[0]!;
  assert.equal([...(at(k, 'resources') as string[])].sort(), ['configmap.yaml', 'daemonset.yaml', 'rbac.yaml']);
  const df = fs.readFileSync(path.join(DEPLOY, 'Dockerfile'), 'utf8');
  assert.match(df, /FROM node:20-bookworm AS build[\s\S]*make SKIP_SYSTEM_DEPS=1 bpf native ts/);
  assert.match(df, /FROM node:20-bookworm-slim[\s\S]*libbpf1[\s\S]*bpftool/);
});

test.run();
